"""The Hyperband search: Keras Tuner's own tuner, with progress lines and crash-safe state files.

Resuming is Keras Tuner's `overwrite=False`: running the same command again reloads
`tuner/oracle.json` and the trial records, skips finished trials and re-runs the one that was
interrupted. Its state files are written atomically here, so a crash mid-write cannot corrupt them.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import Any, TextIO

import keras
import keras_tuner
from keras_tuner.src.tuners.hyperband import HyperbandOracle

from .config import Config
from .data import Source, TrainingSet, make_dataset, make_splits
from .errors import UserError
from .hypermodel import AlexNetHyperModel
from .plan import estimate_seconds, format_duration, schedule_for, time_training_steps
from .progress import EpochReporter, Progress
from .study import (
    Study, describe_device, failure_reason, prepare_search, rank_key, read_json, require_study, searched_values,
    write_json_atomic, write_provenance,
)



class _AtomicHyperbandOracle(HyperbandOracle):
    """Keras Tuner's Hyperband oracle, crash-safe.

    Its files are written atomically, and `reload` repairs the two states a kill between two of
    Keras Tuner's writes leaves behind (oracle.json and trial.json are separate files):
    - a trial whose trial.json says it finished while oracle.json still lists it as running
      (end_trial saves before it forgets the running trial): Keras Tuner would run it again;
    - a trial.json that oracle.json never recorded (create_trial saves the trial first): Keras
      Tuner would keep it as a phantom that never runs.
    """

    def save(self):
        write_json_atomic(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_json_atomic(self._get_trial_dir(trial.trial_id) + "/trial.json", trial.get_state())

    def reload(self):
        super().reload()
        for trial_id in [t for t in self.trials if t not in self.start_order]:
            del self.trials[trial_id]  # its id is reused by the next trial, which rewrites its folder
        for trial_id in list(self._retry_queue):
            if self.trials[trial_id].status in ("COMPLETED", "FAILED"):
                self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
        self.save()


class _TrialGuard(keras.callbacks.Callback):
    """Stops a trial whose training loss is no longer finite, or has diverged, and says why.

    Checked per epoch (a per-batch check would force a device sync every step). With Keras'
    probability clipping the cross-entropy of 10 classes tops out near 16; a model at chance
    scores ln 10 = 2.3, so an epoch mean above 3 x ln 10 means confidently wrong: diverged.
    One instance serves every trial (Keras Tuner deep-copies search callbacks per trial).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.limit = 3 * math.log(num_classes)
        self.reason: str | None = None

    def __deepcopy__(self, memo):
        return self

    def on_train_begin(self, logs=None):
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (not math.isfinite(loss) or loss > self.limit):
            kind = "became non-finite" if not math.isfinite(loss) else f"diverged (above {self.limit:.1f})"
            self.reason = f"training loss {kind}: {loss:.4g} at epoch {epoch + 1}"
            self.model.stop_training = True


class AlexNetTuner(keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` with this package's progress output and seeding.

    Keras Tuner's own per-trial display is silenced in favour of `Progress`, which knows the
    study's total trial count and time left.
    """

    def __init__(self, hypermodel: AlexNetHyperModel, config: Config, study: Study,
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
            self, oracle=oracle, hypermodel=hypermodel, directory=str(study.root),
            project_name=study.tuner_dir.name, overwrite=overwrite, **kwargs,
        )
        self.seed = config["study"]["seed"]
        self.progress = progress
        self._guard = _TrialGuard()
        self.summary_file = study.root / "search_summary.json"
        self.tensorboard_dir = study.tensorboard_dir
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

    def _log_epochs(self, trial) -> None:
        """The epochs a trial's model has trained, as the HParams tab's `epochs` metric."""
        import tensorflow as tf

        run = self.tensorboard_dir / trial.trial_id / "execution0"
        if run.is_dir():
            with tf.summary.create_file_writer(str(run)).as_default():
                tf.summary.scalar("epochs", int(trial.hyperparameters.values.get("tuner/epochs", 0)), step=0)

    def on_search_begin(self):
        from keras_tuner.src import config as kt_config

        self.oracle.verbose = 0
        # Keras Tuner prints every failed trial's traceback; the trial line says why in one line
        # and trial.json keeps the whole traceback.
        kt_config.DEBUG = False
        super().on_search_begin()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        # A trial interrupted by a crash is re-run from scratch: drop its half-written curves.
        shutil.rmtree(self.tensorboard_dir / trial.trial_id, ignore_errors=True)
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
        """Keras Tuner's trial, seeded, and failed with a one-line reason on NaN, divergence or OOM."""
        import tensorflow as tf

        # Weights and shuffling follow the study seed, offset per trial so that trials differ.
        keras.utils.set_random_seed(self.seed * 100_003 + int(trial.trial_id))
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), self._guard]
        try:
            histories = super().run_trial(trial, *args, **kwargs)
        except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise keras_tuner.errors.FailedTrialError(f"out of memory: {first}") from None
        if self._guard.reason:
            raise keras_tuner.errors.FailedTrialError(self._guard.reason)
        return histories

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.write_summary()
        self._log_epochs(trial)
        if self.progress:
            trial = self.oracle.get_trial(trial.trial_id)
            best = ranked_trials(self.oracle)
            objective = self.oracle.objective.name
            if trial.status == "COMPLETED":
                result = f"best {objective} {trial.score:.4f} at epoch {_best_epoch(trial)}"
            else:
                result = f"{trial.status.lower()}: {failure_reason(trial.message)}"
                if "FailedTrialError" not in (trial.message or ""):
                    result += f" (traceback in {self.get_trial_dir(trial.trial_id)}/trial.json)"
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
    return AlexNetTuner(AlexNetHyperModel.from_config(config), config, study, overwrite=overwrite, progress=progress)


def completed_trials(tuner: AlexNetTuner) -> list:
    return [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]


def ranked_trials(oracle) -> list:
    """Completed trials, best first; ties go to the earlier trial (see `study.rank_key`)."""
    done = [t for t in oracle.trials.values() if t.status == "COMPLETED"]
    return sorted(done, key=lambda t: rank_key(t.score, t.trial_id, oracle.objective.direction))


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
        hp_api.Metric("epochs", display_name="epochs"),
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

    say = lambda line: print(line, file=out, flush=True)  # noqa: E731
    # Everything that can fail on bad input is read before anything is written.
    x, y = source.train()
    d = config["data"]
    splits = make_splits(x, y, d["train_size"], d["val_size"])
    del x, y
    resuming = prepare_search(study, config, overwrite)
    schedule = schedule_for(config)

    say(f"device: {describe_device()}")
    if config["study"]["expects_gpu"] and not tf.config.list_physical_devices("GPU"):
        estimate = estimate_seconds(config, time_training_steps(config), schedule)
        say(
            f"warning: no GPU is visible, and {config.path} is sized for one: this search would take "
            f"about {format_duration(estimate)} on this CPU. For a CPU run use CONFIG=tuning/cpu.toml "
            f"(make search CONFIG=tuning/cpu.toml). Continuing; Ctrl-C stops, the same command resumes."
        )
    say(f"data: {source.describe()}: {splits.note}")

    progress = Progress(schedule.trials, schedule.epochs, out=out)
    tuner = make_tuner(config, study, overwrite=overwrite, progress=progress)
    tuner.save()  # reloadable from the start: a kill during the first trial resumes too
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
    try:
        tuner.search(train, validation_data=val, callbacks=callbacks, verbose=1 if out.isatty() else 0)
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        limit = config["search"]["max_consecutive_failed_trials"]
        last = [t for t in tuner.oracle.trials.values() if t.message]
        reason = failure_reason(last[-1].message) if last else "see the trial lines above"
        raise UserError(
            f"{limit} trials in a row failed (search.max_consecutive_failed_trials), the last with: {reason}; "
            f"the study stopped. Check the preset's ranges and the machine's memory, then rerun to resume"
        ) from None

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
