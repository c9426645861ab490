"""One driver for every phase of a study (the search, the confirmation, a retrain's seeds), in
every role: what each does around its tuner is written once here.

A single process or a chief leads: it holds the study's lock for the phase, plans (`lead`),
trains or serves, and sums up (`finish`). A chief trains nothing: it serves the oracle to its
workers and prints a line for each trial a worker ends (`chief_line`). A worker trains what the
chief hands out (`join`) and says when there is no more. Every role reads the data once per
command (`Training`, passed in) and trains through `engine.tuner.search_to_the_end`.

To add a phase: a `Phase` subclass with `lead`, `join` and `finish` (and a `RunTuner` with its
planned-runs oracle, `engine.planned`, if its trials are planned runs); the command that runs it
calls `run()`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .. import cluster, locks
from ..config import Config
from ..console import printer
from ..files import read_json
from ..progress import EpochReporter, Progress
from ..study import Study
from ..training import Training
from .tuner import StudyTuner, search_to_the_end


class Phase:
    """A phase's steps around its tuner; `run` does them in the order its role needs."""

    lock = "search"  # the study's lock its leader holds (locks.held)
    what = "trials"  # what a worker says its chief has no more of

    def __init__(self, config: Config, study: Study, training: Training, out: TextIO = sys.stdout):
        self.config, self.study, self.training, self.out = config, study, training, out
        self.role = cluster.role()
        self.say = printer(out)
        self.progress: Progress | None = None  # set by `lead` or `join`
        self.epochs = config["retrain"]["epochs"]  # each trial's, where the oracle does not set them
        self.failure_limit: int | None = None  # the preset's key behind a stop for failures in a row
        self.callbacks: list = []  # added to every trial's fit, after the progress lines'
        self.tuner: StudyTuner | None = None  # once `run` has made it

    # What a phase fills in.
    def lead(self) -> StudyTuner:
        """A single process's or a chief's tuner, planned and described; under the lock."""
        raise NotImplementedError

    def join(self) -> StudyTuner:
        """A worker's tuner."""
        raise NotImplementedError

    def ended(self, tuner: StudyTuner, trial) -> None:
        """After each trial ends, in the process that holds the oracle (not a worker)."""

    def chief_line(self, tuner: StudyTuner, trial) -> str | None:
        """A chief's line for a trial a worker ended."""
        return None

    def finish(self, tuner: StudyTuner) -> Any:
        """Once every trial has ended (not on a worker): the phase's record and result."""
        return None

    def run(self) -> Any:
        if self.role == "worker":
            tuner = self.tuner = self.join()
            self.train(tuner)
            self.say(f"worker {tuner.tuner_id}: the chief has no more {self.what}; done")
            return None
        with locks.held(self.study.root, self.lock):
            tuner = self.tuner = self.lead()
            self._report_ends(tuner)
            self.train(tuner)
            return self.finish(tuner)

    def _report_ends(self, tuner: StudyTuner) -> None:
        def ended(trial) -> None:
            self.ended(tuner, trial)
            if self.role == "chief" and (line := self.chief_line(tuner, trial)):
                self.say(line)

        tuner.oracle.on_trial_ended = ended
        if self.role == "chief":
            tuner.oracle.verbose = 0  # Keras Tuner's own per-trial table: the phase's lines say it in one each

    def train(self, tuner: StudyTuner) -> None:
        search_to_the_end(tuner, self.training.train_set(self.config["study"]["seed"]), self.training.val_set(),
                          [EpochReporter(self.progress), *self.callbacks], self.epochs, self.out,
                          failure_limit=self.failure_limit)

    def runner(self, tuner: StudyTuner, trial) -> str:
        """Who ran `trial`, as a chief's lines name it."""
        return tuner.runlog.runner(trial.trial_id)


class WallClock:
    """Seconds a phase has spent over every run of its study: what its record at `path` says the
    earlier runs spent ("wall_time_s"), plus this process's since `start`."""

    def __init__(self, path: Path, fresh: bool = False):
        earlier = {} if fresh or not path.is_file() else read_json(path)
        self.earlier = float(earlier.get("wall_time_s") or 0.0)
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()

    def total(self) -> float:
        return round(self.earlier + time.monotonic() - self.started, 1)
