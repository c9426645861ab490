"""retrain-best and baseline: hyperparameters trained for the preset's full epoch count.

retrain-best trains the study's best trial; baseline trains the preset's named baselines
(`[baselines.NAME]`: the seed's values, the paper's recipe, ...) through the very same pipeline and
budget, so their test accuracies compare fairly (`SEEDS=N` gives each a mean
and standard deviation over N weight-initialisation and shuffling seeds).

Models are rebuilt through the same HyperModel (the searched architecture, not a checkpoint
trained for a trial's short budget), trained from scratch for the full epochs, and the weights of
the epoch that validated best kept (as the search scored its trials), then evaluated once on the
test set. With `[retrain] train_on = "train+val"` they train on the validation images too (the
search and the confirmation have chosen by then), with nothing to validate on: the last epoch's
weights are kept and the exported run is the first seed's. A configuration whose schedule is
driven by validation (`plateau`: the paper's recipe) still trains on the training split and
validates, and says so: without it the schedule would never act.

Each seed is a trial of a Keras Tuner oracle (`RetrainOracle`, the confirmation's way),
in `results/<study>/runs/retrain-best/` or `runs/baselines/`: a kill loses the seed in flight, the
same command resumes with the seeds trained (asked for more seeds, it trains only the new ones),
and with `--workers N` Keras Tuner's workers train the seeds side by side.
retrain-best exports the run that validated best (or the first seed's) to `results/<study>/best/`
(export.py):

    model.keras               Keras model; `keras.models.load_model(...).predict(uint8 images)`
    serving/                  TensorFlow SavedModel, inference-only endpoint `serve`
    hyperparameters.json      every hyperparameter trained
    metrics.json              train/val/test accuracy and loss per seed (test also with mirror
                              TTA; no val with train+val), mean and std, wall time

With `[retrain] tta` both exports average each image with its mirror. Both are loaded back and
must predict like the model in memory before they replace an earlier `best/`; baseline writes the
same JSON files to `results/<study>/baselines/NAME/`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import keras_tuner

from . import cluster
from .adoption import hyperparameters_from, pooled_best, read_adopted
from .config import Config, require_baselines, trains_on_val
from .console import format_duration
from .cifar import Source
from .engine.callbacks import BestEpochAtEnd, LastEpochAtEnd
from .engine.phase import Phase
from .engine.planned import PlannedRunsOracle
from .engine.tuner import RunTuner
from .evaluation import evaluate, kept_epoch, summarize
from .errors import UserError
from .export import VERIFY_IMAGES, export_model, verify_exports
from .files import read_json, replace_dir_atomic, restore_dir, write_json_atomic
from .hypermodel import AlexNetHyperModel
from .model import for_export
from .progress import Progress
from .space import SEED_SCRIPT, as_toml, problems
from .study import Study, require_same_network, require_study, write_provenance
from .training import Training
from .trials import ENDED, contender_name, direction, failure_reason, mean_spread

# A retrain's bookkeeping in its runs' values (trials.is_bookkeeping): which retrain, which seed.
RUN, RUN_SEED = "retrain/name", "retrain/seed"


class RetrainOracle(PlannedRunsOracle):
    """A retrain's seeds as planned runs, in results/<study>/runs/retrain-best/ or runs/baselines/:
    a kill loses the seed in flight, and the same command resumes with the seeds already trained.
    Its state also records `setup` (each name's values, the epochs, data and network), so that a
    retrain of anything else starts over instead of mixing seeds (`_runs_tuner`)."""

    KEY = (RUN, RUN_SEED)

    def __init__(self, objective: str, seed: int):
        super().__init__(objective, seed)
        self.setup: dict | None = None

    def plan(self, units: list[dict[str, Any]], epochs: int, setup: dict | None = None) -> None:
        """Hand out `units`, keeping the record of earlier runs that `units` no longer ask for (a
        retrain with fewer seeds) but never handing those out again if they did not start."""
        wanted, started = {self.key(u) for u in units}, self.started()
        self.units = list(units) + [u for u in self.units if self.key(u) in started and self.key(u) not in wanted]
        self.epochs, self.setup = epochs, setup
        self.save()

    def get_state(self):
        return {**super().get_state(), "setup": self.setup}

    def set_state(self, state):
        super().set_state(state)
        self.setup = state.get("setup")


class RetrainTuner(RunTuner):
    """Trains a retrain's seeds, each as a confirmation run trains (from scratch for [retrain]
    epochs, the weights of its best validation epoch kept), then evaluates it once on every split,
    the test set included, into evaluation.json beside its checkpoint. `project`: runs/retrain-best,
    or runs/baselines for every baseline's seeds (one oracle, so workers go from one to the next).
    A run on train+val (`on_val`) keeps its last epoch. Under a preset on train+val the oracle's
    score of a run is its training accuracy (nothing ranks a retrain's runs by it, and a run on
    train+val has no other), so a run that validates keeps its epoch by the preset's objective."""

    def __init__(self, training: Training, config: Config, study: Study, project: str, test, seeds: int,
                 progress: Progress | None, overwrite: bool = False):
        self.with_val, self.objective = trains_on_val(config), config["search"]["objective"]
        oracle = RetrainOracle("accuracy" if self.with_val else self.objective, config["study"]["seed"])
        super().__init__(training, config, study, oracle, project, config["retrain"]["epochs"], progress,
                         overwrite=overwrite)
        self.training, self.test, self.seeds = training, test, seeds
        self.first_seed = config["study"]["seed"]
        self._model = None  # the running seed's model, kept to evaluate once it has trained
        self._both = None  # the training and validation images, made for the first run on both

    def on_val(self, hp) -> bool:
        """Whether the runs of `hp` train on train+val: the preset says so, and their schedule
        does not need the validation loss."""
        return self.with_val and self.hypermodel.hyperparameters(hp).lr_schedule != "plateau"

    def run_name(self, trial) -> str:
        return f"{trial.hyperparameters.values[RUN]}/seed{self.trial_seed(trial)}"

    def label(self, values: dict) -> str:
        return f"{values[RUN]} {int(values[RUN_SEED]) - self.first_seed + 1}/{self.seeds}"

    def evaluation_file(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "evaluation.json"

    def evaluation(self, trial) -> str:
        """A finished run's line: its test accuracy (and mirrored), validation, kept epoch, time."""
        if trial.status != "COMPLETED":
            return f"{trial.status.lower()}: {failure_reason(trial.message)}"
        r = read_json(self.evaluation_file(trial.trial_id))
        kept = (f"val {r['val_accuracy']:.4f}, weights of epoch {r['kept_epoch']}" if "val_accuracy" in r else
                f"trained on train+val, last epoch's weights")
        return (f"test accuracy {r['test_accuracy']:.4f} ({r['test_accuracy_tta']:.4f} with its mirror; {kept}) "
                f"in {format_duration(r['train_wall_s'])}")

    def _try_build(self, hp):
        self._model = super()._try_build(hp)
        return self._model

    def run_trial(self, trial, train, *args, **kwargs):
        started = time.monotonic()
        on_val = self.on_val(trial.hyperparameters)
        if on_val:  # RunTuner seeds it as it seeds `train`
            if self._both is None:
                self._both = self.training.train_set(0, with_val=True)
            train, kwargs["validation_data"] = self._both, None
        self.checkpoint = LastEpochAtEnd if on_val else _best_epoch_by(self.objective)
        try:
            histories = super().run_trial(trial, train, *args, **kwargs)
            model = self._model
        finally:
            self._model = None  # a failed seed's model is not kept until the next one's
        history = histories[0].history
        result = {"seed": self.trial_seed(trial), "epochs": self.epochs, "train_on": "train+val" if on_val else "train",
                  "train_wall_s": round(time.monotonic() - started, 1),
                  "kept_epoch": len(history.get("loss", [])) if on_val else kept_epoch(history, self.objective)}
        result.update(evaluate(self.training, model, self.test, with_val=on_val))
        result["wall_s"] = round(time.monotonic() - started, 1)
        write_json_atomic(self.evaluation_file(trial.trial_id), result)
        return histories

    def report_begin(self, trial) -> None:
        v = trial.hyperparameters.values
        self.progress.begin(self.label(v), 0, self.epochs, f"(seed {v[RUN_SEED]})")

    def report_end(self, ended) -> None:
        self.progress.end(self.epochs, self.evaluation(ended))


@dataclass
class Job:
    """One retrained configuration: `name` is its runs' and TensorBoard folder's ("retrain-best",
    "baselines/paper"), `target` the folder its results replace in one swap."""

    name: str
    hp: Any
    target: Path
    export: bool
    extra: dict[str, Any]


def _best_epoch_by(name: str) -> type:
    """`BestEpochAtEnd` keeping the epoch best by the objective `name`, whatever the oracle's is
    (Keras Tuner makes it with the oracle's)."""

    class ByObjective(BestEpochAtEnd):
        def __init__(self, objective, filepath):
            super().__init__(keras_tuner.Objective(name, direction(name)), filepath)

    return ByObjective


def _setup(config: Config, jobs: list[Job], epochs: int) -> dict[str, Any]:
    """What a retrain's runs train, as JSON reads it back: runs are resumed only under an equal
    one (a name's values may be new, not different)."""
    return json.loads(json.dumps({"runs": {j.name: dict(j.hp.values) for j in jobs}, "epochs": epochs,
                                  "data": config["data"], "model": config["model"],
                                  "train_on": config["retrain"]["train_on"]}, sort_keys=True, default=str))


def _other_training(saved: dict, setup: dict) -> bool:
    """Whether runs planned under `saved` trained another budget, data or network than `setup`'s
    (runs planned before `train_on` was recorded trained on "train")."""
    return any(saved.get(k, "train" if k == "train_on" else None) != setup[k]
               for k in ("epochs", "data", "model", "train_on"))


def _differs(saved: dict, setup: dict) -> bool:
    return _other_training(saved, setup) or any(
        saved.get("runs", {}).get(name, values) != values for name, values in setup["runs"].items())


def _saved_setup(study: Study, project: str) -> dict | None:
    path = study.root / project / "oracle.json"
    return read_json(path).get("setup") if path.is_file() else None


def _runs_tuner(config: Config, study: Study, training: Training, project: str, test, jobs: list[Job], seeds: int,
                progress: Progress | None, say) -> RetrainTuner:
    """The retrain's tuner with its plan: the earlier runs of the same setup resumed, of another
    setup dropped (with a line saying so)."""
    epochs = config["retrain"]["epochs"]
    setup, saved = _setup(config, jobs, epochs), _saved_setup(study, project)
    start_over = saved is not None and _differs(saved, setup)
    if start_over:
        say(f"the runs in {study.root / project}/ trained other values, epochs, data or network; starting over")
    tuner = RetrainTuner(training, config, study, project, test, seeds, progress, overwrite=start_over)
    ran = {t.hyperparameters.values[RUN] for t in tuner.oracle.trials.values()}
    for job in jobs:
        if job.name not in ran:  # TensorBoard shows this retrain's runs, not an earlier one's under the same name
            shutil.rmtree(study.tensorboard_dir / job.name, ignore_errors=True)
    if saved is not None and not start_over:
        setup["runs"] = {**saved["runs"], **setup["runs"]}  # the record of other names' runs stays
    first = config["study"]["seed"]
    tuner.oracle.plan([{**job.hp.values, RUN: job.name, RUN_SEED: first + i} for job in jobs for i in range(seeds)],
                      epochs, setup)
    tuner.save()
    return tuner


class RetrainPhase(Phase):
    """The seeds of a retrain's jobs on the engine's driver (`engine.phase.Phase`): trained (in
    any role), then each job's metrics and exports written in one swap (not on a worker)."""

    what = "seeds to train"

    def __init__(self, config: Config, study: Study, training: Training, jobs: list[Job], seeds: int,
                 project: str, out: TextIO = sys.stdout):
        super().__init__(config, study, training, out)
        self.jobs, self.seeds, self.project = jobs, seeds, project
        self.lock = project.split("/", 1)[1]  # one writer of the runs and the targets
        self.test = training.source.test()
        self.staging: dict[str, Path] = {}
        self.done: set = set()
        self.started = time.monotonic()

    def join(self) -> RetrainTuner:
        """A worker of `--workers N`: train the seeds its chief hands out, with this preset's network,
        which must be the one the chief planned for."""
        config, study, project = self.config, self.study, self.project
        saved, setup = _saved_setup(study, project), _setup(config, self.jobs, config["retrain"]["epochs"])
        if saved is None or _other_training(saved, setup):
            raise UserError(f"the chief's runs in {study.root / project}/ are planned for another preset's epochs, "
                            f"data or network than {config.path}'s; start the workers with the chief's --config")
        self.progress = Progress(self.seeds * len(self.jobs), None, out=self.out)
        return RetrainTuner(self.training, config, study, project, self.test, self.seeds, self.progress)

    def lead(self) -> RetrainTuner:
        config, study, jobs, seeds, say = self.config, self.study, self.jobs, self.seeds, self.say
        # A second run would delete this one's staging folders: the lock is held by now.
        self.staging = {job.name: _stage(study, job.target) for job in jobs}
        for line in self.training.describe():
            if self.role == "single" or line.startswith("data:"):
                say(line + (f"; test set {len(self.test[0])} images" if line.startswith("data:") else "")
                    + ("; the retrain trains on both ([retrain] train_on)" if line.startswith("data:")
                       and trains_on_val(config) else ""))
        epochs = self.epochs
        self.started = time.monotonic()
        self.progress = Progress(seeds * len(jobs), seeds * len(jobs) * epochs, out=self.out)
        tuner = _runs_tuner(config, study, self.training, self.project, self.test, jobs, seeds, self.progress, say)
        for job in jobs:
            if tuner.with_val and not tuner.on_val(job.hp):
                say(f"{job.name}: its plateau schedule acts on the validation loss, so it trains on the training "
                    f"split and validates, whatever [retrain] train_on says")
        wanted = [tuner.oracle.key(u) for u in tuner.oracle.units[:seeds * len(jobs)]]
        trials = {tuner.oracle.key(t.hyperparameters.values): t for t in tuner.oracle.trials.values()}
        self.done = {k for k in wanted if k in trials and trials[k].status in ENDED}
        self.progress.epochs_done = len(self.done) * epochs
        if self.done:
            say(f"{len(self.done)} of {len(wanted)} seeds trained earlier ({tuner.project_dir}/): "
                + ("training the rest" if len(self.done) < len(wanted) else "nothing left to train (delete that "
                                                                            "folder to train them again)"))
        if self.role == "chief":
            host, port = os.environ[cluster.ORACLE_IP], os.environ[cluster.ORACLE_PORT]
            say(f"serving {len(wanted) - len(self.done)} seeds on {host}:{port} to the workers")
        return tuner

    def chief_line(self, tuner: RetrainTuner, trial) -> str:
        v = trial.hyperparameters.values
        return f"{v[RUN]} seed {v[RUN_SEED]} {trial.status.lower()} ({self.runner(tuner, trial)}): {tuner.evaluation(trial)}"

    def finish(self, tuner: RetrainTuner) -> list[dict[str, Any]]:
        trials = {tuner.oracle.key(t.hyperparameters.values): t for t in tuner.oracle.trials.values()}
        # The runs trained by earlier processes count in the wall time; this process's time is shared
        # by its jobs, which ran side by side.
        elapsed, first = time.monotonic() - self.started, self.config["study"]["seed"]
        return [_write_job(self.config, tuner, job, [trials[(job.name, s)] for s in range(first, first + self.seeds)],
                           self.staging[job.name], self.done, elapsed, self.test, self.training.source, self.say)
                for job in self.jobs]


def _retrain(config: Config, study: Study, source: Source, jobs: list[Job], seeds: int, project: str,
             out: TextIO) -> list[dict[str, Any]]:
    """Train each job's configuration `seeds` times (the seeds not trained yet), evaluate each run
    once on test, and write each job's `target/` in one swap. Returns each job's metrics, or []
    on a worker (its chief writes them)."""
    if seeds < 1:
        raise UserError(f"SEEDS/--seeds must be >= 1 (got {seeds})")
    # A chief trains nothing: no GPUs (it evaluates nothing either; the exports load on its CPU).
    training = Training.prepare(config, source, several_gpus=cluster.role() != "chief")
    return RetrainPhase(config, study, training, jobs, seeds, project, out).run() or []


def _stage(study: Study, target: Path) -> Path:
    """A fresh staging folder beside `target`, after putting back a `target` a killed swap left
    aside and clearing what killed runs left."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        restore_dir(target)
        for stale in target.parent.glob(f".{target.name}.staging-*"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        staging = target.parent / f".{target.name}.staging-{os.getpid()}"
        staging.mkdir()
        return staging
    except OSError as exc:
        raise UserError(f"cannot write to {study.root} ({exc.strerror or exc}); choose another --results-dir") from None



def _write_job(config: Config, tuner: RetrainTuner, job: Job, ended: list, staging: Path, done: set, elapsed: float,
            test, source: Source, say) -> dict[str, Any]:
    """One job's metrics (and export) from its ended runs, written to its target in one swap."""
    completed = [t for t in ended if t.status == "COMPLETED"]
    failed = [tuner.trial_seed(t) for t in ended if t.status != "COMPLETED"]
    if not completed:
        raise UserError(f"{job.name}: every seed failed ({failure_reason(ended[0].message)}); nothing was written. "
                        f"Check the values it trains, or delete {tuner.project_dir} and rerun")
    runs = [read_json(tuner.evaluation_file(t.trial_id)) for t in completed]
    epochs = config["retrain"]["epochs"]
    values = tuner.hypermodel.hyperparameters(job.hp).as_dict()  # everything trained, searched or not
    on_val = tuner.on_val(job.hp)
    data = tuner.training.splits.note + ("; retrained on both, nothing held out but the test set" if on_val else "")
    metrics = {**job.extra, "epochs": epochs, "seeds": [r["seed"] for r in runs], "runs": runs, **summarize(runs),
               **({"failed_seeds": failed} if failed else {}), "train_on": "train+val" if on_val else "train",
               "data": data}
    if failed:
        say(f"{job.name}: seed(s) {', '.join(map(str, failed))} failed; the summary is over the other {len(runs)}")
    started = time.monotonic()
    if job.export:
        # On validation, never test; with nothing held out, no seed is better known than the first.
        best = 0 if on_val else max(range(len(runs)), key=lambda i: (runs[i]["val_accuracy"], -i))
        kept = for_export(tuner.load_model(completed[best]), tta=config["retrain"]["tta"])
        if not export_model(kept, staging):
            say("note: TensorFlow is not installed, so no serving/ SavedModel was exported (model.keras was); "
                "install the tensorflow extra and rerun retrain-best for one")
        metrics["exported_seed"], metrics["exported_tta"] = runs[best]["seed"], config["retrain"]["tta"]
        metrics["exports_verified_on_images"] = verify_exports(kept, staging, test[0][:VERIFY_IMAGES])
    earlier = sum(r["wall_s"] for r in runs if (job.name, r["seed"]) in done)
    metrics["wall_time_s"] = round(earlier + elapsed + time.monotonic() - started, 1)
    write_json_atomic(staging / "hyperparameters.json", values)
    write_json_atomic(staging / "metrics.json", metrics)
    write_provenance(staging, config, extra={"data_source": source.describe(),
                                             "trained_with": tuner.training.trained_with()})
    replace_dir_atomic(staging, job.target)

    spread = f" +- {metrics['test_accuracy_std']:.4f} over {len(runs)} seeds" if len(runs) > 1 else ""
    fit = f"train {metrics['train_accuracy_mean']:.4f}" + (
        f", val {metrics['val_accuracy_mean']:.4f}" if "val_accuracy_mean" in metrics else " on train+val")
    say(f"\n{job.name}: test accuracy {metrics['test_accuracy_mean']:.4f}{spread}, "
        f"{metrics['test_accuracy_tta_mean']:.4f} with test-time mirroring ({fit}) in "
        f"{format_duration(metrics['wall_time_s'])}")
    return metrics


def retrain_best(config: Config, study: Study, source: Source, seeds: int = 1, out: TextIO = sys.stdout,
                 origin: str | None = None, pool: list[Study] = ()) -> dict[str, Any]:
    """Retrain the study's adopted hyperparameters (best_hyperparameters.json: its best confirmed
    finalist) `seeds` times; export the best-validating run (on train+val, the first) to best/.

    `origin` (`--from`): take the hyperparameters from another study or a JSON file instead (see
    `hyperparameters_from`); `pool` (`--pool`): the best confirmed finalist of this study and the
    pool's. The preset still sets sizes and epochs.
    """
    if origin is not None:
        values, where = hyperparameters_from(origin, study.root.parent, config)
        extra = {"hyperparameters_from": where}
    else:
        require_study(study)
        require_same_network(study, config)
        if pool:
            best, _ = pooled_best(study, list(pool))
            adopted = {"study": best["study"], "trial_id": best["trial_id"], "hyperparameters": best["hyperparameters"],
                       config["search"]["objective"]: best["search_score"],
                       "confirmed": {"mean": best["mean"], "std": best["std"]},
                       **({"baseline": best["baseline"]} if best.get("baseline") else {})}
            where = f"the best finalist of {', '.join(s.name for s in [study, *pool])}: study {best['study']} " \
                    f"{contender_name(best)}"
        else:
            adopted = read_adopted(study)
            where = f"study {adopted.get('study', study.name)} {contender_name(adopted)}"
        values = adopted.get("hyperparameters")
        found = problems(values) if isinstance(values, dict) else ["it holds no hyperparameter values"]
        if found:
            raise UserError(f"{study.adopted_file}: {found[0]}; rerun the search to adopt again")
        confirmed = adopted.get("confirmed") or {}
        extra = {"trial_id": adopted.get("trial_id"), "trial_study": adopted.get("study", study.name),
                 "search_score": adopted.get(config["search"]["objective"]), "hyperparameters_from": where,
                 **({"confirmed_mean": confirmed["mean"], "confirmed_std": confirmed["std"]} if confirmed else {}),
                 **({"pool": [s.name for s in [study, *pool]]} if pool else {}),
                 **({"baseline": adopted["baseline"]} if adopted.get("baseline") else {})}
        where += (f", confirmed {mean_spread(confirmed['mean'], confirmed['std'], '+-')} on validation" if confirmed else "")
    print(f"hyperparameters from {where}, trained at {config.path}'s sizes:\n    {values}", file=out, flush=True)
    job = Job("retrain-best", hyperparameters_with(config, values), study.best_dir, export=True, extra=extra)
    done = _retrain(config, study, source, [job], seeds, "runs/retrain-best", out)
    if not done:  # a worker: its chief exports
        return {}
    _say_exported(study, done[0], out)
    return done[0]


def _say_exported(study: Study, metrics: dict[str, Any], out: TextIO) -> None:
    exports = "model.keras, serving/" if (study.best_dir / "serving").is_dir() else "model.keras"
    print(f"exported to {study.best_dir}/: {exports}, hyperparameters.json, metrics.json (exports reloaded "
          f"and checked on {metrics['exports_verified_on_images']} test images)", file=out, flush=True)


def hyperparameters_with(config: Config, values: dict[str, Any]):
    """Keras Tuner hyperparameters holding `values` and, for every other hyperparameter, the seed's
    value (space.SEED_SCRIPT), searched or not: not the preset's `default`, which is only where a search
    starts (a range may leave the seed's value out), so a baseline named by a few values differs
    from the seed's model in those values alone."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    AlexNetHyperModel.from_config(config).values(hp)  # the space declared, so the model reads it as searched
    hp.values.update({**{name: SEED_SCRIPT[name] for name in config.space}, **values})
    return hp


def train_baseline(config: Config, study: Study, source: Source, seeds: int = 1, names: list[str] | None = None,
                   out: TextIO = sys.stdout) -> dict[str, dict[str, Any]]:
    """The preset's named baselines (`[baselines.NAME]`; all of them, or `names`) through
    retrain-best's pipeline and budget, each into baselines/NAME/. Returns metrics per name."""
    baselines = config["baselines"]
    require_same_network(study, config)
    jobs = []
    for name in require_baselines(config, names):
        values = baselines[name]
        shown = ", ".join(f"{k}={as_toml(v)}" for k, v in values.items()) or "every hyperparameter at the seed's value"
        print(f"baseline {name}: {shown}", file=out, flush=True)
        jobs.append(Job(f"baselines/{name}", hyperparameters_with(config, values), study.root / "baselines" / name,
                        export=False, extra={"baseline": name}))
    # One oracle for every baseline's seeds: with --workers they all train side by side.
    results = _retrain(config, study, source, jobs, seeds, "runs/baselines", out)
    for job in jobs[:len(results)]:
        print(f"written to {job.target}/: hyperparameters.json, metrics.json", file=out, flush=True)
    return {job.name.split("/", 1)[1]: metrics for job, metrics in zip(jobs, results)}
