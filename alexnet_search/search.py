"""The search: Keras Tuner's Hyperband (or BOHB on its brackets, or its random or Bayesian search,
by the preset's [search] tuner) over the preset's space, on the engine every phase shares (`engine`).

Resuming is Keras Tuner's `overwrite=False`: running the same command again reloads
`tuner/oracle.json` and the trial records, skips finished trials and re-runs the one that was
interrupted. A trial whose loss goes non-finite or diverges, or that runs out of memory, fails with
a one-line reason and the search goes on. In a distributed study (`cluster`) the same code runs as
the chief, which serves the oracle, or as a worker, which trains what the chief hands it. Its
finalists are confirmed next (`confirm`), by the command that ran it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TextIO

import keras_tuner
from keras_tuner.oracles import BayesianOptimizationOracle, HyperbandOracle, RandomSearchOracle

from . import backend, cluster, locks
from .bohb import BOHBOracle
from .config import Config
from .console import columns, format_duration, short
from .engine.oracle import StudyOracle
from .engine.phase import Phase, WallClock
from .engine.tuner import StudyTuner, epochs_spent, ranked_trials
from .errors import UserError
from .files import read_json, write_json_atomic
from .hypermodel import AlexNetHyperModel
from .plan import estimate_seconds, time_training_steps
from .progress import Progress, TrialReporter
from .schedule import BRACKETED, finalist_epochs, search_schedule
from .study import Study, prepare_search
from .tboard import write_experiment
from .training import Training
from .trials import ENDED, FAILED, direction, model_epochs, searched_values


class _Hyperband(StudyOracle, HyperbandOracle):
    pass


class _BOHB(StudyOracle, BOHBOracle):
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
    if s["tuner"] in BRACKETED:
        oracle = _Hyperband if s["tuner"] == "hyperband" else _BOHB
        return oracle(max_epochs=s["max_epochs"], factor=s["factor"], hyperband_iterations=s["hyperband_iterations"],
                      **common)
    if s["tuner"] == "random":
        return _RandomSearch(max_trials=s["max_trials"], **common)
    try:
        # Keras Tuner's default is 3 random configurations per searched hyperparameter before the
        # Gaussian process proposes any: more than a small budget's whole max_trials.
        return _Bayesian(max_trials=s["max_trials"], num_initial_points=s.get("initial_points"), **common)
    except ImportError:  # an install made without the package's dependencies (a GPU machine's wheels)
        raise UserError(f"{config.path} asks for the bayesian tuner, which needs scikit-learn: "
                        f"pip install scikit-learn (make env installs it)") from None


class AlexNetTuner(StudyTuner):
    """The search's tuner: `make_oracle`'s oracle, each trial seeded from the study seed.

    `TrialReporter` prints the trial lines (Keras Tuner's own display is silenced), and
    `search_summary.json` is rewritten after every trial with the study's counts and wall time.
    """

    def __init__(self, hypermodel: AlexNetHyperModel, config: Config, study: Study,
                 overwrite: bool = False, progress: Progress | None = None, distribution_strategy=None):
        s = config["search"]
        oracle = make_oracle(config)
        super().__init__(hypermodel, oracle, study, study.tuner_dir.name, config["distributed"]["lease_s"],
                         overwrite=overwrite, distribution_strategy=distribution_strategy)
        if s["tuner"] in BRACKETED:
            # A reloaded oracle takes its iteration count from oracle.json; a study extended
            # (prepare_search allowed more iterations) runs to the preset's.
            oracle.hyperband_iterations = s["hyperband_iterations"]
        self.seed = config["study"]["seed"]
        self.max_epochs = s["max_epochs"]
        self.reporter = TrialReporter(progress, self.max_epochs) if progress else None
        self.summary_file = study.root / "search_summary.json"
        self.schedule = search_schedule(config["search"])
        self.clock = WallClock(self.summary_file, fresh=overwrite)
        self.epochs_at_start = 0 if self._is_worker() else epochs_spent(oracle.trials.values(), self.max_epochs)

    def trial_seed(self, trial) -> int:
        # Weights and shuffling follow the study seed, offset per trial so that trials differ.
        return self.seed * 100_003 + int(trial.trial_id)

    def run_name(self, trial) -> str:
        return f"{trial.trial_id}/execution0"  # where Keras Tuner's own TensorBoard set-up puts it

    def write_summary(self, finished: bool = False) -> dict:
        """search_summary.json: wall time summed over every run of this study, and trial counts."""
        trials = list(self.oracle.trials.values())
        summary = {
            "wall_time_s": self.clock.total(),
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

    def report_end(self, ended) -> None:
        if self.reporter:
            if self._is_worker():  # the oracle is the chief's, behind gRPC
                leaders = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
            else:
                leaders = ranked_trials(self.oracle)
            self.reporter.end(ended, leaders[0] if leaders else None, self.oracle.objective.name,
                              self.get_trial_dir(ended.trial_id))


def make_tuner(config: Config, study: Study, overwrite: bool = False, progress: Progress | None = None,
               distribution_strategy=None) -> AlexNetTuner:
    return AlexNetTuner(AlexNetHyperModel.from_config(config), config, study, overwrite=overwrite,
                        progress=progress, distribution_strategy=distribution_strategy)


def completed_trials(tuner: AlexNetTuner) -> list:
    return [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]


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
    return "\n".join(columns([header] + rows, left=0))


class SearchPhase(Phase):
    """The search's steps on the engine's driver (`engine.phase.Phase`)."""

    what = "trials"

    def __init__(self, config: Config, study: Study, training: Training, overwrite: bool = False,
                 out: TextIO = sys.stdout, callbacks: tuple = ()):
        super().__init__(config, study, training, out)
        self.overwrite = overwrite
        self.epochs = config["search"]["max_epochs"]
        self.failure_limit = config["search"]["max_consecutive_failed_trials"]
        self.callbacks = list(callbacks)
        self.started = time.monotonic()

    def lead(self) -> AlexNetTuner:
        config, study, say = self.config, self.study, self.say
        serving = self.role == "chief"
        with contextlib.ExitStack() as held:
            if self.overwrite:  # it empties runs/, best/ and baselines/: not under a running retrain's feet
                for other in ("retrain-best", "baselines"):
                    held.enter_context(locks.held(study.root, other))
            prepared = prepare_search(study, config, self.overwrite, provenance={
                "data_source": self.training.source.describe(), "split": self.training.splits.note,
                "trained_with": self.training.trained_with()})
        if prepared.extended:
            say(f"extending study {study.name}: {', '.join(prepared.extended)}; its finished trials are kept")
        self.describe(trains=not serving)
        schedule = search_schedule(config["search"])
        # Time left covers the whole `make search`: the finalists' confirmation follows the search.
        self.progress = Progress(schedule.trials, schedule.epochs + finalist_epochs(config), out=self.out)
        self.started = self.progress.start
        tuner = self._tuner(self.overwrite)
        write_experiment(study.tensorboard_dir, config.space)
        finished = [t for t in tuner.oracle.trials.values() if t.status in ENDED]
        self.progress.epochs_done = epochs_spent(finished, tuner.max_epochs)
        say(f"study {study.name}: {schedule.trials} trials, {schedule.epochs} epochs in the Hyperband schedule"
            + (f"; resuming with {len(finished)} finished" if prepared.resuming else ""))
        tuner.done_already = self._finished_before(tuner, prepared)
        if serving and tuner.done_already:
            say(f"study {study.name}'s search ended before this chief started: on to its finalists")
        elif serving:
            host, port = os.environ[cluster.ORACLE_IP], os.environ[cluster.ORACLE_PORT]
            say(f"serving the oracle on {host}:{port}; workers: KERASTUNER_TUNER_ID=tuner<N> "
                f"KERASTUNER_ORACLE_IP={host} KERASTUNER_ORACLE_PORT={port} alexnet-search search ... "
                f"(or alexnet-search search --worker N --oracle-host {host})")
        return tuner

    def _finished_before(self, tuner: AlexNetTuner, prepared) -> bool:
        """Whether an earlier run of this study ended its search, which this run does not extend."""
        summary = read_json(tuner.summary_file) if tuner.summary_file.is_file() and not self.overwrite else {}
        return bool(summary.get("finished")) and not prepared.extended and all(
            t.status in ENDED for t in tuner.oracle.trials.values())

    def join(self) -> AlexNetTuner:
        if self.overwrite:
            raise UserError("--overwrite is the chief's to give: a worker joins the study the chief prepared")
        self.study.tuner_dir.mkdir(parents=True, exist_ok=True)
        self.describe(trains=True)
        # Only the chief sees the whole study: it prints the time left.
        self.progress = Progress(search_schedule(self.config["search"]).trials, None, out=self.out)
        return self._tuner()

    def _tuner(self, overwrite: bool = False) -> AlexNetTuner:
        tuner = AlexNetTuner(self.training.hypermodel(), self.config, self.study, overwrite=overwrite,
                             progress=self.progress, distribution_strategy=self.training.strategy)
        tuner.save()  # reloadable from the start: a kill during the first trial resumes too
        return tuner

    def describe(self, trains: bool) -> None:
        """The device, then what a training process trains on (a chief: the data alone)."""
        config, say = self.config, self.say
        say(f"device: {backend.describe_device()}; Keras backend: {backend.version()}"
            + ("" if self.role == "single" else f"; role: {self.role} ({os.environ[cluster.TUNER_ID]})"))
        if config["study"]["expects_gpu"] and backend.gpu_count() == 0 and trains:
            estimate = estimate_seconds(config, time_training_steps(config))
            say(f"warning: no GPU is visible, and {config.path} is sized for one: this search would take "
                f"about {format_duration(estimate)} on this CPU. For a CPU run use CONFIG=tuning/cpu.toml "
                f"(make search CONFIG=tuning/cpu.toml). Continuing; Ctrl-C stops, the same command resumes.")
        for line in self.training.describe():
            if trains or line.startswith("data:"):
                say(line)

    def ended(self, tuner: AlexNetTuner, trial) -> None:
        summary = tuner.write_summary()  # kept current after every trial
        if tuner.reporter and self.role == "chief":
            # The chief trains nothing; it is the one place that sees the whole study's progress.
            tuner.reporter.study_line(trial, self.runner(tuner, trial), summary, tuner.epochs_at_start,
                                      time.monotonic() - self.started)

    def finish(self, tuner: AlexNetTuner) -> AlexNetTuner:
        """The finished search's summary and closing lines (its finalists are confirmed next: `confirm`)."""
        say, summary = self.say, tuner.write_summary(finished=True)
        say(f"\nsearch finished in {format_duration(self.progress.clock() - self.progress.start)} "
            f"({format_duration(summary['wall_time_s'])} over all runs of this study; "
            f"{summary['trials_completed']} trials completed, {summary['trials_failed']} failed)")
        compiled = backend.compiles()
        if compiled and compiled.counts["programs"]:  # JAX: what the persistent cache saved this run
            say(f"this run: {backend.Compiles.describe(compiled.snapshot())}")
        if completed_trials(tuner):
            say("best trials:\n" + best_trials_table(tuner))
        say(f"written to {self.study.root}/: tuner/ (Keras Tuner state), tensorboard/ (make tensorboard), "
            f"search_summary.json, config.json, versions.json")
        return tuner


def run_search(config: Config, study: Study, training: Training, overwrite: bool = False,
               out: TextIO = sys.stdout, callbacks: tuple = ()) -> AlexNetTuner:
    """Run (or resume) the study's search to the end of its schedule, in this process's role
    (`cluster.role`): a single process or a chief prepares the study and sums it up; a worker
    trains the trials the chief hands it. Returns the search's tuner.

    `callbacks` are added to every trial's fit; Keras Tuner deep-copies them per trial, so one
    that collects across trials must share its state through `__deepcopy__` (see EpochReporter).
    """
    phase = SearchPhase(config, study, training, overwrite, out, callbacks)
    phase.run()
    return phase.tuner
