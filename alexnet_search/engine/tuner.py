"""The tuner every phase trains with: Keras Tuner's engine, which hands out trials whatever oracle
decides them, with what every trial of a study gets (a seed, a TensorBoard run and its HParams
session, the NaN/divergence/OOM guard, a crash record, a worker's heartbeat, progress lines), and
the loop that runs a phase's trials to the end in any role.

`StudyTuner` runs the search's trials (`search.AlexNetTuner`); `RunTuner` the planned runs of the
confirmation and of the retrains, each trained from scratch for its phase's epochs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import TextIO

import keras
import keras_tuner

from .. import backend, cluster
from ..errors import DiskFull, UserError, disk_full, disk_full_message
from ..files import SpaceReserve, fsync_tree, write_json_atomic
from ..hypermodel import AlexNetHyperModel
from ..model import drop_backend_caches
from ..runlog import RunLog
from ..study import STUDY_ID, Study
from ..tboard import TensorBoardLogger
from ..trials import ENDED, failure_reason, rank_key, searched_values, trial_epochs
from . import kt
from .callbacks import BestEpochAtEnd, CtrlC, Heartbeat, TrialGuard, checkpoint_at_end

_TRIAL_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# A folder name a run's path may hold: no separator, no "." or "..".
_NAME = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,63}")


class StudyTuner(keras_tuner.Hyperband):
    """What every trial of a study gets, whichever oracle hands it out: a seed, a TensorBoard run
    with its HParams session, the NaN/divergence/OOM guard, a crash record (`RunLog`) and its
    progress lines. `search.AlexNetTuner` runs the search's trials, `RunTuner` planned runs.

    It derives from `keras_tuner.Hyperband` for Hyperband's trials: its `run_trial` and weight
    loading act only on trials that carry `tuner/epochs` and `tuner/trial_id`, so a trial of any
    other oracle runs as Keras Tuner's plain `Tuner` runs it. `Hyperband.__init__` only builds its
    own oracle, so the subclasses pass theirs to `keras_tuner.Tuner.__init__` directly.
    """

    checkpoint = BestEpochAtEnd  # how a trial's checkpoint picks its epoch

    def __init__(self, hypermodel: AlexNetHyperModel, oracle, study: Study, project: str, lease_s: float,
                 overwrite: bool = False, distribution_strategy=None):
        keras_tuner.Tuner.__init__(
            self, oracle=oracle, hypermodel=hypermodel, directory=str(study.root),
            project_name=project, overwrite=overwrite, distribution_strategy=distribution_strategy,
        )
        self.study = study
        self.lease_s = lease_s  # the preset's [distributed] lease_s: what a chief allows, what a worker keeps
        self.runlog = RunLog(study.root / project, self.tuner_id)
        self._guard = TrialGuard()
        self._fail_unrun: str | None = None  # RunLog's verdict on the trial about to run
        self._heartbeat = Heartbeat()  # a worker's, while it trains a trial
        self._reserve = SpaceReserve(study.root / f".reserve.{self.tuner_id}")
        kt.quiet_failed_trials()  # each failed trial's reason is its own line; trial.json keeps the traceback
        if not self._is_worker():  # the oracle lives here, and Keras Tuner has declared the space into it
            _reload_under_any_tuner_id(self.oracle, overwrite)
            self.oracle.space_frozen = True
            self.oracle.study_id = study.make_id()
        self.done_already = False  # a phase that finds its trials all ended before it starts sets it
        if self._is_worker():
            self.oracle.stub = cluster.PatientStub(kt.worker_stub())
            self.oracle.create_trial = cluster.paced(self.oracle.create_trial)

    # What differs between the search's trials and the finalists': their seed, their TensorBoard
    # run (a folder under tensorboard/), their lines.
    def trial_seed(self, trial) -> int:
        raise NotImplementedError

    def run_name(self, trial) -> str:
        raise NotImplementedError

    def report_begin(self, trial) -> None:
        pass

    def report_end(self, ended) -> None:
        """`ended`: the oracle's record of the trial (`ended_record`)."""

    def search(self, *fit_args, **fit_kwargs):
        if cluster.role() == "chief" and self.done_already:
            # A chief restarted after this phase ended: its workers went on to the next phase's port,
            # and none would ever ask here.
            return
        if cluster.role() == "chief":  # Keras Tuner's chief, serving this oracle until its trials are done
            self.oracle.lease_s = self.lease_s
            # Keras Tuner's own table per trial ("Search: Running Trial #8", every value): the chief's
            # lines, and each worker's, report instead (on_search_begin, where a process trains).
            self.oracle.verbose = 0
            self.save()
            kt.serve_oracle(self.oracle)
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
        CtrlC.check()
        run = run_folder(self, trial)
        super().on_trial_begin(trial)
        # A trial interrupted by a crash is re-run from scratch: drop its half-written curves.
        shutil.rmtree(run, ignore_errors=True)
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
            with checkpoint_at_end(self.checkpoint):
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
        self.report_end(ended_record(self, trial))


def ended_record(tuner: StudyTuner, trial):
    """The oracle's record of `trial` once it ended (its status and score, the chief's on a worker),
    with the failure reason this process has: Keras Tuner's gRPC messages drop a trial's message."""
    ended = tuner.oracle.get_trial(trial.trial_id)
    ended.message = ended.message or trial.message
    return ended


def _reload_under_any_tuner_id(oracle, overwrite: bool) -> None:
    """Keras Tuner reloads a study only under the tuner id that saved it (tuner_<id>.json): a study
    run by one process and resumed by a chief, or the other way round, started over on top of its
    own trials. The oracle's state is the study's, whoever saved it."""
    if not overwrite and not oracle.trials and os.path.isfile(oracle._get_oracle_fname()):
        oracle.reload()


def run_folder(tuner: StudyTuner, trial) -> Path:
    """`trial`'s TensorBoard run folder, once what it is built from is checked; UserError
    (before anything is deleted or written) when the oracle sent anything else.

    A worker's trial comes from the chief over an unauthenticated port, and its ids and values
    become paths: its trial folder, Hyperband's parent checkpoint (`tuner/trial_id`), and its
    TensorBoard run, which is deleted and rewritten. Keras Tuner's ids are digits; the names a
    run is built from (a finalist's, a retrain's and their seeds) are plain names and numbers.
    """
    values = trial.hyperparameters.values
    served = f"refusing to use it in a path. Check who serves {os.environ.get(cluster.ORACLE_IP, 'the oracle')}"
    for what, value in (("trial id", trial.trial_id), ("parent trial id", values.get("tuner/trial_id"))):
        if value is not None and not _TRIAL_ID.fullmatch(str(value)):
            raise UserError(f"the oracle sent {what} {str(value)[:40]!r}, which is not one Keras Tuner makes; "
                            + served)
    try:
        seed, name = tuner.trial_seed(trial), tuner.run_name(trial)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"the oracle sent trial {trial.trial_id} without this phase's values ({exc!r}); "
                        + served) from None
    if not 0 <= seed < 2**32 or not all(_NAME.fullmatch(part) for part in name.split("/")):
        raise UserError(f"the oracle sent trial {trial.trial_id} for run {name[:60]!r} with seed {seed}, which this "
                        f"tool never plans; " + served)
    # Last: a study's own trial carries its id, whatever else is wrong with it.
    mine, sent = tuner.study.read_id(), values.get(STUDY_ID)
    if mine is None:
        raise UserError(f"{tuner.study.id_file} is missing, though an oracle serves this study: a worker must see its "
                        f"chief's study folder (the same --results-dir on a filesystem both share)")
    if sent != mine:
        raise UserError(f"the oracle sent trial {trial.trial_id} of another study (study id {str(sent)[:20]!r}, "
                        f"{tuner.study.root}'s is {mine!r}); refusing it. Check who serves "
                        f"{os.environ.get(cluster.ORACLE_IP, 'the oracle')}: another study's chief may hold this "
                        f"study's port")
    return tuner.study.tensorboard_dir / name


class RunTuner(StudyTuner):
    """Trains a phase's planned runs (`engine.planned.PlannedRunsOracle`): each from scratch for
    `epochs` (the confirmation's or the retrain's), the schedule spanning them, seeded by its run's
    seed (the oracle's KEY[1]): its initial weights, and its data order and augmentation draws, as
    retrain-best's run of that seed has them."""

    def __init__(self, training, config, study: Study, oracle, project: str, epochs: int, progress=None,
                 overwrite: bool = False):
        self.key = oracle.KEY  # a worker's oracle is then Keras Tuner's client of the chief's, which has none
        super().__init__(training.hypermodel(horizon=epochs), oracle, study, project,
                         config["distributed"]["lease_s"], overwrite=overwrite,
                         distribution_strategy=training.strategy)
        self.epochs = epochs
        self.progress = progress

    def trial_seed(self, trial) -> int:
        return int(trial.hyperparameters.values[self.key[1]])

    def run_trial(self, trial, train, *args, **kwargs):
        return super().run_trial(trial, dataclasses.replace(train, seed=self.trial_seed(trial)), *args, **kwargs)


def epochs_spent(trials, max_epochs: int) -> int:
    """Epochs the ended ones of `trials` trained, each counting only its own (not its parent's)."""
    return sum(trial_epochs(t.hyperparameters.values, max_epochs) for t in trials if t.status in ENDED)


def ranked_trials(oracle) -> list:
    """Completed trials, best first; ties go to the earlier trial (see `trials.rank_key`)."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return sorted(done, key=lambda t: rank_key(t.score, t.trial_id, oracle.objective.direction))


def search_to_the_end(tuner: StudyTuner, train, val, callbacks: list, epochs: int, out: TextIO,
                      failure_limit: int | None = None) -> None:
    """`tuner.search`, with Ctrl-C closing the running trial's record and a study stopped by
    failures in a row turned into one line. `epochs`: each trial's, where the oracle does not set
    them (Hyperband does); `failure_limit`: the preset's key behind that stop, named in its line."""
    role = cluster.role()
    fit_kwargs = {} if role == "chief" else {"verbose": 1 if out.isatty() else 0, "epochs": epochs}
    # The chief only serves the oracle (no callbacks run there): Python's own Ctrl-C stops it.
    trains = role != "chief" and threading.current_thread() is threading.main_thread()
    previous = CtrlC.install() if trains else None
    try:
        tuner.search(train, validation_data=val, callbacks=[*callbacks, CtrlC()] if trains else callbacks,
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
