"""Finalists, confirmed: the search's best configurations trained again before one is adopted.

A search ranks configurations by one short run each, with one seed, and its winner is often a
lucky draw (two study seeds of cpu.toml agreed on 1 of 13 values, and one's pick tested below the
paper's recipe). So when the search ends, its best `[confirm] finalists` configurations are trained
again from scratch with `[confirm] seeds` seeds each, for the retrain's epochs, and scored on
validation at their best epoch, as the search and retrain-best score; never on test. The preset's
`[confirm] baselines` (paper.toml: its `[baselines.paper]`, the AlexNet paper's recipe) are trained
beside them with the same seeds and epochs and may be adopted too: the search must beat the hand
recipe on equal terms before its answer replaces it, and a search that found nothing better adopts
the recipe rather than a lucky draw. The contender with the best mean is adopted into
best_hyperparameters.json, which retrain-best trains. A contender with a failed run (its loss
diverged) is not adopted.

Two seeds cannot see a configuration that collapses one run in three (the paper's recipe on
cpu.toml: 0.6939, 0.6841, 0.6038 on test; its two confirmation seeds drew 0.7125 and 0.7185 and it
was adopted over a configuration that tests 0.6884 +- 0.0048). So the lead is raced: once every
contender has run its `[confirm] seeds`, the best mean runs one more seed, and again, until it has
`[confirm] leader_seeds`; a leader that falls behind hands the lead on, and the new leader does the
same. The adopted contender has the best mean and never fewer than leader_seeds runs; a contender
whose first seeds were poor is not run again (a pick that is too cautious costs less than a lucky
one). With seeds = 2 that is one more run when the leader holds, where a third seed for everyone
would be one per contender; cpu.toml races from one seed (seeds = 1, leader_seeds = 3). On
workers, a worker with nothing else to do runs the leader's next seed beside the one in flight,
or once the leader has all its runs, the runner-up's (`next_race_run`): ready if the leader falls,
but only while the runs that decide it are young (SPECULATE_WITHIN); otherwise it waits. It also
waits while another contender's run is in its last quarter: its score may move the lead.

Each (finalist, seed) is a trial of a second Keras Tuner oracle, `FinalistsOracle`, kept in
results/<study>/finalists/: crash-safe and resumable like the search's (a kill loses the run in
flight), with a TensorBoard run and HParams session each (tensorboard/finalists/<trial>/seed<N>).
In a distributed study the chief serves it on its port + 1 once the search's trials are all done,
and the same workers train the finalists (Keras Tuner's engine hands out trials, whatever oracle
decides them).

A baseline's run does not depend on the search: where a study beside this one (the same results
folder) completed it with the same values, seed, epochs, data, network and backend, it is reused
(`reusable_baseline_runs`), recorded in finalists.json with where it came from, not trained again.

The seeds are CONFIRM_SEED + 1, + 2, ... in every study (the leader's extra ones continue them), so finalists of different studies (another
study seed) meet on equal terms (`pooled_best`), and none is a seed retrain-best trains with (the
study seed + i): the retrain that tests the adopted configuration is an independent run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from . import distribute, locks
from .config import Config
from .console import format_duration, printer, short
from .data import Source
from .errors import UserError
from .files import read_json, write_json_atomic
from .oracle import StudyOracle, locked
from .progress import EpochReporter, Progress
from .search import StudyTuner, model_epochs, ranked_trials, search_to_the_end
from .schedule import finalist_runs
from .space import SEED as SEED_VALUES
from .study import Study, same_training
from .training import Training
from .trials import (ENDED, FAILED, contender_name, direction, failure_reason, first_raced, rank_finalists, run_seeds,
                     searched_values)

CONFIRM_SEED = 1000
# A finalist's bookkeeping in its trials' values (see trials.is_bookkeeping). A baseline contender's
# TRIAL is its name, and BASELINE says it is one.
TRIAL, SEED, RANK, SCORE, EPOCHS, BASELINE = ("finalist/trial", "finalist/seed", "finalist/rank",
                                              "finalist/search_score", "finalist/search_epochs", "finalist/baseline")


def confirm_seeds(n: int) -> list[int]:
    return [CONFIRM_SEED + i for i in range(1, n + 1)]


def finalist_units(ranked: list, count: int, seeds: int, max_epochs: int) -> list[dict[str, Any]]:
    """The runs that confirm the best `count` configurations of `ranked` (completed search trials,
    best first): each finalist's values and its bookkeeping, once per seed, finalist by finalist.
    A configuration is a finalist once, under its best trial: Hyperband's promoted trials repeat
    their parent's."""
    finalists, seen = [], []
    for trial in ranked:
        values = searched_values(trial.hyperparameters.values)
        if values not in seen:
            seen.append(values)
            finalists.append((trial, values))
    units = []
    for rank, (trial, values) in enumerate(finalists[:count], 1):
        for seed in confirm_seeds(seeds):
            units.append({**values, TRIAL: trial.trial_id, SEED: seed, RANK: rank, SCORE: float(trial.score),
                          EPOCHS: model_epochs(trial.hyperparameters.values, max_epochs)})
    return units


def baseline_units(config: Config, seeds: int) -> list[dict[str, Any]]:
    """The runs that train the preset's `[confirm] baselines` beside the finalists: each baseline's
    values over the seed's (as `make baseline` trains it), once per confirmation seed. Rank 0: on
    an equal mean the known recipe is kept."""
    units = []
    for name in config["confirm"]["baselines"]:
        values = {**{k: SEED_VALUES[k] for k in config.space}, **config["baselines"][name]}
        for seed in confirm_seeds(seeds):
            # No SCORE or EPOCHS (it was not searched): Keras Tuner's gRPC messages carry no None values.
            units.append({**values, TRIAL: name, SEED: seed, RANK: 0, BASELINE: name})
    return units


def reusable_baseline_runs(study: Study, config: Config) -> dict[tuple, dict]:
    """Completed runs of the preset's baselines in the studies beside `study` (the same results
    folder) that trained what this confirmation would: the same data and network, epochs,
    objective and backend (the values and seed are checked per run, `FinalistsOracle.take_reused`).

    A baseline does not depend on the search, and on one-thread workers its run repeats digit for
    digit across studies (the recipe's 0.7055 and 0.6390 on seeds 1001 and 1002, in each of three
    study seeds): a second study of a preset takes its runs instead of a round of training. The
    first study beside it wins (by name); a sibling whose files cannot be read is passed over."""
    from . import backend
    from .study import search_identity

    mine, runs = search_identity(config), {}
    names = set(config["confirm"]["baselines"])
    siblings = study.root.parent.iterdir() if study.root.parent.is_dir() else ()
    for sibling in [Study(p) for p in sorted(siblings) if p.is_dir() and p != study.root]:
        _, identity = sibling.saved_identity()
        try:
            summary = read_json(sibling.finalists_file)
            theirs = read_json(sibling.root / "versions.json").get("backend")
        except (OSError, UserError, AttributeError):
            continue
        if (identity is None or same_training(mine, identity) or theirs != backend.version() or summary.get("epochs") !=
                config["retrain"]["epochs"] or summary.get("objective") != config["search"]["objective"]):
            continue
        for f in summary.get("finalists", []):
            if f.get("baseline") not in names:
                continue
            for r in f["runs"]:
                if r.get("status") == "COMPLETED" and r.get("score") is not None:
                    runs.setdefault((f["baseline"], r["seed"]), {
                        "trial": f["baseline"], "seed": r["seed"], "score": r["score"], "best_epoch": r.get("best_epoch"),
                        "hyperparameters": f["hyperparameters"],
                        "from": r.get("reused_from") or f"{sibling.name}/{r['run']}"})
    return runs


def contender(values: dict) -> str:
    """How progress lines name a confirmation run's configuration."""
    return f"baseline {values[BASELINE]}" if values.get(BASELINE) else f"finalist {values[RANK]}"


class FinalistsOracle(StudyOracle, keras_tuner.Oracle):
    """Hands out each planned (finalist, seed) run once, in order; then races the lead
    (`next_race_run`) until the leader has `leader_seeds` runs; then stops.

    The plan lives in the oracle's state (oracle.json), so a resumed confirmation hands out what is
    left of the same runs; `plan` adds runs (a study extended, a larger [confirm]) and never drops
    one that ran, and the race's runs join the plan as they are handed out. `KEY` names the values
    that tell runs apart (retrain.RetrainOracle has its own).
    """

    KEY = (TRIAL, SEED)
    leader_seeds = 0  # `plan` sets it: the preset's [confirm] leader_seeds
    # _confirm sets it: (TRIAL, SEED) -> a completed run of the same baseline in a sibling study
    # (`reusable_baseline_runs`). Not saved: looked up again at every start.
    reusable: dict[tuple, dict] = {}
    on_reused = None  # called with each run taken from `reusable` after `plan`
    # A worker runs a race run beside the runs that decide whether it is needed (the leader's last
    # ones, or its own contender's in flight) only if those were handed out less than this share of
    # a run ago: an unneeded run holds the study's end by up to a run (4 minutes once, handed out as
    # the leader's run was ending; 7 once, the next seed of a leader that fell on the one in
    # flight), a needed one saves up to a run. A quarter is where the two cancel at 3 in 4.
    # Mirrored, the same share decides when a worker waits for a rival's run about to end (its
    # last quarter) instead of running the leader's next seed: waiting costs at most that quarter
    # if the lead holds, and saves up to a round if it changes (study seed 2 at eb0634d: the
    # leader-to-be's first run ended 43 s after the other's, whose next seed took the round).
    SPECULATE_WITHIN = 0.25
    clock = staticmethod(time.monotonic)

    def __init__(self, objective: str, seed: int):
        # Failures are verdicts on finalists here (a diverging configuration is not adopted), not a
        # broken setup: the runs are few, and every one is planned, so none stops the confirmation.
        super().__init__(objective=keras_tuner.Objective(objective, direction(objective)), seed=seed,
                         max_consecutive_failed_trials=10**6)
        self.units: list[dict[str, Any]] = []
        self.epochs: int | None = None
        self.reused: dict[tuple, dict] = {}  # (TRIAL, SEED) -> the reusable run taken for it
        # This process's view of run lengths, for SPECULATE_WITHIN: when each trial was handed out,
        # and how long each completed one took. Not saved: a resumed chief speculates once it knows.
        self.handed: dict[str, float] = {}
        self.took: list[float] = []

    def plan(self, units: list[dict[str, Any]], epochs: int, leader_seeds: int = 0) -> None:
        if self.epochs is not None and self.epochs != epochs and self.trials:
            raise UserError(f"this study's finalists were confirmed at {self.epochs} epochs and [retrain] epochs is "
                            f"now {epochs}: their scores would not compare. Set it back to {self.epochs}, or delete "
                            f"{self._project_dir} to confirm again at {epochs}")
        known = {self.key(u): u for u in self.units}
        for unit in units:
            if self.key(unit) in known and searched_values(known[self.key(unit)]) != searched_values(unit):
                raise UserError(f"{contender(unit)}'s values changed since this study's confirmation planned its runs "
                                f"(the preset's [baselines.{unit[TRIAL]}]?): its scores would mix two configurations. "
                                f"Set them back, or delete {self._project_dir} to confirm again")
        self.units += [u for u in units if self.key(u) not in known]
        self.epochs, self.leader_seeds = epochs, leader_seeds
        started = {self.key(t.hyperparameters.values) for t in self.trials.values()}
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

    def key(self, values: dict) -> tuple:
        return tuple(values[name] for name in self.KEY)

    def populate_space(self, trial_id):
        started = {self.key(t.hyperparameters.values) for t in self.trials.values()}
        for unit in self.units:
            if self.key(unit) not in started and self.key(unit) not in self.reused:
                self.handed[trial_id] = self.clock()
                return {"status": TrialStatus.RUNNING, "values": dict(unit)}
        while (unit := self.next_race_run()) is not None:
            self.units.append(unit)  # saved with the trial (Keras Tuner saves the oracle then)
            if not self.take_reused(unit):
                self.handed[trial_id] = self.clock()
                return {"status": TrialStatus.RUNNING, "values": dict(unit)}
            self.save()  # no trial to save it with: the reused run's score decides the next
        if self.leader_seeds and any(t.status not in ENDED for t in self.trials.values()):
            return {"status": TrialStatus.IDLE, "values": None}  # the lead is decided once those end
        return {"status": TrialStatus.STOPPED, "values": None}

    @locked
    def end_trial(self, trial):
        super().end_trial(trial)
        known = self.trials.get(trial.trial_id)
        started = self.handed.get(trial.trial_id)
        if known is not None and known.status == "COMPLETED" and started is not None:
            self.took.append(self.clock() - started)
            del self.handed[trial.trial_id]

    def _just_started(self, entries: list[dict]) -> bool:
        """Whether every run of `entries` still training was handed out here less than
        SPECULATE_WITHIN of a typical run ago (the median of those completed here); False when
        that is not known."""
        if not self.took:
            return False
        trials = {self.key(t.hyperparameters.values): t for t in self.trials.values() if t.status not in ENDED}
        ages = [self.clock() - self.handed.get(trials[self.key(u)].trial_id, -math.inf)
                for e in entries for u in e["units"] if self.key(u) in trials]
        return all(age < self.SPECULATE_WITHIN * statistics.median(self.took) for age in ages)

    def _ending(self, entries: list[dict]) -> bool:
        """Whether a run of `entries` still training was handed out here more than
        1 - SPECULATE_WITHIN of a typical run ago: it ends within about a quarter of a run.
        False when that is not known (a run handed out before this process started)."""
        if not self.took:
            return False
        trials = {self.key(t.hyperparameters.values): t for t in self.trials.values() if t.status not in ENDED}
        ages = [self.clock() - self.handed[trials[self.key(u)].trial_id] for e in entries for u in e["units"]
                if self.key(u) in trials and trials[self.key(u)].trial_id in self.handed]
        return any(age >= (1 - self.SPECULATE_WITHIN) * statistics.median(self.took) for age in ages)

    def standings(self) -> dict[str, dict]:
        """Each contender's planned runs, completed scores, and whether a run is still to end
        ("busy") or failed ("out": not adopted, so not raced)."""
        trials = {self.key(t.hyperparameters.values): t for t in self.trials.values()}
        table: dict[str, dict] = {}
        for unit in self.units:
            entry = table.setdefault(unit[TRIAL], {"units": [], "scores": [], "busy": False, "out": False})
            entry["units"].append(unit)
            trial = trials.get(self.key(unit))
            if self.key(unit) in self.reused:
                entry["scores"].append(self.reused[self.key(unit)]["score"])
            elif trial is None or trial.status not in ENDED:
                entry["busy"] = True
            elif trial.status in FAILED:
                entry["out"] = True
            else:
                entry["scores"].append(trial.score)
        return table

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
        if not self.leader_seeds:  # no race (a plan without one, retrain.RetrainOracle's)
            return None
        sign = 1.0 if self.objective.direction == "max" else -1.0

        def mean(entry) -> float:  # higher is better, whichever the objective's direction
            return sign * statistics.fmean(entry["scores"])

        scored = [e for e in self.standings().values() if not e["out"] and e["scores"]]
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
        if pending and not self._just_started(pending):
            return None  # they end soon: wait for them (SPECULATE_WITHIN)
        rivals = [e for e in self.standings().values() if e is not best and e["busy"] and not e["out"]]
        if self._ending(rivals):
            return None  # a score about to come in may put another contender ahead
        return {**best["units"][-1], SEED: CONFIRM_SEED + len(best["units"]) + 1}

    def expected_runs(self) -> int:
        """Runs to train, planned so far (less those reused) plus the fewest the race still adds:
        what progress counts on. More when the lead changes hands."""
        planned = len(self.units) - len(self.reused)
        if not self.leader_seeds:
            return planned
        raced = max((len(e["units"]) for e in self.standings().values() if not e["out"]), default=self.leader_seeds)
        return planned + max(0, self.leader_seeds - raced)

    def get_state(self):
        return {**super().get_state(), "units": self.units, "epochs": self.epochs, "leader_seeds": self.leader_seeds,
                "reused": list(self.reused.values())}

    def set_state(self, state):
        super().set_state(state)
        self.units, self.epochs = state.get("units", []), state.get("epochs")
        self.leader_seeds = state.get("leader_seeds", 0)  # `plan` sets the preset's again
        self.reused = {(r["trial"], r["seed"]): r for r in state.get("reused", [])}


class FinalistTuner(StudyTuner):
    """Trains the finalists' runs: each from scratch for the retrain's epochs, seeded by its run's
    seed (weights and data order, as retrain-best seeds a run), with the retrain's schedule horizon."""

    def __init__(self, training: Training, config: Config, study: Study, progress: Progress | None = None,
                 oracle: FinalistsOracle | None = None, project: str | None = None, overwrite: bool = False):
        oracle = oracle or FinalistsOracle(config["search"]["objective"], config["study"]["seed"])
        super().__init__(training.hypermodel(horizon=config["retrain"]["epochs"]), oracle, study,
                         project or study.finalists_dir.name, config["distributed"]["lease_s"],
                         overwrite=overwrite, distribution_strategy=training.strategy)
        self.epochs = config["retrain"]["epochs"]
        self.seeds = config["confirm"]["seeds"]
        self.progress = progress
        self.names = list(config.space)  # the preset's order: values come back from JSON sorted

    def trial_seed(self, trial) -> int:
        return int(trial.hyperparameters.values[SEED])

    def run_name(self, trial) -> str:
        v = trial.hyperparameters.values
        return f"finalists/{v[TRIAL]}/seed{v[SEED]}"

    def run_trial(self, trial, train, *args, **kwargs):
        # The run's own data order and augmentation draws, as retrain-best's run of that seed has.
        return super().run_trial(trial, dataclasses.replace(train, seed=self.trial_seed(trial)), *args, **kwargs)

    def report_begin(self, trial) -> None:
        if self.progress:
            v = trial.hyperparameters.values
            shown = " ".join(f"{k}={short(v[k])}" for k in self.names if k in v)
            origin = (f"the preset's [baselines.{v[BASELINE]}]" if v.get(BASELINE) else
                      f"search trial {v[TRIAL]}, {self.oracle.objective.name} {v[SCORE]:.4f} after {v[EPOCHS]} epochs")
            if v[SEED] > CONFIRM_SEED + self.seeds:
                origin += "; an extra seed, racing for the lead"
            run = int(trial.trial_id) + 1
            self.progress.begin(f"{contender(v)} seed {v[SEED]}", 0, self.epochs,
                                f"(run {run}/{max(run, self.progress.total_units)}; {origin})\n    {shown}")

    def report_end(self, trial) -> None:
        if self.progress:
            ended = self.oracle.get_trial(trial.trial_id)
            if ended.status == "COMPLETED":
                result = f"best {self.oracle.objective.name} {ended.score:.4f}"
            else:
                result = f"{ended.status.lower()}: {failure_reason(ended.message)}; it is not adopted"
            self.progress.end(self.epochs, result)


def run_finalists(config: Config, study: Study, source: Source, search_oracle=None, out: TextIO = sys.stdout) -> dict | None:
    """Confirm the study's finalists (or what is left of them), then adopt one.

    `search_oracle`: the finished search's (the chief's or a single process's; a worker gets its
    runs from the chief). Returns finalists.json's content, or None on a worker.
    """
    role = distribute.role()
    c = config["confirm"]
    if c["finalists"] == 0:
        return None if role == "worker" else adopt(study, config, search_best=ranked_trials(search_oracle)[:1], out=out)
    ranked = ranked_trials(search_oracle) if role != "worker" else []
    if role != "worker" and not ranked:
        raise UserError(f"study {study.name} has no completed trial to confirm; every trial failed (see the trial "
                        f"lines), so nothing can be adopted")
    training = Training.prepare(config, source, several_gpus=role != "chief")
    # The search's lock again (a worker is part of its chief's): two confirmations would interleave.
    with contextlib.nullcontext() if role == "worker" else locks.held(study.root, "search"):
        return _confirm(config, study, training, ranked, role, out)


def _confirm(config: Config, study: Study, training: Training, ranked: list, role: str, out: TextIO) -> dict | None:
    say = printer(out)
    c = config["confirm"]
    if role != "single":
        # The search's oracle has its port; the finalists' is served beside it.
        os.environ[distribute.ORACLE_PORT] = str(distribute.finalists_port(int(os.environ[distribute.ORACLE_PORT])))
    epochs = config["retrain"]["epochs"]
    units = finalist_units(ranked, c["finalists"], c["seeds"], config["search"]["max_epochs"])
    units += baseline_units(config, c["seeds"])
    race = max(0, c["leader_seeds"] - c["seeds"])  # the fewest runs the race for the lead adds
    reusable = reusable_baseline_runs(study, config)
    # A worker has no ranking to plan from (the chief plans): it counts what the preset plans, less
    # the baseline runs the chief will reuse (those it can see: on the chief's machine, all).
    runs = len(units) + race if role != "worker" else \
        finalist_runs(config) - sum((u[TRIAL], u[SEED]) in reusable for u in units if u.get(BASELINE))
    progress = Progress(runs, None if role == "worker" else runs * epochs, out=out)
    tuner = FinalistTuner(training, config, study, progress=progress if role != "chief" else None)
    if role != "worker":
        tuner.oracle.reusable = reusable
        tuner.oracle.plan(units, epochs, c["leader_seeds"])

        def count() -> None:
            progress.total_units = tuner.oracle.expected_runs()
            progress.total_epochs = progress.total_units * epochs

        count()
        done = [t for t in tuner.oracle.trials.values() if t.status in ENDED]
        progress.epochs_done = len(done) * epochs
        runs = progress.total_units
        finalists = len({u[TRIAL] for u in tuner.oracle.units if not u.get(BASELINE)})
        baselines = list(dict.fromkeys(u[TRIAL] for u in tuner.oracle.units if u.get(BASELINE)))
        say(f"\nconfirming {finalists} finalists" + (f" against baseline {', '.join(baselines)}" if baselines else "")
            + f": each trained again with {_seeds_text(confirm_seeds(c['seeds']))} for {epochs} epochs and scored on "
            f"validation"
            + (f", then the best mean again with {_seeds_text(confirm_seeds(c['leader_seeds'])[c['seeds']:])} "
               f"(a leader that falls behind hands the lead on)" if race else "")
            + (f"; {len(done)} of {runs} runs done" if done else "")
            + ("" if role == "single" else f" (finalists' oracle on port {os.environ[distribute.ORACLE_PORT]})"))
        for run in tuner.oracle.reused.values():
            say(_reused_line(run))
        tuner.oracle.on_reused = lambda run: say(_reused_line(run))  # a race run, from here on
        clock = _WallClock(study.finalists_file)

        def ended(trial):
            write_finalists(study, tuner.oracle, epochs, wall=clock.total())
            count()
            if role == "chief":  # the workers print the epochs; the chief, each run as it ends
                runner = tuner.runlog.runner(trial.trial_id)
                v, score = trial.hyperparameters.values, f"{trial.score:.4f}" if trial.status == "COMPLETED" else \
                    failure_reason(trial.message)
                say(f"{contender(v)} seed {v[SEED]} {trial.status.lower()} ({runner}): {score}")

        tuner.oracle.on_trial_ended = ended
        clock.start()
    tuner.save()
    started = time.monotonic()
    search_to_the_end(tuner, training.train_set(config["study"]["seed"]), training.val_set(), [EpochReporter(progress)],
                      epochs, out)
    if role == "worker":
        say(f"worker {tuner.tuner_id}: the chief has no more finalists to train; done")
        return None
    summary = write_finalists(study, tuner.oracle, epochs, finished=True, wall=clock.total())
    say(f"finalists confirmed in {format_duration(time.monotonic() - started)}:\n" + finalists_table(summary))
    return adopt(study, config, summary=summary, out=out)


def _seeds_text(seeds: list[int]) -> str:
    return ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))


def _reused_line(run: dict) -> str:
    return (f"baseline {run['trial']} seed {run['seed']}: {run['score']:.4f}, reused from {run['from']} (the same "
            f"values, seed, epochs, data, network and backend; not trained again)")


class _WallClock:
    """Seconds spent on a study's finalists over every run of it: what finalists.json recorded, plus
    this process's since `start`."""

    def __init__(self, path: Path):
        self.earlier = float((read_json(path) if path.is_file() else {}).get("wall_time_s") or 0.0)
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()

    def total(self) -> float:
        return round(self.earlier + time.monotonic() - self.started, 1)


def write_finalists(study: Study, oracle: FinalistsOracle, epochs: int, finished: bool = False,
                    wall: float | None = None) -> dict:
    """finalists.json: each finalist's runs (seed, status, validation score) and their mean and
    standard deviation, best mean first; `finished` once every planned run has ended."""
    runs: dict[str, list] = {}
    trials = {oracle.key(t.hyperparameters.values): t for t in oracle.trials.values()}
    finalists = {}
    for unit in oracle.units:
        trial = trials.get(oracle.key(unit))
        reused = oracle.reused.get(oracle.key(unit))
        finalists.setdefault(unit[TRIAL], {
            "study": study.name, "trial_id": unit[TRIAL], "rank": unit[RANK], "search_score": unit.get(SCORE),
            "search_epochs": unit.get(EPOCHS), "hyperparameters": searched_values(unit),
            **({"baseline": unit[BASELINE]} if unit.get(BASELINE) else {}),
        })
        runs.setdefault(unit[TRIAL], []).append({
            "seed": unit[SEED], "run": None, "status": "COMPLETED", "score": reused["score"],
            "best_epoch": reused["best_epoch"], "reused_from": reused["from"],
        } if reused else {
            "seed": unit[SEED], "run": trial.trial_id if trial else None,
            "status": trial.status if trial else "PLANNED",
            "score": trial.score if trial is not None and trial.status == "COMPLETED" else None,
            "best_epoch": int(trial.best_step) + 1 if trial is not None and trial.best_step is not None else None,
        })
    for trial_id, entry in finalists.items():
        scores = [r["score"] for r in runs[trial_id] if r["score"] is not None]
        entry["runs"] = runs[trial_id]
        entry["complete"] = len(scores) == len(runs[trial_id])
        entry["mean"] = statistics.fmean(scores) if scores else None
        entry["std"] = statistics.stdev(scores) if len(scores) > 1 else None
    # "seeds": those every contender ran, where their means compare (the race adds some: each
    # finalist's runs say which).
    every = set.intersection(*({r["seed"] for r in r_} for r_ in runs.values())) if runs else set()
    summary = {"objective": oracle.objective.name, "epochs": epochs, "finished": finished, "wall_time_s": wall,
               "seeds": sorted(every), "leader_seeds": oracle.leader_seeds,
               "finalists": rank_finalists(list(finalists.values()), oracle.objective.direction)}
    write_json_atomic(study.finalists_file, summary)
    return summary


def finalists_table(summary: dict) -> str:
    seeds = run_seeds(summary["finalists"])
    header = ["finalist", "search score", *(f"seed {s}" for s in seeds), "mean", "std"]
    rows = []
    for f in summary["finalists"]:
        by_seed = {r["seed"]: r for r in f["runs"]}
        cells = ["-" if r is None else f"{r['score']:.4f}" if r.get("score") is not None else r["status"].lower()
                 for r in (by_seed.get(s) for s in seeds)]
        origin = "baseline" if f.get("baseline") else f"{f['search_score']:.4f} ({f['search_epochs']} ep)"
        rows.append([f"{f['study']}/{f['trial_id']}", origin, *cells,
                     f"{f['mean']:.4f}" if f["complete"] else "-", f"{f['std']:.4f}" if f["std"] is not None else "-"])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header] + rows)


def adopt(study: Study, config: Config, summary: dict | None = None, search_best: list = (),
          out: TextIO = sys.stdout) -> dict:
    """Write best_hyperparameters.json: the best complete finalist of `summary`, or (no
    confirmation) the search's best trial. UserError when no finalist completed all its runs."""
    say = printer(out)
    objective = config["search"]["objective"]
    if summary is None:
        if not search_best:
            raise UserError(f"study {study.name} has no completed trial yet; run or resume `make search` until one "
                            f"finishes")
        best = search_best[0]
        adopted = {"study": study.name, "trial_id": best.trial_id, objective: best.score,
                   "epochs_trained": model_epochs(best.hyperparameters.values, config["search"]["max_epochs"]),
                   "hyperparameters": searched_values(best.hyperparameters.values),
                   "adopted_by": "the search's best score ([confirm] finalists = 0: not confirmed)"}
    else:
        best = first_raced(summary["finalists"], summary.get("leader_seeds", 0))
        if best is None:
            raise UserError(f"no finalist of study {study.name} completed all its runs (see {study.finalists_file}); "
                            f"nothing was adopted. Check the failures, widen [confirm] finalists, and rerun the search")
        searched = sum(not f.get("baseline") for f in summary["finalists"])
        against = [f["trial_id"] for f in summary["finalists"] if f.get("baseline")]
        adopted = {"study": best["study"], "trial_id": best["trial_id"], objective: best["search_score"],
                   "epochs_trained": best["search_epochs"], "hyperparameters": best["hyperparameters"],
                   "adopted_by": f"best mean {objective} of {searched} finalists"
                                 + (f" and baseline {', '.join(against)}" if against else "")
                                 + (": no finalist beat this baseline" if best.get("baseline") else ""),
                   **({"baseline": best["baseline"]} if best.get("baseline") else {}),
                   "confirmed": {"seeds": [r["seed"] for r in best["runs"]], "epochs": summary["epochs"],
                                 "scores": [r["score"] for r in best["runs"]], "mean": best["mean"], "std": best["std"]}}
    write_json_atomic(study.adopted_file, adopted)
    values = " ".join(f"{k}={short(v)}" for k, v in adopted["hyperparameters"].items())
    say(f"adopted {contender_name(adopted)} ({adopted['adopted_by']}) into {study.adopted_file}:\n    {values}\n"
        f"next: make retrain-best CONFIG={config.path}" + ("" if study.name == config.name else f" STUDY={study.name}"))
    return adopted


def read_adopted(study: Study) -> dict:
    """best_hyperparameters.json, or a UserError that says how to get one."""
    if not study.adopted_file.is_file():
        raise UserError(f"study {study.name} has not adopted a configuration yet: its search or its finalists' "
                        f"confirmation has not finished. Rerun the same `make search` command to finish it")
    return read_json(study.adopted_file)


def pooled_best(study: Study, others: list[Study]) -> tuple[dict, list[dict]]:
    """The best confirmed finalist of `study` and `others` (studies of the same space, data and
    network: another study seed), and every finalist of the pool, best first.

    Every study's finalists were confirmed with the same seeds and epochs, so their means compare
    directly; UserError when a study is not confirmed, or was searched or confirmed otherwise."""
    _, mine = study.saved_identity()
    pool, settings = [], None
    for member in [study, *others]:
        _, identity = member.saved_identity()
        if identity is None:
            raise UserError(f"--pool {member.name}: no study at {member.root}")
        diff = same_training(mine, identity, ("space", "data", "model"))
        if diff:
            raise UserError(f"--pool {member.name}: its search space, data or network differ from {study.name}'s "
                            f"(in {', '.join(diff[:4])}); pool only studies of the same preset")
        summary = read_json(member.finalists_file) if member.finalists_file.is_file() else None
        if not summary or not summary.get("finished"):
            raise UserError(f"--pool {member.name}: its finalists' confirmation has not finished; rerun its "
                            f"`make search` (the same command resumes it)")
        theirs = (summary["objective"], summary["epochs"], summary["seeds"], summary.get("leader_seeds", 0))
        if settings is not None and theirs != settings:
            raise UserError(f"--pool {member.name}: its finalists were confirmed with {theirs[0]} over seeds "
                            f"{theirs[2]} at {theirs[1]} epochs, leader raced to {theirs[3]} seeds; {study.name}'s "
                            f"with {settings[0]} over seeds {settings[2]} at {settings[1]} epochs, raced to "
                            f"{settings[3]}: the scores do not compare")
        settings = theirs
        pool += [{**f, "study": member.name} for f in summary["finalists"]]  # the folder's name, even if renamed
    ranked = rank_finalists(pool, direction(settings[0]))
    best = first_raced(ranked, settings[3])
    if best is None:
        raise UserError(f"no finalist of {', '.join(s.name for s in [study, *others])} completed all its runs")
    return best, ranked
