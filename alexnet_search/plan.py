"""What a study will cost, before anything trains: its schedule (`schedule`) for a preset, and
time estimates from a few training steps timed on this machine, for one process or for N workers
side by side (`make search WORKERS=N`). It assumes every trial completes: failed trials promote
fewer configurations and spend less.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .config import Config
from .schedule import Schedule, finalist_runs, search_schedule


@dataclass(frozen=True)
class StepTiming:
    train_s_per_image: float
    eval_s_per_image: float


def time_training_steps(config: Config, steps: int = 3) -> StepTiming:
    """Time a few training and inference steps of the default model at the preset's size.

    Training goes through the real input pipeline (augmentation included). A first pass of each
    traces the graph and is not counted.
    """
    import keras_tuner

    from .data import Batches, TrainingSet
    from .distribute import precision_and_xla
    from .hypermodel import AlexNetHyperModel

    batch = config["data"]["batch_size"]
    precision, jit, _ = precision_and_xla(config)
    hypermodel = AlexNetHyperModel.from_config(config, precision=precision, jit_compile=jit)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch * steps)

    hypermodel.fit(hp, model, TrainingSet(x[:batch], y[:batch], batch), epochs=1, verbose=0)
    start = time.perf_counter()
    hypermodel.fit(hp, model, TrainingSet(x, y, batch), epochs=1, verbose=0)
    train = (time.perf_counter() - start) / len(x)

    model.evaluate(Batches(x[:batch], y[:batch], batch), verbose=0)
    start = time.perf_counter()
    model.evaluate(Batches(x, y, batch), verbose=0)
    evaluate = (time.perf_counter() - start) / len(x)
    return StepTiming(train, evaluate)


def hold_threads(threads: int) -> None:
    """Hold TensorFlow's thread pools to `threads`, as the launcher holds a CPU worker's
    (`distribute.placement`), so that the timed steps run at a worker's speed. Call it after
    Keras is imported and before anything runs. JAX's XLA:CPU pool has no such switch."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _epoch_seconds(config: Config, timing: StepTiming) -> float:
    d = config["data"]
    return d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image


def estimate_seconds(config: Config, timing: StepTiming, schedule: Schedule | None = None, workers: int = 1) -> float:
    """Search duration: epochs x (training images + validation images), at the measured rates,
    shared by `workers`: the least it can take, as a Hyperband round waits for its last trial."""
    schedule = schedule or search_schedule(config["search"])
    return schedule.epochs * _epoch_seconds(config, timing) / workers


def confirmation_rounds(config: Config, workers: int = 1) -> int:
    """Runs of the finalists' confirmation one worker trains, when the first leader holds: each
    run's length is the retrain's, so `workers` train them in rounds."""
    return math.ceil(finalist_runs(config) / workers)


def estimate_finalists_seconds(config: Config, timing: StepTiming, workers: int = 1) -> float:
    """The finalists' confirmation: each run the retrain's epochs of training and validation, in
    `confirmation_rounds`."""
    return confirmation_rounds(config, workers) * config["retrain"]["epochs"] * _epoch_seconds(config, timing)


def estimate_retrain_seconds(config: Config, timing: StepTiming, test_images: int = 10_000) -> float:
    """One retrain seed: the preset's epochs of training and validation, then train, val and the
    test set evaluated once each."""
    d = config["data"]
    return (config["retrain"]["epochs"] * _epoch_seconds(config, timing)
            + (d["train_size"] + d["val_size"] + test_images) * timing.eval_s_per_image)
