"""The study's Keras Tuner oracle, with the rules Keras Tuner's own lacks. Mixed into any of its
oracles (Hyperband, RandomSearch, Bayesian optimisation, and confirm's FinalistsOracle):

- crash-safe: its files are written atomically, and a kill between two of its writes is repaired
  on reload;
- failures in a row stop the study in every role, with their reason, counting the latest run only;
- on a chief: leases on workers (a silent one loses its trial, and is not waited for), a restart
  that hands running trials back to their own workers, and nothing a caller on its unauthenticated
  port sends can raise inside Keras Tuner's lock or rewrite a trial's values.

Keras Tuner offers no public hook for any of it: this overrides its methods and reads its retry
queue and ongoing trials. tests/test_oracle.py pins each behaviour, so an upgrade that moves them
fails there first.
"""

from __future__ import annotations

import functools
import threading
import time

import keras_tuner
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle
from keras_tuner.src.engine import oracle as kt_oracle

from . import distribute
from .config import Config
from .errors import UserError
from .files import read_json, write_json_atomic
from .runlog import failure_message
from .trials import ENDED, FAILED, direction


def locked(method):
    """Keras Tuner's `synchronized` (the same lock, so its own methods still exclude these), with
    the lock released however the call ends. Its decorator releases it only on return: a call
    that raised (a disk full as the oracle saves, a report it cannot score) left the oracle
    locked, and every later call of every worker, and the chief, waited on it for good."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        name = threading.current_thread().name
        if kt_oracle.THREADS[self] == name:  # this thread holds it already: a nested call
            return method(self, *args, **kwargs)
        with kt_oracle.LOCKS[self]:
            kt_oracle.THREADS[self] = name
            try:
                return method(self, *args, **kwargs)
            finally:
                kt_oracle.THREADS[self] = None

    return wrapped


class StudyOracle:
    """Mixed into a Keras Tuner oracle (module docstring).

    `reload` repairs the two states a kill between two of Keras Tuner's writes leaves behind
    (oracle.json and trial.json are separate files):
    - a trial whose trial.json says it finished while oracle.json still lists it as running
      (end_trial saves before it forgets the running trial): Keras Tuner would run it again;
    - a trial.json that oracle.json never recorded (create_trial saves the trial first): Keras
      Tuner would keep it as a phantom that never runs.
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

    @locked
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
        # A copy: get_trial reads it unlocked while expire_leases may change it.
        return next((t for t, trial in list(self.ongoing_trials.items()) if trial.trial_id == trial_id), None)

    def get_trial(self, trial_id):
        self._heard_from(self._owner(trial_id))  # a worker's heartbeat is a GetTrial of its trial
        return super().get_trial(trial_id)

    @locked
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

    @locked
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

    @locked
    def end_trial(self, trial):
        known = self.trials.get(trial.trial_id)
        if known is None or trial.status not in ENDED:
            return  # not a trial of this study, or not an ending: nothing to record (see update_trial)
        if known is not trial:  # from the wire
            if known.status in ENDED:
                # Run twice after a lease expired: the first to finish counts, once. (In one
                # process the trial is the oracle's own object, its status already set.)
                return
            if trial.status == "COMPLETED" and not known.metrics.exists(self.objective.name):
                return  # an ending with no score reported (update_trial) before it: nothing to rank
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
            # INVALID there is a retry waiting its turn (max_retries_per_trial), not an end.
            if self.trials[trial_id].status in ("COMPLETED", "FAILED"):
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


class _Hyperband(StudyOracle, HyperbandOracle):
    pass


class _RandomSearch(StudyOracle, RandomSearchOracle):
    pass


class _Bayesian(StudyOracle, BayesianOptimizationOracle):
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
        return _Hyperband(max_epochs=s["max_epochs"], factor=s["factor"],
                                      hyperband_iterations=s["hyperband_iterations"], **common)
    if s["tuner"] == "random":
        return _RandomSearch(max_trials=s["max_trials"], **common)
    try:
        # Keras Tuner's default is 3 random configurations per searched hyperparameter before the
        # Gaussian process proposes any: more than a small budget's whole max_trials.
        return _Bayesian(max_trials=s["max_trials"], num_initial_points=s.get("initial_points"), **common)
    except ImportError:  # an install made without the package's dependencies (a GPU machine's wheels)
        raise UserError(f"{config.path} asks for the bayesian tuner, which needs scikit-learn: "
                        f"pip install scikit-learn (make env installs it)") from None
