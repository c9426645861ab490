"""The Hyperband search: Keras Tuner's own tuner, with progress lines and crash-safe state files.

Resuming is Keras Tuner's `overwrite=False`: running the same command again reloads
`tuner/oracle.json` and the trial records, skips finished trials and re-runs the one that was
interrupted. Its state files are written atomically here, so a crash mid-write cannot corrupt them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import keras
import keras_tuner
from keras_tuner.src.tuners.hyperband import HyperbandOracle

from .config import Config
from .data import Source, TrainingSet, make_dataset, make_splits
from .errors import UserError
from .hypermodel import AlexNetHyperModel, clean_value
from .plan import estimate_seconds, format_duration, schedule_for, time_training_steps
from .progress import EpochReporter, Progress
from .study import (
    Study, describe_device, prepare_search, read_json, require_study, write_json_atomic, write_provenance,
)

_TUNER_KEYS = {"tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id"}


class _AtomicHyperbandOracle(HyperbandOracle):
    """Keras Tuner's Hyperband oracle, writing oracle.json and trial.json atomically."""

    def save(self):
        write_json_atomic(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_json_atomic(self._get_trial_dir(trial.trial_id) + "/trial.json", trial.get_state())


class AlexNetTuner(keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` with this package's progress output and seeding.

    Keras Tuner's own per-trial display is silenced in favour of `Progress`, which knows the
    study's total trial count and time left.
    """

    def __init__(self, hypermodel: AlexNetHyperModel, config: Config, directory: str,
                 overwrite: bool = False, progress: Progress | None = None, **kwargs):
        s = config["search"]
        oracle = _AtomicHyperbandOracle(
            objective=keras_tuner.Objective(s["objective"], "max" if s["objective"].endswith("accuracy") else "min"),
            max_epochs=s["max_epochs"],
            factor=s["factor"],
            hyperband_iterations=s["hyperband_iterations"],
            seed=config["study"]["seed"],
            max_retries_per_trial=s["max_retries_per_trial"],
            max_consecutive_failed_trials=s["max_consecutive_failed_trials"],
        )
        # Hyperband.__init__ only builds its oracle; build ours and go to the Tuner base directly.
        keras_tuner.Tuner.__init__(
            self, oracle=oracle, hypermodel=hypermodel, directory=directory,
            project_name="tuner", overwrite=overwrite, **kwargs,
        )
        self.seed = config["study"]["seed"]
        self.progress = progress
        self.summary_file = Path(directory) / "search_summary.json"
        self.schedule = schedule_for(config)
        self._started = time.monotonic()
        self._earlier_wall = 0.0
        if self.summary_file.is_file() and not overwrite:
            self._earlier_wall = float(read_json(self.summary_file).get("wall_time_s", 0.0))

    def write_summary(self, finished: bool = False) -> dict:
        """search_summary.json: wall time summed over every run of this study, and trial counts."""
        trials = list(self.oracle.trials.values())
        done = [t for t in trials if t.status in ("COMPLETED", "FAILED", "INVALID")]
        summary = {
            "wall_time_s": round(self._earlier_wall + time.monotonic() - self._started, 1),
            "trials_scheduled": self.schedule.trials,
            "trials_started": len(trials),
            "trials_completed": sum(t.status == "COMPLETED" for t in trials),
            "trials_failed": sum(t.status in ("FAILED", "INVALID") for t in trials),
            "epochs_scheduled": self.schedule.epochs,
            "epochs_spent": sum(trial_epochs(t) for t in done),
            "finished": finished,
        }
        write_json_atomic(self.summary_file, summary)
        return summary

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json_atomic(self._get_tuner_fname(), self.get_state())

    def on_search_begin(self):
        self.oracle.verbose = 0
        super().on_search_begin()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self.progress:
            hp = trial.hyperparameters.values
            parent = hp.get("tuner/trial_id")
            shown = " ".join(f"{k}={_short(v)}" for k, v in searched_values(hp).items())
            self.progress.begin(
                f"trial {int(trial.trial_id) + 1}/{self.progress.total_units}",
                hp.get("tuner/initial_epoch", 0), hp.get("tuner/epochs", 0),
                f"(id {trial.trial_id}; bracket {hp.get('tuner/bracket')} round {hp.get('tuner/round')}; "
                f"{'continues trial ' + parent if parent else 'new configuration'})\n    {shown}",
            )

    def run_trial(self, trial, *args, **kwargs):
        # Weights and shuffling follow the study seed, offset per trial so that trials differ.
        keras.utils.set_random_seed(self.seed * 100_003 + int(trial.trial_id))
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.write_summary()
        if self.progress:
            trial = self.oracle.get_trial(trial.trial_id)
            best = ranked_trials(self.oracle)
            objective = self.oracle.objective.name
            if trial.status == "COMPLETED":
                result = f"best {objective} {trial.score:.4f} at epoch {_best_epoch(trial)}"
            else:
                reason = (trial.message or "").strip().splitlines()
                result = f"{trial.status.lower()}: {reason[-1] if reason else 'no reason recorded'}"
            lead = f"best so far {best[0].score:.4f} (trial {best[0].trial_id})" if best else "none completed yet"
            self.progress.end(trial_epochs(trial), f"{result}; {lead}")


def trial_epochs(trial) -> int:
    """Epochs a trial trains: Hyperband's tuner/epochs minus where a promoted trial starts."""
    hp = trial.hyperparameters.values
    return int(hp.get("tuner/epochs", 0)) - int(hp.get("tuner/initial_epoch", 0))


def _best_epoch(trial) -> int | str:
    # best_step counts from the start of this trial's fit, which begins at tuner/initial_epoch.
    if trial.best_step is None:
        return "?"
    return int(trial.best_step) + 1 + int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def make_tuner(config: Config, study: Study, overwrite: bool = False, progress: Progress | None = None) -> AlexNetTuner:
    return AlexNetTuner(
        AlexNetHyperModel.from_config(config), config, directory=str(study.root),
        overwrite=overwrite, progress=progress,
    )


def searched_values(hp_values: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters without Hyperband's bookkeeping entries."""
    return {k: clean_value(v) for k, v in hp_values.items() if k not in _TUNER_KEYS}


def completed_trials(tuner: AlexNetTuner) -> list:
    return [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]


def ranked_trials(oracle) -> list:
    """Completed trials, best first; ties go to the earlier trial.

    Keras Tuner's `get_best_trials` breaks ties by dictionary order, which differs between the
    search process and a reloaded study (trial files are globbed), so two commands could name
    different "best" trials.
    """
    sign = -1 if oracle.objective.direction == "max" else 1
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return sorted(done, key=lambda t: (sign * t.score, t.trial_id))


def load_finished_tuner(config: Config, study: Study) -> AlexNetTuner:
    """The study's tuner, reloaded; UserError when it has no completed trial."""
    require_study(study)
    if not study.tuner_dir.is_dir():
        raise UserError(f"{study.root} has no search state; run the search first")
    tuner = make_tuner(config, study)
    if not completed_trials(tuner):
        raise UserError(
            f"study {study.name} has no completed trial yet; run or resume `make search` until one finishes"
        )
    return tuner


def write_hparams_config(tuner: AlexNetTuner, logdir: str) -> None:
    """Declare the HParams experiment so TensorBoard lists every trial's domains and metrics."""
    import tensorflow as tf
    from keras_tuner.src.engine.tuner_utils import convert_hyperparams_to_hparams
    from tensorboard.plugins.hparams import api as hp_api

    hparams = convert_hyperparams_to_hparams(tuner.oracle.get_space(), hp_api)
    metrics = [
        hp_api.Metric("epoch_accuracy", group="validation", display_name="val accuracy"),
        hp_api.Metric("epoch_loss", group="validation", display_name="val loss"),
        hp_api.Metric("epoch_accuracy", group="train", display_name="train accuracy"),
        hp_api.Metric("epoch_loss", group="train", display_name="train loss"),
    ]
    with tf.summary.create_file_writer(logdir).as_default():
        hp_api.hparams_config(hparams=list(hparams), metrics=metrics)


def best_trials_table(tuner: AlexNetTuner, n: int = 5) -> str:
    best = ranked_trials(tuner.oracle)[:n]
    if not best:
        return "no completed trials"
    names = list(searched_values(best[0].hyperparameters.values))
    header = ["trial", tuner.oracle.objective.name, "epochs"] + names
    rows = [
        [t.trial_id, f"{t.score:.4f}", str(t.hyperparameters.values.get("tuner/epochs", "?"))]
        + [f"{v:.3g}" if isinstance(v, float) else str(v) for v in searched_values(t.hyperparameters.values).values()]
        for t in best
    ]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header] + rows]
    return "\n".join(lines)


def run_search(config: Config, study: Study, source: Source, overwrite: bool = False,
               out: TextIO = sys.stdout, callbacks: tuple = ()) -> AlexNetTuner:
    """Run (or resume) the study's Hyperband search to the end of its schedule.

    `callbacks` are added to every trial's fit; Keras Tuner deep-copies them per trial, so one
    that collects across trials must share its state through `__deepcopy__` (see EpochReporter).
    """
    import tensorflow as tf

    resuming = prepare_search(study, config, overwrite)
    schedule = schedule_for(config)
    say = lambda line: print(line, file=out, flush=True)  # noqa: E731

    device = describe_device()
    say(f"device: {device}")
    if config["study"]["expects_gpu"] and not tf.config.list_physical_devices("GPU"):
        estimate = estimate_seconds(config, time_training_steps(config), schedule)
        say(
            f"warning: no GPU is visible, and {config.path} is sized for one: this search would take "
            f"about {format_duration(estimate)} on this CPU. For a CPU run use CONFIG=tuning/cpu.toml "
            f"(make search CONFIG=tuning/cpu.toml). Continuing; Ctrl-C stops, the same command resumes."
        )

    x, y = source.train()
    d = config["data"]
    splits = make_splits(x, y, d["train_size"], d["val_size"])
    say(f"data: {source.describe()}: {splits.note}")
    del x, y

    progress = Progress(schedule.trials, schedule.epochs, out=out)
    tuner = make_tuner(config, study, overwrite=overwrite, progress=progress)
    write_provenance(study.root, config, extra={"data_source": source.describe(), "split": splits.note})
    finished = [t for t in tuner.oracle.trials.values() if t.status in ("COMPLETED", "FAILED")]
    progress.epochs_done = sum(trial_epochs(t) for t in finished)
    say(
        f"study {study.name}: {schedule.trials} trials, {schedule.epochs} epochs in the Hyperband schedule"
        + (f"; resuming with {len(finished)} finished" if resuming else "")
    )
    write_hparams_config(tuner, str(study.tensorboard_dir))

    seed = config["study"]["seed"]
    train = TrainingSet(splits.x_train, splits.y_train, d["batch_size"], seed=seed)
    val = make_dataset(splits.x_val, splits.y_val, d["batch_size"])
    callbacks = [
        keras.callbacks.TensorBoard(log_dir=str(study.tensorboard_dir), write_graph=False, profile_batch=0),
        EpochReporter(progress),
        *callbacks,
    ]
    tuner.search(train, validation_data=val, callbacks=callbacks, verbose=1 if out.isatty() else 0)

    summary = tuner.write_summary(finished=True)
    done = completed_trials(tuner)
    say(f"\nsearch finished in {format_duration(progress.clock() - progress.start)} "
        f"({format_duration(summary['wall_time_s'])} over all runs of this study; "
        f"{summary['trials_completed']} trials completed, {summary['trials_failed']} failed)")
    if done:
        best = ranked_trials(tuner.oracle)[0]
        write_json_atomic(study.root / "best_hyperparameters.json", {
            "trial_id": best.trial_id,
            config["search"]["objective"]: best.score,
            "epochs_trained": best.hyperparameters.values.get("tuner/epochs"),
            "hyperparameters": searched_values(best.hyperparameters.values),
        })
        say("best trials:\n" + best_trials_table(tuner))
    say(
        f"\nwritten to {study.root}/: tuner/ (Keras Tuner state), tensorboard/ (make tensorboard), "
        f"best_hyperparameters.json, search_summary.json, config.json, versions.json\nnext: make retrain-best CONFIG={config.path}"
    )
    return tuner
