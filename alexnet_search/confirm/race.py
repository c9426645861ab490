"""The confirmation's oracle: it hands out each planned (contender, seed) run once, in order, then
races the lead (`next_race_run`) until the leader has `[confirm] leader_seeds` runs; then stops.

Once every contender has run its `[confirm] seeds`, the best mean runs one more seed, and again,
until it has leader_seeds; a leader that falls behind hands the lead on, and the new leader does
the same. The adopted contender has the best mean and never fewer than leader_seeds runs; a
contender whose first seeds were poor is not run again (a pick that is too cautious costs less
than a lucky one). On workers, a worker with nothing else to do runs the leader's next seed beside
the one in flight, or once the leader has all its runs, the runner-up's: ready if the leader
falls, but only while the runs that decide it are young (SPECULATE_WITHIN); otherwise it waits. It
also waits while another contender's run is in its last quarter: its score may move the lead.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from keras_tuner.engine.trial import TrialStatus

from ..engine.kt import locked
from ..engine.planned import PlannedRunsOracle
from ..errors import UserError
from ..trials import ENDED, FAILED, searched_values
from .contenders import CONFIRM_SEED, CONTENDER, CONTENDER_SEED, contender


class FinalistsOracle(PlannedRunsOracle):
    """The planned runs of the contenders, the race, and the baseline runs reused from a sibling
    study (`reusable`). `plan` adds runs (a study extended, a larger [confirm]) and never drops one
    that ran; the race's runs join the plan as they are handed out."""

    KEY = (CONTENDER, CONTENDER_SEED)
    leader_seeds = 0  # `plan` sets it: the preset's [confirm] leader_seeds
    # The run sets it: (contender, seed) -> a completed run of the same baseline in a sibling study
    # (`contenders.reusable_baseline_runs`). Not saved: looked up again at every start.
    reusable: dict[tuple, dict] = {}
    on_reused = None  # called with each run taken from `reusable` after `plan`
    # A worker runs a race run beside the runs that decide whether it is needed (the leader's last
    # ones, or its own contender's in flight) only if those were handed out less than this share of
    # a run ago: an unneeded run holds the study's end by up to a run, a needed one saves up to a
    # run, and a quarter is where the two cancel at 3 in 4. Mirrored, the same share decides when a
    # worker waits for a rival's run about to end (its last quarter) instead of running the
    # leader's next seed: waiting costs at most that quarter if the lead holds, and saves up to a
    # round if it changes.
    SPECULATE_WITHIN = 0.25

    def __init__(self, objective: str, seed: int):
        super().__init__(objective, seed)
        self.reused: dict[tuple, dict] = {}  # (contender, seed) -> the reusable run taken for it
        # This process's view of run lengths, for SPECULATE_WITHIN: when each trial was handed out,
        # and how long each completed one took. Not saved: a resumed chief speculates once it knows.
        self.handed: dict[str, float] = {}
        self.took: list[float] = []

    def plan(self, units: list[dict[str, Any]], epochs: int, leader_seeds: int = 0) -> None:
        if self.epochs is not None and self.epochs != epochs and self.trials:
            raise UserError(f"this study's finalists were confirmed at {self.epochs} epochs and [confirm] epochs (the "
                            f"retrain's unless set) is now {epochs}: their scores would not compare. Set it back to "
                            f"{self.epochs}, or delete {self._project_dir} to confirm again at {epochs}")
        known = {self.key(u): u for u in self.units}
        for unit in units:
            if self.key(unit) in known and searched_values(known[self.key(unit)]) != searched_values(unit):
                raise UserError(f"{contender(unit)}'s values changed since this study's confirmation planned its runs "
                                f"(the preset's [baselines.{unit[CONTENDER]}]?): its scores would mix two "
                                f"configurations. Set them back, or delete {self._project_dir} to confirm again")
        self.units += [u for u in units if self.key(u) not in known]
        self.epochs, self.leader_seeds = epochs, leader_seeds
        started = self.started()
        for unit in self.units:
            if self.key(unit) not in started:
                self.take_reused(unit)
        self.save()

    def take_reused(self, unit: dict) -> bool:
        """Whether `unit` is (now) a reused run: one of `reusable` with the same values."""
        key = self.key(unit)
        if key not in self.reused and (run := self.reusable.get(key)) and run["hyperparameters"] == searched_values(unit):
            self.reused[key] = run
            if self.on_reused:
                self.on_reused(run)
        return key in self.reused

    def settled(self, unit: dict) -> bool:
        return self.key(unit) in self.reused

    def hand_out(self, trial_id: str, unit: dict) -> dict:
        self.handed[trial_id] = self.clock()
        return super().hand_out(trial_id, unit)

    def after_plan(self, trial_id: str) -> dict:
        while (unit := self.next_race_run()) is not None:
            self.units.append(unit)  # saved with the trial (Keras Tuner saves the oracle then)
            if not self.take_reused(unit):
                return self.hand_out(trial_id, unit)
            self.save()  # no trial to save it with: the reused run's score decides the next
        if self.leader_seeds and any(t.status not in ENDED for t in self.trials.values()):
            return {"status": TrialStatus.IDLE, "values": None}  # the lead is decided once those end
        return super().after_plan(trial_id)

    @locked
    def end_trial(self, trial):
        super().end_trial(trial)
        known = self.trials.get(trial.trial_id)
        started = self.handed.get(trial.trial_id)
        if known is not None and known.status == "COMPLETED" and started is not None:
            self.took.append(self.clock() - started)
            del self.handed[trial.trial_id]

    def next_race_run(self) -> dict[str, Any] | None:
        """The next run of the race for the lead, or None.

        The best mean so far with fewer than leader_seeds runs planned, if it beats every settled
        contender that has leader_seeds (ties go to the one with more). A single process asks only
        when nothing is running, so this is the leader itself. A worker may ask while others train:
        it runs the leader's next seed beside the one in flight (both are needed if the leader
        holds), else, once the leader has all its runs, the best of the rest, which is ready if
        the leader falls; either only while the runs in flight that decide whether it is needed
        are young (SPECULATE_WITHIN), and not while another contender's run is about to end (its
        score may move the lead); else None: the worker waits for them."""
        if not self.leader_seeds:  # no race: a plan without one
            return None
        sign = 1.0 if self.objective.direction == "max" else -1.0

        def mean(entry) -> float:  # higher is better, whichever the objective's direction
            return sign * statistics.fmean(entry["scores"])

        table = standings(self)
        scored = [e for e in table.values() if not e["out"] and e["scores"]]
        bar = max((mean(e) for e in scored if not e["busy"] and len(e["units"]) >= self.leader_seeds),
                  default=-math.inf)
        chasing = [e for e in scored if len(e["units"]) < self.leader_seeds and mean(e) > bar]
        if not chasing:
            return None
        best = max(chasing, key=mean)  # the first (best rank) on a tie
        # Runs whose outcome decides whether this one is needed: best's own still training, and a
        # leader's with all its runs handed out.
        pending = [e for e in scored if e["busy"] and (e is best or (len(e["units"]) >= self.leader_seeds
                                                                    and mean(e) > mean(best)))]
        if pending and not _just_started(self, pending):
            return None  # they end soon: wait for them (SPECULATE_WITHIN)
        rivals = [e for e in table.values() if e is not best and e["busy"] and not e["out"]]
        if _ending(self, rivals):
            return None  # a score about to come in may put another contender ahead
        return {**best["units"][-1], CONTENDER_SEED: CONFIRM_SEED + len(best["units"]) + 1}

    def expected_runs(self) -> int:
        """Runs to train, planned so far (less those reused) plus the fewest the race still adds:
        what progress counts on. More when the lead changes hands."""
        planned = super().expected_runs()
        if not self.leader_seeds:
            return planned
        raced = max((len(e["units"]) for e in standings(self).values() if not e["out"]), default=self.leader_seeds)
        return planned + max(0, self.leader_seeds - raced)

    def get_state(self):
        return {**super().get_state(), "leader_seeds": self.leader_seeds, "reused": list(self.reused.values())}

    def set_state(self, state):
        super().set_state(state)
        self.leader_seeds = state.get("leader_seeds", 0)  # `plan` sets the preset's again
        self.reused = {(r["trial"], r["seed"]): r for r in state.get("reused", [])}


def _ages(oracle: FinalistsOracle, entries: list[dict], unknown: float | None) -> list[float]:
    """How long ago each run of `entries` still training was handed out here; `unknown` for a
    run handed out before this process started (None: left out)."""
    trials = {oracle.key(t.hyperparameters.values): t for t in oracle.trials.values() if t.status not in ENDED}
    ages = []
    for unit in (u for e in entries for u in e["units"] if oracle.key(u) in trials):
        handed = oracle.handed.get(trials[oracle.key(unit)].trial_id)
        if handed is not None or unknown is not None:
            ages.append(oracle.clock() - handed if handed is not None else unknown)
    return ages


def _just_started(oracle: FinalistsOracle, entries: list[dict]) -> bool:
    """Whether every run of `entries` still training was handed out here less than
    SPECULATE_WITHIN of a typical run ago (the median of those completed here); False when
    that is not known."""
    if not oracle.took:
        return False
    typical = statistics.median(oracle.took)
    return all(age < oracle.SPECULATE_WITHIN * typical for age in _ages(oracle, entries, unknown=math.inf))


def _ending(oracle: FinalistsOracle, entries: list[dict]) -> bool:
    """Whether a run of `entries` still training was handed out here more than
    1 - SPECULATE_WITHIN of a typical run ago: it ends within about a quarter of a run.
    False when that is not known (a run handed out before this process started)."""
    if not oracle.took:
        return False
    typical = statistics.median(oracle.took)
    return any(age >= (1 - oracle.SPECULATE_WITHIN) * typical for age in _ages(oracle, entries, unknown=None))


def standings(oracle: FinalistsOracle) -> dict[str, dict]:
    """Each contender's planned runs, completed scores, and whether a run is still to end
    ("busy") or failed ("out": not adopted, so not raced)."""
    trials = {oracle.key(t.hyperparameters.values): t for t in oracle.trials.values()}
    table: dict[str, dict] = {}
    for unit in oracle.units:
        entry = table.setdefault(unit[CONTENDER], {"units": [], "scores": [], "busy": False, "out": False})
        entry["units"].append(unit)
        trial = trials.get(oracle.key(unit))
        if oracle.key(unit) in oracle.reused:
            entry["scores"].append(oracle.reused[oracle.key(unit)]["score"])
        elif trial is None or trial.status not in ENDED:
            entry["busy"] = True
        elif trial.status in FAILED:
            entry["out"] = True
        else:
            entry["scores"].append(trial.score)
    return table
