"""The Hyperband search: Keras Tuner's own tuner, with progress lines and crash-safe state files.

Resuming is Keras Tuner's `overwrite=False`: running the same command again reloads
`tuner/oracle.json` and the trial records, skips finished trials and re-runs the one that was
interrupted. Its state files are written atomically here, so a crash mid-write cannot corrupt them.
A trial whose loss goes non-finite or diverges, or that runs out of memory, fails with a one-line
reason and the search goes on. In a distributed study (`distribute`) the same code runs as the
chief, which serves the oracle, or as a worker, which trains what the chief hands it.
"""

from __future__ import annotations

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
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle

from . import backend, distribute, locks
from .config import Config
from .console import format_duration, printer, short
from .data import Source
from .errors import DiskFull, UserError, disk_full, disk_full_message
from .files import fsync_tree, read_json, write_json_atomic
from .hypermodel import AlexNetHyperModel
from .model import clear_session
from .plan import estimate_seconds, time_training_steps
from .progress import EpochReporter, Progress, TrialReporter
from .runlog import RunLog, failure_message
from .schedule import finalist_epochs, search_schedule
from .study import Study, prepare_search
from .tboard import TensorBoardLogger, write_experiment
from .training import Training
from .trials import ENDED, FAILED, direction, failure_reason, model_epochs, rank_key, searched_values, trial_epochs


_TRIAL_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class _Atomic:
    """Mixed into a Keras Tuner oracle: makes it crash-safe.

    Its files are written atomically, and `reload` repairs the two states a kill between two of
    Keras Tuner's writes leaves behind (oracle.json and trial.json are separate files):
    - a trial whose trial.json says it finished while oracle.json still lists it as running
      (end_trial saves before it forgets the running trial): Keras Tuner would run it again;
    - a trial.json that oracle.json never recorded (create_trial saves the trial first): Keras
      Tuner would keep it as a phantom that never runs.
    Keras Tuner offers no public hook for either: this overrides its file writers (`save`,
    `_save_trial`) and reads its retry queue. tests/test_search.py pins both behaviours, so an
    upgrade that moves them fails there first.
    """

    on_trial_ended = None  # set by the tuner: called after every end_trial, here or from a worker
    # Set when max_consecutive_failed_trials trials in a row failed: the last one's message. From
    # then on every tuner asking for a trial is told the study stopped (`search_to_the_end` says why).
    stopped: str | None = None

    def _check_consecutive_failures(self):
        # Keras Tuner raises here, inside end_trial: on a chief that is a gRPC handler holding the
        # oracle's lock, which is never released, and the worker gets a traceback and is restarted
        # into the same failure. It also counts any run in the study's history, so a resumed study
        # that stopped this way would stop again at its next trial, even one that completed. This
        # counts the latest run only and stops the study through create_trial, in every role.
        n, run = self.max_consecutive_failed_trials, 0
        for trial_id in reversed(self.end_order):
            if self.trials[trial_id].status != "FAILED":
                break
            run += 1
        if n and run >= n:
            self.stopped = self.trials[self.end_order[-1]].message or ""

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._heard_from(tuner_id)
        if self.stopped is None or tuner_id in self.ongoing_trials:  # a restarted worker finishes its trial
            return super().create_trial(tuner_id)
        self.tuner_ids.discard(tuner_id)  # as Keras Tuner does for a tuner it stops: the chief waits for none
        return keras_tuner.engine.trial.Trial(self.hyperparameters.copy(), trial_id="stopped", status="STOPPED")

    # Leases, on a chief. Keras Tuner's oracle waits for every worker id it has seen, and for
    # every trial it handed out, however long their worker is gone. A worker that says nothing
    # for `lease_s` (it sends a heartbeat while it trains: StudyTuner) loses its trial to the
    # next worker that asks, through Keras Tuner's own retry queue, and is no longer waited for.
    lease_s: float | None = None  # set by the tuner that serves this oracle
    _seen: dict | None = None  # tuner id -> time.monotonic() of its last call

    def _heard_from(self, tuner_id: str | None) -> None:
        if tuner_id is not None:
            if self._seen is None:
                self._seen = {}
            self._seen[tuner_id] = time.monotonic()

    def _owner(self, trial_id: str) -> str | None:
        return next((t for t, trial in self.ongoing_trials.items() if trial.trial_id == trial_id), None)

    def get_trial(self, trial_id):
        self._heard_from(self._owner(trial_id))  # a worker's heartbeat is a GetTrial of its trial
        return super().get_trial(trial_id)

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        # update_trial and end_trial take anything a caller on the port sends and never raise: an
        # exception inside Keras Tuner's `synchronized` never releases the oracle's lock, and every
        # later call of every worker would wait on it (one UpdateTrial with an unknown id hung a
        # chief). What cannot be used returns None, and only that call fails in the gRPC handler.
        trial = self.trials.get(trial_id)
        if trial is None or trial.status in ENDED:  # unknown, or a late report of a trial already ended
            return trial
        try:
            self._check_objective_found(metrics)
        except (ValueError, TypeError):
            return None
        self._heard_from(self._owner(trial_id))
        return super().update_trial(trial_id, metrics, step=step)

    @keras_tuner.synchronized
    def expire_leases(self) -> list[tuple[str, str | None]]:
        """(tuner id, its trial id or None) for each worker silent for `lease_s`, now given up:
        its trial goes back to the queue, and the chief no longer waits for it. A worker with that
        id that comes back asks for a trial as a new one would; if it was only cut off and finishes
        the trial first, its result counts and the second run's is ignored (`end_trial`)."""
        if not self.lease_s:
            return []
        now, expired = time.monotonic(), []
        self._seen = self._seen or {}
        for tuner_id in sorted(self.tuner_ids | set(self.ongoing_trials)):
            # A chief restarted (or a worker it has not heard from yet) starts the lease now.
            if now - self._seen.setdefault(tuner_id, now) <= self.lease_s:
                continue
            trial = self.ongoing_trials.pop(tuner_id, None)
            if trial is not None and trial.trial_id not in self._retry_queue:
                self._retry_queue.append(trial.trial_id)
            self.tuner_ids.discard(tuner_id)
            del self._seen[tuner_id]
            expired.append((tuner_id, trial.trial_id if trial is not None else None))
        if expired:
            self.save()
        return expired

    def save(self):
        write_json_atomic(self._get_oracle_fname(), self.get_state())

    @keras_tuner.synchronized
    def end_trial(self, trial):
        known = self.trials.get(trial.trial_id)
        if known is None or trial.status not in ENDED:
            return  # not a trial of this study, or not an ending: nothing to record (see update_trial)
        if known is not trial:  # from the wire
            if known.status in ENDED:
                # Run twice after a lease expired: the first to finish counts, once. (In one
                # process the trial is the oracle's own object, its status already set.)
                return
            # The values are the oracle's own: a worker never changes them, and a caller on the
            # port must not rewrite a trial's (a string tuner/epochs left a study unresumable).
            trial.hyperparameters = known.hyperparameters
        self._heard_from(self._owner(trial.trial_id))
        if trial.trial_id in self._retry_queue:  # its lease expired, but its worker finished it first
            self._retry_queue.remove(trial.trial_id)
        if trial.status in FAILED and not trial.message:  # a worker's, over gRPC: it wrote the reason down
            trial.message = failure_message(self._get_trial_dir(trial.trial_id))
        super().end_trial(trial)
        if self.on_trial_ended:
            self.on_trial_ended(self.trials[trial.trial_id])

    def _save_trial(self, trial):
        write_json_atomic(self._get_trial_dir(trial.trial_id) + "/trial.json", trial.get_state())

    def reload(self):
        super().reload()
        repaired = False
        for trial_id in [t for t in self.trials if t not in self.start_order]:
            del self.trials[trial_id]  # its id is reused by the next trial, which rewrites its folder
        for trial_id in list(self._retry_queue):
            if self.trials[trial_id].status in ENDED:
                self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
                repaired = True
        if distribute.role() == "chief":
            # Keras Tuner sends a restarted oracle's running trials for retry at once: on a chief
            # whose workers still train them, each would run twice. Handed back to their workers
            # instead, under the lease (`expire_leases`), which passes on those that do not return.
            saved = read_json(self._get_oracle_fname()).get("ongoing_trials", {})
            for tuner_id, trial_id in saved.items():
                if trial_id in self._retry_queue and trial_id in self.trials:
                    self._retry_queue.remove(trial_id)
                    self.ongoing_trials[tuner_id] = self.trials[trial_id]
        if repaired:  # only then: retrain-best and report read a study without writing to it
            self.save()


class _AtomicHyperbandOracle(_Atomic, HyperbandOracle):
    pass


class _AtomicRandomSearchOracle(_Atomic, RandomSearchOracle):
    pass


class _AtomicBayesianOracle(_Atomic, BayesianOptimizationOracle):
    pass


def make_oracle(config: Config):
    """The preset's oracle ([search] tuner), crash-safe. Hyperband gets its schedule; RandomSearch
    and Bayesian optimisation get max_trials configurations, each trained max_epochs."""
    s = config["search"]
    common = dict(
        objective=keras_tuner.Objective(s["objective"], direction(s["objective"])),
        seed=config["study"]["seed"],
        max_retries_per_trial=s["max_retries_per_trial"],
        max_consecutive_failed_trials=s["max_consecutive_failed_trials"],
    )
    if s["tuner"] == "hyperband":
        return _AtomicHyperbandOracle(max_epochs=s["max_epochs"], factor=s["factor"],
                                      hyperband_iterations=s["hyperband_iterations"], **common)
    if s["tuner"] == "random":
        return _AtomicRandomSearchOracle(max_trials=s["max_trials"], **common)
    try:
        # Keras Tuner's default is 3 random configurations per searched hyperparameter before the
        # Gaussian process proposes any: more than a small budget's whole max_trials.
        return _AtomicBayesianOracle(max_trials=s["max_trials"], num_initial_points=s.get("initial_points"), **common)
    except ImportError:  # an install made without the package's dependencies (a GPU machine's wheels)
        raise UserError(f"{config.path} asks for the bayesian tuner, which needs scikit-learn: "
                        f"pip install scikit-learn (make env installs it)") from None


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
        self._heartbeat: threading.Event | None = None  # set to stop the running trial's heartbeat
        if self._is_worker():
            self.oracle.stub = distribute.PatientStub(self.oracle.stub)

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
            self.save()
            distribute.serve_oracle(self.oracle)
            return
        super().search(*fit_args, **fit_kwargs)

    def _beat(self, trial_id: str) -> None:
        """While a worker trains `trial_id`: tell the chief every lease_s / 5 s (30 s at most) that
        it is alive (`_Atomic.expire_leases`). A thread, so a long epoch or compile does not
        silence it, and a call blocked by a partition holds up nothing but itself."""
        stop = self._heartbeat = threading.Event()

        def beat():
            while not stop.wait(min(30.0, self.lease_s / 5)):
                try:
                    self.oracle.get_trial(trial_id)
                except Exception:  # the chief is gone or unreachable: the trial's own calls will say so
                    pass

        threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}").start()

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json_atomic(self._get_tuner_fname(), self.get_state())

    def on_search_begin(self):
        self.oracle.verbose = 0  # search() just set it from fit's verbose; our own lines report instead
        super().on_search_begin()

    def interrupted(self) -> None:
        """The user stopped the search (Ctrl-C): the running trial did not kill its process."""
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
            self._beat(trial.trial_id)
        self.report_begin(trial)

    def run_trial(self, trial, *args, **kwargs):
        """Keras Tuner's trial, seeded, and failed with a one-line reason on NaN, divergence or OOM."""
        if self._fail_unrun:
            raise keras_tuner.errors.FailedTrialError(self._fail_unrun)
        # The last trial's model is discarded: free its graphs too, which Keras Tuner's own
        # clear_session leaves in TensorFlow's gradient registry.
        clear_session()
        keras.utils.set_random_seed(self.trial_seed(trial))
        # Keras Tuner logs to TensorBoard only on TensorFlow: this logger does it on every backend.
        run = self.run_name(trial)
        logger = TensorBoardLogger(self.study.tensorboard_dir / run, values=searched_values(trial.hyperparameters.values),
                                   session=run.removesuffix("/execution0"))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), logger, self._guard]
        try:
            histories = super().run_trial(trial, *args, **kwargs)
        except Exception as exc:
            if full := disk_full(exc):
                self.interrupted()  # not the trial's doing: it is not counted as a crash either
                raise DiskFull(disk_full_message(full)) from exc
            if not backend.is_out_of_memory(exc):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise keras_tuner.errors.FailedTrialError(f"out of memory: {first}") from None
        if self._guard.reason:
            raise keras_tuner.errors.FailedTrialError(self._guard.reason)
        return histories

    def on_trial_end(self, trial):
        if self._heartbeat is not None:
            self._heartbeat.set()
        # Closed before Keras Tuner reports the trial, so that a chief reading runs.json for a
        # worker's failure reason finds it (`_Atomic.end_trial`).
        self.runlog.end(trial.trial_id, trial.status.lower(), reason=trial.message and failure_reason(trial.message))
        # The checkpoint a promoted trial and best/ start from, durable before trial.json says COMPLETED.
        fsync_tree(self.get_trial_dir(trial.trial_id))
        super().on_trial_end(trial)
        self._guard.set_model(None)  # it serves every trial; holding the last model would keep it alive
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
    if completed_trials(tuner):
        say("best trials:\n" + best_trials_table(tuner))
    say(f"written to {study.root}/: tuner/ (Keras Tuner state), tensorboard/ (make tensorboard), "
        f"search_summary.json, config.json, versions.json")
