"""Progress lines for long work: trial k of n, per-epoch metrics, elapsed and time left, and the
search's per-trial lines (`TrialReporter`).

The estimate of time left is (epochs still to run) x (median seconds per epoch seen so far in this
process). Trials differ in width, so it is an estimate; it settles after a few trials. A median,
not a mean: one epoch stretched by a suspended process (Ctrl-Z, a laptop's sleep, a SIGSTOP) would
otherwise inflate every later estimate, by hours for a long pause.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable, TextIO

import keras

from . import backend
from .console import format_duration, short
from .trials import best_epoch, failure_reason, model_epochs, searched_values, trial_epochs

_METRICS = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"), ("val_accuracy", "val_acc"))


def format_metrics(logs: dict[str, Any]) -> str:
    return " ".join(f"{short} {logs[key]:.4f}" for key, short in _METRICS if key in logs)


class Progress:
    """Prints progress for a run of `total_epochs` epochs in `total_units` trials or runs.

    One instance per process, shared by every trial's epoch callback.
    """

    def __init__(self, total_units: int, total_epochs: int | None, out: TextIO = sys.stdout,
                 clock: Callable[[], float] = time.monotonic):
        self.total_units = total_units
        self.total_epochs = total_epochs
        self.out = out
        self.clock = clock
        self.start = clock()
        self.epochs_done = 0  # epochs of finished units, including those of earlier runs
        self.epoch_seconds: list[float] = []
        self.label = ""
        self.epochs = (0, 0)
        self._compiled_before: dict = {}

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def begin(self, label: str, first_epoch: int, last_epoch: int, details: str = "") -> None:
        """A trial or run starts; it trains epochs first_epoch+1 .. last_epoch."""
        self.label = label
        self.epochs = (first_epoch, last_epoch)
        # Asked here, not in __init__: Keras has been started by now (backend.start).
        if compiles := backend.compiles():
            self._compiled_before = compiles.snapshot()
        self.print(f"--- {label}" + (f" {details}" if details else ""))

    def epoch_end(self, epoch: int, logs: dict[str, Any], seconds: float) -> None:
        self.epoch_seconds.append(seconds)
        first, last = self.epochs
        line = (f"    [{self.label}] epoch {epoch + 1}/{last}  {format_metrics(logs or {})}  "
                f"{seconds:.1f}s  | elapsed {format_duration(self.clock() - self.start)}")
        if self.total_epochs is not None:  # None: the total is not this process's to know
            remaining = self.total_epochs - self.epochs_done - (epoch + 1 - first)
            typical = statistics.median(self.epoch_seconds)
            line += f", ~{format_duration(max(0, remaining) * typical)} left"
        self.print(line)

    def end(self, epochs_spent: int, summary: str) -> None:
        """The unit ended: its line, and on JAX what XLA compiled for it (a trial, a finalist's or a
        retrain's seed), so that a warm persistent cache shows."""
        self.epochs_done += epochs_spent
        if (compiles := backend.compiles()) and self._compiled_before:
            summary += f"; {backend.Compiles.describe(compiles.since(self._compiled_before))}"
        self.print(f"    {self.label} done: {summary}")


class EpochReporter(keras.callbacks.Callback):
    """Forwards epoch ends to a shared Progress.

    Keras Tuner deep-copies search callbacks for every trial; copies share the same Progress.
    """

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress
        self._t0 = 0.0

    def __deepcopy__(self, memo):
        return EpochReporter(self.progress)

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self.progress.clock()

    def on_epoch_end(self, epoch, logs=None):
        self.progress.epoch_end(epoch, logs or {}, self.progress.clock() - self._t0)


class TrialReporter:
    """The search's trial lines, on one shared `Progress`: a trial starts (which configuration,
    which bracket), a trial ends (its score, the best so far), and, on a distributed study's
    chief, each trial any worker ends with the whole study's counts and time left."""

    def __init__(self, progress: Progress, max_epochs: int):
        self.progress, self.max_epochs = progress, max_epochs

    def begin(self, trial) -> None:
        hp = trial.hyperparameters.values
        parent = hp.get("tuner/trial_id")
        shown = " ".join(f"{k}={short(v)}" for k, v in searched_values(hp).items())
        where = f"bracket {hp['tuner/bracket']} round {hp.get('tuner/round')}; " if "tuner/bracket" in hp else ""
        self.progress.begin(
            f"trial {int(trial.trial_id) + 1}/{self.progress.total_units}",
            hp.get("tuner/initial_epoch", 0), model_epochs(hp, self.max_epochs),
            f"(id {trial.trial_id}; {where}{'continues trial ' + parent if parent else 'new configuration'})"
            f"\n    {shown}",
        )

    def end(self, trial, leader, objective: str, trial_dir: str) -> None:
        """`trial` ended (Keras Tuner's record of it); `leader`: the best completed trial, or None."""
        hp = trial.hyperparameters.values
        if trial.status == "COMPLETED":
            result = f"best {objective} {trial.score:.4f} at epoch {best_epoch(trial.best_step, hp)}"
        else:
            result = f"{trial.status.lower()}: {failure_reason(trial.message)}"
            if "FailedTrialError" not in (trial.message or ""):
                result += f" (traceback in {trial_dir}/trial.json)"
        lead = f"best so far {leader.score:.4f} (trial {leader.trial_id})" if leader else "none completed yet"
        self.progress.end(trial_epochs(hp, self.max_epochs), f"{result}; {lead}")

    def study_line(self, trial, runner: str, summary: dict, epochs_at_start: int, elapsed: float) -> None:
        """The chief's line for a trial a worker ended; `summary` is search_summary.json's counts."""
        spent = summary["epochs_spent"] - epochs_at_start
        left = (summary["epochs_scheduled"] - summary["epochs_spent"]) * elapsed / spent if spent else None
        result = f"{trial.score:.4f}" if trial.status == "COMPLETED" else failure_reason(trial.message)
        self.progress.print(
            f"trial {trial.trial_id} {trial.status.lower()} ({runner}): {result} | "
            f"{summary['trials_completed'] + summary['trials_failed']}/{summary['trials_scheduled']} trials, "
            f"{summary['epochs_spent']}/{summary['epochs_scheduled']} epochs, elapsed {format_duration(elapsed)}"
            + (f", ~{format_duration(left)} left" if left is not None else "")
        )
