"""The confirmation as a phase on the engine's driver: its tuner (each run a finalist's or a
baseline's seed, trained as retrain-best trains), its progress and chief lines, and its record,
finalists.json, rewritten after every run; when every run has ended, the best mean is adopted
(`adoption.adopt`).

Each (contender, seed) is a trial of its own Keras Tuner oracle (`race.FinalistsOracle`), kept in
results/<study>/finalists/: crash-safe and resumable like the search's (a kill loses the run in
flight), with a TensorBoard run and HParams session each (tensorboard/finalists/<trial>/seed<N>).
In a distributed study the chief serves it on its port + 1 once the search's trials are all done,
and the same workers train the finalists.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import TextIO

from .. import cluster
from ..adoption import adopt, finalists_table
from ..config import Config
from ..console import format_duration, short
from ..engine.phase import Phase, WallClock
from ..engine.tuner import RunTuner, ranked_trials
from ..errors import UserError
from ..files import write_json_atomic
from ..progress import Progress
from ..schedule import finalist_runs, race_runs
from ..study import Study
from ..training import Training
from ..trials import ENDED, failure_reason, rank_finalists, searched_values
from .contenders import (BASELINE, CONFIRM_SEED, CONTENDER, CONTENDER_SEED, EPOCHS, RANK, SCORE, baseline_units,
                         confirm_seeds, contender, finalist_units, reusable_baseline_runs)
from .race import FinalistsOracle


class FinalistTuner(RunTuner):
    """Trains the confirmation's runs, with a line for each that names where its values came from."""

    def __init__(self, training: Training, config: Config, study: Study, progress: Progress | None = None):
        oracle = FinalistsOracle(config["search"]["objective"], config["study"]["seed"])
        super().__init__(training, config, study, oracle, study.finalists_dir.name, config["confirm"]["epochs"],
                         progress)
        self.seeds = config["confirm"]["seeds"]
        self.names = list(config.space)  # the preset's order: values come back from JSON sorted

    def run_name(self, trial) -> str:
        v = trial.hyperparameters.values
        return f"finalists/{v[CONTENDER]}/seed{v[CONTENDER_SEED]}"

    def report_begin(self, trial) -> None:
        if self.progress:
            v = trial.hyperparameters.values
            shown = " ".join(f"{k}={short(v[k])}" for k in self.names if k in v)
            origin = (f"the preset's [baselines.{v[BASELINE]}]" if v.get(BASELINE) else
                      f"search trial {v[CONTENDER]}, {self.oracle.objective.name} {v[SCORE]:.4f} after "
                      f"{v[EPOCHS]} epochs")
            if v[CONTENDER_SEED] > CONFIRM_SEED + self.seeds:
                origin += "; an extra seed, racing for the lead"
            run = int(trial.trial_id) + 1
            self.progress.begin(f"{contender(v)} seed {v[CONTENDER_SEED]}", 0, self.epochs,
                                f"(run {run}/{max(run, self.progress.total_units)}; {origin})\n    {shown}")

    def report_end(self, ended) -> None:
        if self.progress:
            if ended.status == "COMPLETED":
                result = f"best {self.oracle.objective.name} {ended.score:.4f}"
            else:
                result = f"{ended.status.lower()}: {failure_reason(ended.message)}; it is not adopted"
            self.progress.end(self.epochs, result)


class ConfirmPhase(Phase):
    """The confirmation's steps on the engine's driver (`engine.phase.Phase`)."""

    what = "finalists to train"

    def __init__(self, config: Config, study: Study, training: Training, ranked: list, out: TextIO = sys.stdout):
        super().__init__(config, study, training, out)
        c = config["confirm"]
        self.epochs = c["epochs"]
        self.units_planned = finalist_units(ranked, c["finalists"], c["seeds"], config["search"]["max_epochs"])
        self.units_planned += baseline_units(config, c["seeds"])
        self.reusable = reusable_baseline_runs(study, config, training.source.describe())
        self.clock = WallClock(study.finalists_file)
        self.started = time.monotonic()

    def run(self):
        if self.role != "single":
            # The search's oracle has its port; the finalists' is served beside it.
            os.environ[cluster.ORACLE_PORT] = str(cluster.finalists_port(int(os.environ[cluster.ORACLE_PORT])))
        return super().run()

    def join(self) -> FinalistTuner:
        # A worker has no ranking to plan from (the chief plans): it counts what the preset plans, less
        # the baseline runs the chief will reuse (those it can see: on the chief's machine, all).
        runs = finalist_runs(self.config) - sum((u[CONTENDER], u[CONTENDER_SEED]) in self.reusable
                                                for u in self.units_planned if u.get(BASELINE))
        self.progress = Progress(runs, None, out=self.out)
        tuner = FinalistTuner(self.training, self.config, self.study, progress=self.progress)
        tuner.save()
        return tuner

    def lead(self) -> FinalistTuner:
        c, epochs = self.config["confirm"], self.epochs
        runs = len(self.units_planned) + race_runs(self.config)
        self.progress = Progress(runs, runs * epochs, out=self.out)
        tuner = FinalistTuner(self.training, self.config, self.study,
                              progress=self.progress if self.role != "chief" else None)
        oracle = tuner.oracle
        oracle.reusable = self.reusable
        oracle.plan(self.units_planned, epochs, c["leader_seeds"])
        self._count(oracle)
        done = [t for t in oracle.trials.values() if t.status in ENDED]
        self.progress.epochs_done = len(done) * epochs
        self.say(self._plan_line(oracle, len(done)))
        for run in oracle.reused.values():
            self.say(_reused_line(run))
        oracle.on_reused = lambda run: self.say(_reused_line(run))  # a race run, from here on
        self.clock.start()
        tuner.save()
        self.started = time.monotonic()
        return tuner

    def _count(self, oracle: FinalistsOracle) -> None:
        self.progress.total_units = oracle.expected_runs()
        self.progress.total_epochs = self.progress.total_units * self.epochs

    def _plan_line(self, oracle: FinalistsOracle, done: int) -> str:
        c, epochs = self.config["confirm"], self.epochs
        finalists = len({u[CONTENDER] for u in oracle.units if not u.get(BASELINE)})
        baselines = list(dict.fromkeys(u[CONTENDER] for u in oracle.units if u.get(BASELINE)))
        return (f"\nconfirming {finalists} finalists" + (f" against baseline {', '.join(baselines)}" if baselines else "")
                + f": each trained again with {_seeds_text(confirm_seeds(c['seeds']))} for {epochs} "
                f"epoch{'s' * (epochs != 1)} and scored on validation"
                + (f", then the best mean again with {_seeds_text(confirm_seeds(c['leader_seeds'])[c['seeds']:])} "
                   f"(a leader that falls behind hands the lead on)" if race_runs(self.config) else "")
                + (f"; {done} of {self.progress.total_units} runs done" if done else "")
                + ("" if self.role == "single" else f" (finalists' oracle on port {os.environ[cluster.ORACLE_PORT]})"))

    def ended(self, tuner: FinalistTuner, trial) -> None:
        write_finalists(self.study, tuner.oracle, self.epochs, wall=self.clock.total())
        self._count(tuner.oracle)

    def chief_line(self, tuner: FinalistTuner, trial) -> str:
        # The workers print the epochs; the chief, each run as it ends.
        v = trial.hyperparameters.values
        score = f"{trial.score:.4f}" if trial.status == "COMPLETED" else failure_reason(trial.message)
        return f"{contender(v)} seed {v[CONTENDER_SEED]} {trial.status.lower()} ({self.runner(tuner, trial)}): {score}"

    def finish(self, tuner: FinalistTuner) -> dict:
        summary = write_finalists(self.study, tuner.oracle, self.epochs, finished=True, wall=self.clock.total())
        self.say(f"finalists confirmed in {format_duration(time.monotonic() - self.started)}:\n"
                 + finalists_table(summary))
        return adopt(self.study, self.config, summary=summary, out=self.out)


def run_finalists(config: Config, study: Study, training: Training, search_oracle=None,
                  out: TextIO = sys.stdout) -> dict | None:
    """Confirm the study's finalists (or what is left of them), then adopt one.

    `search_oracle`: the finished search's (the chief's or a single process's; a worker gets its
    runs from the chief). Returns best_hyperparameters.json's content, or None on a worker.
    """
    role = cluster.role()
    if config["confirm"]["finalists"] == 0:
        return None if role == "worker" else adopt(study, config, search_best=ranked_trials(search_oracle)[:1], out=out)
    ranked = ranked_trials(search_oracle) if role != "worker" else []
    if role != "worker" and not ranked:
        raise UserError(f"study {study.name} has no completed trial to confirm; every trial failed (see the trial "
                        f"lines), so nothing can be adopted")
    return ConfirmPhase(config, study, training, ranked, out).run()


def _seeds_text(seeds: list[int]) -> str:
    return ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))


def _reused_line(run: dict) -> str:
    return (f"baseline {run['trial']} seed {run['seed']}: {run['score']:.4f}, reused from {run['from']} (the same "
            f"values, seed, epochs, data, network and backend; not trained again)")


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
        finalists.setdefault(unit[CONTENDER], {
            "study": study.name, "trial_id": unit[CONTENDER], "rank": unit[RANK], "search_score": unit.get(SCORE),
            "search_epochs": unit.get(EPOCHS), "hyperparameters": searched_values(unit),
            **({"baseline": unit[BASELINE]} if unit.get(BASELINE) else {}),
        })
        runs.setdefault(unit[CONTENDER], []).append({
            "seed": unit[CONTENDER_SEED], "run": None, "status": "COMPLETED", "score": reused["score"],
            "best_epoch": reused["best_epoch"], "reused_from": reused["from"],
        } if reused else {
            "seed": unit[CONTENDER_SEED], "run": trial.trial_id if trial else None,
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
