"""The Hyperband search: Keras Tuner's own tuner, with progress lines and crash-safe state files.

Resuming is Keras Tuner's `overwrite=False`: running the same command again reloads
`tuner/oracle.json` and the trial records, skips finished trials and re-runs the one that was
interrupted. Its state files are written atomically here, so a crash mid-write cannot corrupt them.
A trial whose loss goes non-finite or diverges, or that runs out of memory, fails with a one-line
reason and the search goes on. In a distributed study (`distribute`) the same code runs as the
chief, which serves the oracle, or as a worker, which trains what the chief hands it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from typing import TextIO

import keras
import keras_tuner
from keras_tuner.src.engine import tuner_utils

from . import backend, distribute, locks
from .config import Config
from .console import format_duration, printer, short
from .data import Source
from .errors import DiskFull, UserError, disk_full, disk_full_message
from .files import SpaceReserve, fsync_tree, read_json, write_json_atomic
from .hypermodel import AlexNetHyperModel
from .model import drop_backend_caches
from .oracle import make_oracle
from .plan import estimate_seconds, time_training_steps
from .progress import EpochReporter, Progress, TrialReporter
from .runlog import RunLog
from .schedule import finalist_epochs, search_schedule
from .study import Study, prepare_search
from .tboard import TensorBoardLogger, write_experiment
from .training import Training
from .trials import ENDED, FAILED, failure_reason, model_epochs, rank_key, searched_values, trial_epochs


_TRIAL_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class _TrialGuard(keras.callbacks.Callback):
    """Stops a trial whose training loss is no longer finite, or has diverged, and says why.

    Checked per epoch (a per-batch check would force a device sync every step). With Keras'
    probability clipping the cross-entropy of 10 classes tops out near 16; a model at chance
    scores ln 10 = 2.3, so an epoch mean above 3 x ln 10 means confidently wrong: diverged.
    One instance serves every trial (Keras Tuner deep-copies search callbacks per trial).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.limit = 3 * math.log(num_classes)
        self.reason: str | None = None

    def __deepcopy__(self, memo):
        return self

    def on_train_begin(self, logs=None):
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (not math.isfinite(loss) or loss > self.limit):
            kind = "became non-finite" if not math.isfinite(loss) else f"diverged (above {self.limit:.1f})"
            self.reason = f"training loss {kind}: {loss:.4g} at epoch {epoch + 1}"
            self.model.stop_training = True


class _Heartbeat(keras.callbacks.Callback):
    """A worker's word to its chief while it trains a trial (`StudyOracle.expire_leases`).

    Sent every `interval` s from a thread, so a long epoch or compile does not silence it and a
    call blocked by a partition holds up nothing else; but only when a batch ended since the last
    (the first beat aside: the first batch compiles), so a worker hung mid-trial loses its lease
    as a dead one does. When the chief answers that the trial has ended (its lease had expired and
    another worker finished it first), the trial stops at its next batch rather than go on writing
    over the recorded run's checkpoint. A no-op where it was never started (one process, a chief).
    One instance serves every trial (Keras Tuner deep-copies search callbacks per trial).
    """

    def __init__(self):
        super().__init__()
        self.batches, self.superseded, self._stop = 0, False, None

    def __deepcopy__(self, memo):
        return self

    def start(self, oracle, trial_id: str, interval: float) -> None:
        self.stop()
        self.batches, self.superseded = 0, False
        stop = self._stop = threading.Event()

        def beat():
            said = -1
            while not stop.wait(interval):
                if self.batches == said:
                    continue  # no progress since the last beat: say nothing
                said = self.batches
                try:
                    self.superseded = oracle.get_trial(trial_id).status in ENDED
                except Exception:  # the chief is gone or unreachable: the trial's own calls will say so
                    pass

        threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}").start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.superseded = False

    def on_train_batch_end(self, batch, logs=None):
        self._step()

    def on_test_batch_end(self, batch, logs=None):
        self._step()

    def _step(self) -> None:
        self.batches += 1
        if self.superseded:
            raise keras_tuner.errors.FailedTrialError(
                "another worker finished this trial first (this worker's lease on it had expired); stopped")


class _BestEpochAtEnd(tuner_utils.SaveBestEpoch):
    """Keras Tuner's checkpoint of a trial's best epoch, written once when training ends.

    Keras Tuner writes it at every epoch that improves the objective: at paper.toml's size a 99 MB
    h5 file, 0.2-0.4 s a write on 2 cores against 0.05-0.13 s to copy the weights to memory. Only
    the best epoch's is ever read (by a promoted trial, by the study's best model), and a trial cut
    off mid-way runs again from its start, so a copy in memory is all the epochs between need. The
    last epoch, when it is the best, is written straight from the model: a 1-epoch trial costs
    what it did.
    """

    def on_train_begin(self, logs=None):
        self._best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if self.objective.has_value(logs):
            current = self.objective.get_value(logs)
            if not self.objective.better_than(current, self.best_value):
                return
            self.best_value = current
        # Keras Tuner keeps every epoch when fit does not report the objective: so do we.
        if epoch + 1 == self.params.get("epochs"):
            self._best_weights = None
            self._save_model()
        else:
            self._best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        # Also when the NaN guard stopped training early; after the last callback (Keras Tuner
        # appends this one last), and the model is discarded after fit, so it keeps these weights.
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            self._best_weights = None
            self._save_model()


@contextlib.contextmanager
def _checkpoint_at_end():
    """Keras Tuner's `Tuner.run_trial` makes its `tuner_utils.SaveBestEpoch` by that name: for the
    call, the name is `_BestEpochAtEnd` (rather than a copy of Keras Tuner's run_trial here)."""
    made = tuner_utils.SaveBestEpoch
    tuner_utils.SaveBestEpoch = _BestEpochAtEnd
    try:
        yield
    finally:
        tuner_utils.SaveBestEpoch = made


class _CtrlC(keras.callbacks.Callback):
    """Ctrl-C, or SIGTERM (`kill`, `timeout`, a batch scheduler's preemption), raised where nothing
    swallows it, so the running trial is recorded as interrupted, not as a process that died.

    Python raises KeyboardInterrupt wherever the main thread is; inside TensorFlow that can be a
    finalizer, which ignores it, and the search then runs on. The first signal only sets a flag
    that the next batch, epoch or trial start turns into KeyboardInterrupt; a second one raises
    at once. Deep-copied per trial by Keras Tuner, so the flag lives on the class.
    """

    requested = False
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    @classmethod
    def install(cls) -> dict:
        """Route SIGINT and SIGTERM here; returns the handlers to put back."""
        cls.requested = False

        def handler(signum, frame):
            cls.requested = True
            signal.signal(signum, signal.default_int_handler)  # a second one: at once

        return {sig: signal.signal(sig, handler) for sig in cls.SIGNALS}

    @classmethod
    def check(cls):
        if cls.requested:
            cls.requested = False
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()


class StudyTuner(keras_tuner.Hyperband):
    """What every trial of a study gets, whichever oracle hands it out: a seed, a TensorBoard run
    with its HParams session, the NaN/divergence/OOM guard, a crash record (`RunLog`) and its
    progress lines. `AlexNetTuner` runs the search's trials, `confirm.FinalistTuner` the finalists'.

    It derives from `keras_tuner.Hyperband` for Hyperband's trials: its `run_trial` and weight
    loading act only on trials that carry `tuner/epochs` and `tuner/trial_id`, so a trial of any
    other oracle runs as Keras Tuner's plain `Tuner` runs it. `Hyperband.__init__` only builds its
    own oracle, so the subclasses pass theirs to `keras_tuner.Tuner.__init__` directly.
    """

    def __init__(self, hypermodel: AlexNetHyperModel, oracle, study: Study, project: str, lease_s: float,
                 overwrite: bool = False, distribution_strategy=None):
        keras_tuner.Tuner.__init__(
            self, oracle=oracle, hypermodel=hypermodel, directory=str(study.root),
            project_name=project, overwrite=overwrite, distribution_strategy=distribution_strategy,
        )
        self.study = study
        self.lease_s = lease_s  # the preset's [distributed] lease_s: what a chief allows, what a worker keeps
        self.runlog = RunLog(study.root / project, self.tuner_id)
        self._guard = _TrialGuard()
        self._fail_unrun: str | None = None  # RunLog's verdict on the trial about to run
        self._heartbeat = _Heartbeat()  # a worker's, while it trains a trial
        self._reserve = SpaceReserve(study.root / f".reserve.{self.tuner_id}")
        if self._is_worker():
            self.oracle.stub = distribute.PatientStub(distribute.worker_stub())
            self.oracle.create_trial = distribute.paced(self.oracle.create_trial)

    # What differs between the search's trials and the finalists': their seed, their TensorBoard
    # run (a folder under tensorboard/), their lines.
    def trial_seed(self, trial) -> int:
        raise NotImplementedError

    def run_name(self, trial) -> str:
        raise NotImplementedError

    def report_begin(self, trial) -> None:
        pass

    def report_end(self, trial) -> None:
        pass

    def search(self, *fit_args, **fit_kwargs):
        if distribute.role() == "chief":  # Keras Tuner's chief, serving this oracle until its trials are done
            self.oracle.lease_s = self.lease_s
            # Keras Tuner's own table per trial ("Search: Running Trial #8", every value): the chief's
            # lines, and each worker's, report instead (on_search_begin, where a process trains).
            self.oracle.verbose = 0
            self.save()
            distribute.serve_oracle(self.oracle)
            return
        super().search(*fit_args, **fit_kwargs)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json_atomic(self._get_tuner_fname(), self.get_state())

    def on_search_begin(self):
        self.oracle.verbose = 0  # search() just set it from fit's verbose; our own lines report instead
        super().on_search_begin()
        try:  # a disk already full stops the study here, before a trial starts
            self._reserve.hold()
        except OSError as exc:
            if full := disk_full(exc):
                raise DiskFull(disk_full_message(full, self.study.root)) from exc
            raise

    def disk_filled_up(self, full: OSError) -> DiskFull:
        """What a trial raises once the disk is full: the reserve is let go (`interrupted`), so that
        the trial's run is recorded as interrupted, not counted as a crash, and re-runs on resume."""
        try:
            self.interrupted()
        except OSError:  # still no room (another process filled it): the run reads as a crash
            pass
        return DiskFull(disk_full_message(full, self.study.root))

    def interrupted(self) -> None:
        """The user stopped the search (Ctrl-C): the running trial did not kill its process."""
        self._reserve.release()
        self.runlog.interrupted()

    def on_trial_begin(self, trial):
        _CtrlC.check()
        # A worker's trial ids come from the chief over an unauthenticated port, and become paths
        # (trial folders, TensorBoard runs that are deleted and rewritten): Keras Tuner's are digits.
        if not _TRIAL_ID.fullmatch(str(trial.trial_id)):
            raise UserError(f"the oracle sent trial id {str(trial.trial_id)[:40]!r}, which is not one Keras Tuner "
                            f"makes; refusing to use it in a path. Check who serves {os.environ.get(distribute.ORACLE_IP)}")
        super().on_trial_begin(trial)
        # A trial interrupted by a crash is re-run from scratch: drop its half-written curves.
        shutil.rmtree(self.study.tensorboard_dir / self.run_name(trial), ignore_errors=True)
        self._fail_unrun = self.runlog.start(trial.trial_id)
        if self._is_worker():
            self._heartbeat.start(self.oracle, trial.trial_id, min(30.0, self.lease_s / 5))
        self.report_begin(trial)

    def run_trial(self, trial, *args, **kwargs):
        """Keras Tuner's trial, seeded, and failed with a one-line reason on NaN, divergence or OOM."""
        if self._fail_unrun:
            raise keras_tuner.errors.FailedTrialError(self._fail_unrun)
        # The last trial's model is discarded: let go of what Keras' clear_session leaves behind
        # (TensorFlow's gradient registry, JAX's compiled programs). Keras Tuner's `_try_build`
        # calls clear_session and gc.collect next, which free it: collecting here too cost four
        # passes a trial, 0.5 s each in a JAX search on 2 cores.
        drop_backend_caches()
        keras.utils.set_random_seed(self.trial_seed(trial))
        # Keras Tuner logs to TensorBoard only on TensorFlow: this logger does it on every backend.
        run = self.run_name(trial)
        logger = TensorBoardLogger(self.study.tensorboard_dir / run, values=searched_values(trial.hyperparameters.values),
                                   session=run.removesuffix("/execution0"))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), logger, self._guard, self._heartbeat]
        try:
            with _checkpoint_at_end():
                histories = super().run_trial(trial, *args, **kwargs)
        except Exception as exc:
            if full := disk_full(exc):  # not the trial's doing: it is not counted as a crash either
                raise self.disk_filled_up(full) from exc
            if not backend.is_out_of_memory(exc):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise keras_tuner.errors.FailedTrialError(f"out of memory: {first}") from None
        if self._guard.reason:
            raise keras_tuner.errors.FailedTrialError(self._guard.reason)
        return histories

    def on_trial_end(self, trial):
        self._heartbeat.stop()
        # Closed before Keras Tuner reports the trial, so that a chief reading runs.json for a
        # worker's failure reason finds it (`StudyOracle.end_trial`).
        try:
            self.runlog.end(trial.trial_id, trial.status.lower(), reason=trial.message and failure_reason(trial.message))
            # The checkpoint a promoted trial and best/ start from, durable before trial.json says COMPLETED.
            fsync_tree(self.get_trial_dir(trial.trial_id))
        except OSError as exc:
            if full := disk_full(exc):  # the trial stays unfinished and runs again on resume, as in run_trial
                raise self.disk_filled_up(full) from exc
            raise
        super().on_trial_end(trial)
        # These serve every trial: holding the last one's model would keep it alive.
        for shared in (self._guard, self._heartbeat):
            shared.set_model(None)
        self.report_end(trial)


class AlexNetTuner(StudyTuner):
    """The search: `keras_tuner.Hyperband` (or, by the preset's [search] tuner, Keras Tuner's
    RandomSearch or Bayesian optimisation oracle), each trial seeded from the study seed.

    `TrialReporter` prints the trial lines (Keras Tuner's own display is silenced), and
    `search_summary.json` is rewritten after every trial with the study's counts and wall time.
    """

    def __init__(self, hypermodel: AlexNetHyperModel, config: Config, study: Study,
                 overwrite: bool = False, progress: Progress | None = None, distribution_strategy=None):
        s = config["search"]
        oracle = make_oracle(config)
        super().__init__(hypermodel, oracle, study, study.tuner_dir.name, config["distributed"]["lease_s"],
                         overwrite=overwrite, distribution_strategy=distribution_strategy)
        if s["tuner"] == "hyperband":
            # A reloaded oracle takes its iteration count from oracle.json; a study extended
            # (prepare_search allowed more iterations) runs to the preset's.
            oracle.hyperband_iterations = s["hyperband_iterations"]
        self.seed = config["study"]["seed"]
        self.max_epochs = s["max_epochs"]
        self.reporter = TrialReporter(progress, self.max_epochs) if progress else None
        self.summary_file = study.root / "search_summary.json"
        self.schedule = search_schedule(config["search"])
        self._started = time.monotonic()
        self._earlier_wall = 0.0
        self._epochs_at_start = 0
        if self.summary_file.is_file() and not overwrite:
            self._earlier_wall = float(read_json(self.summary_file).get("wall_time_s", 0.0))
        if not self._is_worker():  # the oracle lives here: keep the summary current after every trial
            oracle.on_trial_ended = self._trial_ended
            self._epochs_at_start = epochs_spent(oracle.trials.values(), self.max_epochs)

    def trial_seed(self, trial) -> int:
        # Weights and shuffling follow the study seed, offset per trial so that trials differ.
        return self.seed * 100_003 + int(trial.trial_id)

    def run_name(self, trial) -> str:
        return f"{trial.trial_id}/execution0"  # where Keras Tuner's own TensorBoard set-up puts it

    def _trial_ended(self, trial) -> None:
        summary = self.write_summary()
        if self.reporter and distribute.role() == "chief":
            # The chief trains nothing; it is the one place that sees the whole study's progress.
            self.reporter.study_line(trial, self.runlog.runner(trial.trial_id), summary, self._epochs_at_start,
                                     time.monotonic() - self._started)

    def write_summary(self, finished: bool = False) -> dict:
        """search_summary.json: wall time summed over every run of this study, and trial counts."""
        trials = list(self.oracle.trials.values())
        summary = {
            "wall_time_s": round(self._earlier_wall + time.monotonic() - self._started, 1),
            "trials_scheduled": self.schedule.trials,
            "trials_started": len(trials),
            "trials_completed": sum(t.status == "COMPLETED" for t in trials),
            "trials_failed": sum(t.status in FAILED for t in trials),
            "epochs_scheduled": self.schedule.epochs,
            "epochs_spent": epochs_spent(trials, self.max_epochs),
            "finished": finished,
        }
        write_json_atomic(self.summary_file, summary)
        return summary

    def report_begin(self, trial) -> None:
        if self.reporter:
            self.reporter.begin(trial)

    def report_end(self, trial) -> None:
        if self.reporter:
            ended = self.oracle.get_trial(trial.trial_id)
            ended.message = ended.message or trial.message  # Keras Tuner's gRPC drops it; this process has it
            if self._is_worker():  # the oracle is the chief's, behind gRPC
                leaders = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
            else:
                leaders = ranked_trials(self.oracle)
            self.reporter.end(ended, leaders[0] if leaders else None, self.oracle.objective.name,
                              self.get_trial_dir(trial.trial_id))


def epochs_spent(trials, max_epochs: int) -> int:
    """Epochs the ended ones of `trials` trained, each counting only its own (not its parent's)."""
    return sum(trial_epochs(t.hyperparameters.values, max_epochs) for t in trials if t.status in ENDED)


def _quiet_failed_trials() -> None:
    """Keep Keras Tuner from printing each failed trial's traceback: TrialReporter prints its reason
    in one line and trial.json keeps the traceback. The switch is Keras Tuner's module-level DEBUG
    flag, which has no public spelling (keras_tuner/src/config.py, read in
    BaseTuner._try_run_and_update_trial)."""
    from keras_tuner.src import config as kt_config

    kt_config.DEBUG = False


def make_tuner(config: Config, study: Study, overwrite: bool = False, progress: Progress | None = None,
               distribution_strategy=None) -> AlexNetTuner:
    return AlexNetTuner(AlexNetHyperModel.from_config(config), config, study, overwrite=overwrite,
                        progress=progress, distribution_strategy=distribution_strategy)


def completed_trials(tuner: AlexNetTuner) -> list:
    return [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]


def ranked_trials(oracle) -> list:
    """Completed trials, best first; ties go to the earlier trial (see `trials.rank_key`)."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return sorted(done, key=lambda t: rank_key(t.score, t.trial_id, oracle.objective.direction))


def best_trials_table(tuner: AlexNetTuner, n: int = 5) -> str:
    best = ranked_trials(tuner.oracle)[:n]
    if not best:
        return "no completed trials"
    # The preset's order: a reloaded trial's values come back from JSON sorted, a new one's as declared.
    names = list(tuner.hypermodel.space)
    header = ["trial", tuner.oracle.objective.name, "epochs"] + names
    rows = [
        [t.trial_id, f"{t.score:.4f}", str(model_epochs(t.hyperparameters.values, tuner.max_epochs))]
        + [short(searched_values(t.hyperparameters.values).get(name, "-")) for name in names]
        for t in best
    ]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header] + rows]
    return "\n".join(lines)


def run_search(config: Config, study: Study, source: Source, overwrite: bool = False,
               out: TextIO = sys.stdout, callbacks: tuple = ()) -> AlexNetTuner:
    """Run (or resume) the study's search to the end of its schedule.

    A single process (or a chief, which serves the oracle and trains nothing) prepares the study
    and sums it up (`_lead`); a worker trains the trials the chief hands it (`_work`). The role
    is decided here, once (`distribute.role`).
    `callbacks` are added to every trial's fit; Keras Tuner deep-copies them per trial, so one
    that collects across trials must share its state through `__deepcopy__` (see EpochReporter).
    """
    if distribute.role() == "worker":
        return _work(config, study, source, overwrite, out, list(callbacks))
    return _lead(config, study, source, overwrite, out, list(callbacks), serving=distribute.role() == "chief")


def _lead(config: Config, study: Study, source: Source, overwrite: bool, out: TextIO, callbacks: list,
          serving: bool) -> AlexNetTuner:
    say = printer(out)
    # Everything that can fail on bad input is read before anything is written. A chief trains
    # nothing, so it takes no GPUs.
    training = Training.prepare(config, source, several_gpus=not serving)
    with locks.held(study.root, "search"):  # before the study is read: two searches would interleave its files
        prepared = prepare_search(study, config, overwrite,
                                  provenance={"data_source": source.describe(), "split": training.splits.note})
        if prepared.extended:
            say(f"extending study {study.name}: {', '.join(prepared.extended)}; its finished trials are kept")
        _describe(config, training, say, trains=not serving)
        schedule = search_schedule(config["search"])
        # Time left covers the whole `make search`: the finalists' confirmation follows the search.
        progress = Progress(schedule.trials, schedule.epochs + finalist_epochs(config), out=out)
        tuner = _tuner(config, study, training, progress, overwrite)
        write_experiment(study.tensorboard_dir, config.space)
        finished = [t for t in tuner.oracle.trials.values() if t.status in ENDED]
        progress.epochs_done = epochs_spent(finished, tuner.max_epochs)
        say(f"study {study.name}: {schedule.trials} trials, {schedule.epochs} epochs in the Hyperband schedule"
            + (f"; resuming with {len(finished)} finished" if prepared.resuming else ""))
        if serving:
            host, port = os.environ[distribute.ORACLE_IP], os.environ[distribute.ORACLE_PORT]
            say(f"serving the oracle on {host}:{port}; workers: KERASTUNER_TUNER_ID=tuner<N> "
                f"KERASTUNER_ORACLE_IP={host} KERASTUNER_ORACLE_PORT={port} alexnet-search search ... "
                f"(or alexnet-search search --worker N --oracle-host {host})")
            tuner.oracle.verbose = 0
        _train(tuner, config, training, progress, callbacks, out)
        _finish(tuner, config, study, progress, say)
        return tuner


def _work(config: Config, study: Study, source: Source, overwrite: bool, out: TextIO,
          callbacks: list) -> AlexNetTuner:
    if overwrite:
        raise UserError("--overwrite is the chief's to give: a worker joins the study the chief prepared")
    say = printer(out)
    training = Training.prepare(config, source)
    study.tuner_dir.mkdir(parents=True, exist_ok=True)
    _describe(config, training, say, trains=True)
    # Only the chief sees the whole study: it prints the time left.
    progress = Progress(search_schedule(config["search"]).trials, None, out=out)
    tuner = _tuner(config, study, training, progress)
    _train(tuner, config, training, progress, callbacks, out)
    say(f"worker {tuner.tuner_id}: the chief has no more trials; done")
    return tuner


def _describe(config: Config, training: Training, say, trains: bool) -> None:
    """The device, then what a training process trains on (a chief: the data alone)."""
    role = distribute.role()
    say(f"device: {backend.describe_device()}; Keras backend: {backend.version()}"
        + ("" if role == "single" else f"; role: {role} ({os.environ[distribute.TUNER_ID]})"))
    if config["study"]["expects_gpu"] and backend.gpu_count() == 0 and trains:
        estimate = estimate_seconds(config, time_training_steps(config))
        say(f"warning: no GPU is visible, and {config.path} is sized for one: this search would take "
            f"about {format_duration(estimate)} on this CPU. For a CPU run use CONFIG=tuning/cpu.toml "
            f"(make search CONFIG=tuning/cpu.toml). Continuing; Ctrl-C stops, the same command resumes.")
    for line in training.describe():
        if trains or line.startswith("data:"):
            say(line)


def _tuner(config: Config, study: Study, training: Training, progress: Progress,
           overwrite: bool = False) -> AlexNetTuner:
    tuner = AlexNetTuner(training.hypermodel(), config, study, overwrite=overwrite, progress=progress,
                         distribution_strategy=training.strategy)
    tuner.save()  # reloadable from the start: a kill during the first trial resumes too
    _quiet_failed_trials()
    return tuner


def _train(tuner: AlexNetTuner, config: Config, training: Training, progress: Progress, callbacks: list,
           out: TextIO) -> None:
    search_to_the_end(tuner, training.train_set(config["study"]["seed"]), training.val_set(),
                      [EpochReporter(progress), *callbacks], config["search"]["max_epochs"], out,
                      failure_limit=config["search"]["max_consecutive_failed_trials"])


def search_to_the_end(tuner: StudyTuner, train, val, callbacks: list, epochs: int, out: TextIO,
                      failure_limit: int | None = None) -> None:
    """`tuner.search`, with Ctrl-C closing the running trial's record and a study stopped by
    failures in a row turned into one line. `epochs`: each trial's, where the oracle does not set
    them (Hyperband does); `failure_limit`: the preset's key behind that stop, named in its line."""
    role = distribute.role()
    fit_kwargs = {} if role == "chief" else {"verbose": 1 if out.isatty() else 0, "epochs": epochs}
    # The chief only serves the oracle (no callbacks run there): Python's own Ctrl-C stops it.
    trains = role != "chief" and threading.current_thread() is threading.main_thread()
    previous = _CtrlC.install() if trains else None
    try:
        tuner.search(train, validation_data=val, callbacks=[*callbacks, _CtrlC()] if trains else callbacks,
                     **fit_kwargs)
    except KeyboardInterrupt:
        tuner.interrupted()
        raise
    finally:
        tuner._reserve.release()  # however the search ended: never left on a full disk
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)
    stopped = getattr(tuner.oracle, "stopped", None)  # a worker's oracle is the chief's: it says nothing
    if stopped is not None:
        reason = failure_reason(stopped) if stopped else "see the trial lines above"
        raise UserError(
            f"{failure_limit} trials in a row failed (search.max_consecutive_failed_trials), the last with: {reason}; "
            f"the study stopped. Check the preset's ranges and the machine's memory, then rerun to resume"
        )


def _finish(tuner: AlexNetTuner, config: Config, study: Study, progress: Progress, say) -> None:
    """The finished search's summary and closing lines (its finalists are confirmed next: `confirm`)."""
    summary = tuner.write_summary(finished=True)
    say(f"\nsearch finished in {format_duration(progress.clock() - progress.start)} "
        f"({format_duration(summary['wall_time_s'])} over all runs of this study; "
        f"{summary['trials_completed']} trials completed, {summary['trials_failed']} failed)")
    compiled = backend.compiles()
    if compiled and compiled.counts["programs"]:  # JAX: what the persistent cache saved this run
        say(f"this run: {backend.Compiles.describe(compiled.snapshot())}")
    if completed_trials(tuner):
        say("best trials:\n" + best_trials_table(tuner))
    say(f"written to {study.root}/: tuner/ (Keras Tuner state), tensorboard/ (make tensorboard), "
        f"search_summary.json, config.json, versions.json")
