"""The study oracle: mixed into any Keras Tuner oracle a phase runs (the search's Hyperband,
random or Bayesian oracle; the planned runs of the confirmation and the retrains), with the rules
Keras Tuner's own lacks:

- crash-safe: its files are written atomically, and a kill between two of its writes is repaired
  on reload;
- failures in a row stop the study in every role, with their reason, counting the latest run only;
- on a chief: leases on workers (a silent one loses its trial, and is not waited for), a restart
  that hands running trials back to their own workers, and nothing a caller on its unauthenticated
  port sends can raise inside Keras Tuner's lock or rewrite a trial's values.

Keras Tuner offers no public hook for any of it: this overrides its methods (`_check_consecutive_failures`,
`_save_trial`) and reads its retry queue and ongoing trials. tests/test_oracle.py pins each
behaviour, so an upgrade that moves them fails there first.
"""

from __future__ import annotations

import time

import keras_tuner

from .. import cluster
from ..files import read_json, write_json_atomic
from ..errors import disk_full
from ..runlog import failure_message
from ..study import STUDY_ID
from ..trials import ENDED, FAILED
from .kt import locked


class Leases:
    """Leases on workers, on a chief. Keras Tuner's oracle waits for every worker id it has seen,
    and for every trial it handed out, however long their worker is gone. A worker that says
    nothing for `lease_s` (it sends a heartbeat while it trains: `engine.callbacks.Heartbeat`)
    loses its trial to the next worker that asks, through Keras Tuner's own retry queue, and is
    no longer waited for."""

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


class StudyOracle(Leases):
    """Mixed into a Keras Tuner oracle (module docstring).

    `reload` repairs the two states a kill between two of Keras Tuner's writes leaves behind
    (oracle.json and trial.json are separate files):
    - a trial whose trial.json says it finished while oracle.json still lists it as running
      (end_trial saves before it forgets the running trial): Keras Tuner would run it again;
    - a trial.json that oracle.json never recorded (create_trial saves the trial first): Keras
      Tuner would keep it as a phantom that never runs.
    """

    on_trial_ended = None  # set by the tuner: called after every end_trial, here or from a worker
    study_id: str | None = None  # set by the tuner: stamped on every trial handed out (`Study.make_id`)
    disk_filled: OSError | None = None  # a trial's end could not be saved: the disk is full
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
            trial = super().create_trial(tuner_id)
            if trial.status == "RUNNING" and self.study_id and trial.hyperparameters.values.get(STUDY_ID) != self.study_id:
                trial.hyperparameters.values[STUDY_ID] = self.study_id  # new, or retried from before ids
                self._save_trial(trial)
            if trial.status == "STOPPED" and (self.ongoing_trials or self._retry_queue):
                # Nothing new to hand out, but another worker's trial may still come back (its lease
                # may lapse): this one waits to take it over, rather than leave, and the chief end
                # without it. Keras Tuner's STOPPED also forgot the tuner; it is still one to wait for.
                self.tuner_ids.add(tuner_id)
                return keras_tuner.engine.trial.Trial(self.hyperparameters.copy(), trial_id="idle", status="IDLE")
            return trial
        self.tuner_ids.discard(tuner_id)  # as Keras Tuner does for a tuner it stops: the chief waits for none
        return keras_tuner.engine.trial.Trial(self.hyperparameters.copy(), trial_id="stopped", status="STOPPED")

    # Set by the tuner once its hypermodel has declared the study's space (`StudyTuner`).
    space_frozen = False

    @locked
    def update_space(self, hyperparameters):
        # Keras Tuner adds whatever hyperparameter a caller names, for good (oracle.json keeps it):
        # one UpdateSpace call on the chief's port would change the study's space, and retrain-best
        # then refuse the study. Once the space is declared, a new name fails that call alone.
        if self.space_frozen:
            new = [hp.name for hp in hyperparameters.space if not self.hyperparameters._exists(hp.name, hp.conditions)]
            if new:
                raise ValueError(f"hyperparameters {new} are not in this study's space; refused")
        return super().update_space(hyperparameters)

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
        try:
            super().end_trial(trial)
        except OSError as exc:
            # On a chief this is a worker's call: it fails, the worker gets its trial back, trains it
            # again, and its end fails again, for good. The chief stops instead (`kt.serve_oracle`).
            if disk_full(exc):
                self.disk_filled = exc
            raise
        if self.on_trial_ended:
            self.on_trial_ended(self.trials[trial.trial_id])

    def _save_trial(self, trial):
        write_json_atomic(self._get_trial_dir(trial.trial_id) + "/trial.json", trial.get_state())

    def reload(self):
        super().reload()
        repaired = _repair(self)
        if cluster.role() == "chief":
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


def _repair(oracle: StudyOracle) -> bool:
    """Undo what a kill between two of Keras Tuner's writes left in a reloaded `oracle` (see
    `StudyOracle`); whether a trial's end had to be recorded again."""
    for trial_id in [t for t in oracle.trials if t not in oracle.start_order]:
        del oracle.trials[trial_id]  # its id is reused by the next trial, which rewrites its folder
    repaired = False
    for trial_id in list(oracle._retry_queue):
        # INVALID there is a retry waiting its turn (max_retries_per_trial), not an end.
        if oracle.trials[trial_id].status in ("COMPLETED", "FAILED"):
            oracle._retry_queue.remove(trial_id)
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
            repaired = True
    return repaired
