"""An oracle of planned runs: the confirmation's (finalists and baselines, each with its seeds) and
the retrains' (a configuration's seeds). Each run is a trial whose values are the configuration's
plus its bookkeeping (which configuration, which seed: `KEY`); Keras Tuner's engine hands them out
to a single process or to workers as it does any trial.

The plan lives in the oracle's state (oracle.json), so a resumed phase hands out what is left of
the same runs, and a kill loses only the run in flight.
"""

from __future__ import annotations

import time
from typing import Any

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from ..trials import direction
from .oracle import StudyOracle


class PlannedRunsOracle(StudyOracle, keras_tuner.Oracle):
    """Hands out each planned run (`units`) once, in order; then `after_plan` decides (STOPPED
    here; the confirmation's race plans more). Subclasses plan the runs and name `KEY`."""

    KEY: tuple[str, str]  # the values that tell runs apart: (which configuration, which seed)
    clock = staticmethod(time.monotonic)

    def __init__(self, objective: str, seed: int):
        # Failures are verdicts on a configuration here (a diverging one is not adopted), not a
        # broken setup: the runs are few, and every one is planned, so none stops the phase.
        super().__init__(objective=keras_tuner.Objective(objective, direction(objective)), seed=seed,
                         max_consecutive_failed_trials=10**6)
        self.units: list[dict[str, Any]] = []
        self.epochs: int | None = None

    def key(self, values: dict) -> tuple:
        return tuple(values[name] for name in self.KEY)

    def started(self) -> set[tuple]:
        """The keys of the runs handed out so far (in any state)."""
        return {self.key(t.hyperparameters.values) for t in self.trials.values()}

    def settled(self, unit: dict) -> bool:
        """Whether a planned run needs no training (the confirmation reuses some); none here."""
        return False

    def populate_space(self, trial_id):
        started = self.started()
        for unit in self.units:
            if self.key(unit) not in started and not self.settled(unit):
                return self.hand_out(trial_id, unit)
        return self.after_plan(trial_id)

    def hand_out(self, trial_id: str, unit: dict) -> dict:
        return {"status": TrialStatus.RUNNING, "values": dict(unit)}

    def after_plan(self, trial_id: str) -> dict:
        """What a tuner asking once every planned run is handed out gets."""
        return {"status": TrialStatus.STOPPED, "values": None}

    def expected_runs(self) -> int:
        """Runs to train: what progress counts on."""
        return sum(not self.settled(u) for u in self.units)

    def get_state(self):
        return {**super().get_state(), "units": self.units, "epochs": self.epochs}

    def set_state(self, state):
        super().set_state(state)
        self.units, self.epochs = state.get("units", []), state.get("epochs")
