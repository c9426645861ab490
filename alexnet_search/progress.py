"""Progress lines for long work: trial k of n, per-epoch metrics, elapsed and time left.

The estimate of time left is (epochs still to run) x (mean seconds per epoch seen so far in this
process). Trials differ in width, so it is an estimate; it settles after a few trials.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

import keras

from .plan import format_duration

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

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def begin(self, label: str, first_epoch: int, last_epoch: int, details: str = "") -> None:
        """A trial or run starts; it trains epochs first_epoch+1 .. last_epoch."""
        self.label = label
        self.epochs = (first_epoch, last_epoch)
        self.print(f"--- {label}" + (f" {details}" if details else ""))

    def epoch_end(self, epoch: int, logs: dict[str, Any], seconds: float) -> None:
        self.epoch_seconds.append(seconds)
        first, last = self.epochs
        line = (f"    [{self.label}] epoch {epoch + 1}/{last}  {format_metrics(logs or {})}  "
                f"{seconds:.1f}s  | elapsed {format_duration(self.clock() - self.start)}")
        if self.total_epochs is not None:  # None: the total is not this process's to know
            remaining = self.total_epochs - self.epochs_done - (epoch + 1 - first)
            mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
            line += f", ~{format_duration(max(0, remaining) * mean)} left"
        self.print(line)

    def end(self, epochs_spent: int, summary: str) -> None:
        self.epochs_done += epochs_spent
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
