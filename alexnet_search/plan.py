"""What a study will cost, before anything trains: its schedule (`schedule`) for a preset, and
time estimates from a few training steps timed on this machine. It assumes every trial completes:
failed trials promote fewer configurations and spend less.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .config import Config
from .schedule import Schedule, finalist_epochs, search_schedule


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


def estimate_seconds(config: Config, timing: StepTiming, schedule: Schedule | None = None) -> float:
    """Search duration: epochs x (training images + validation images), at the measured rates."""
    schedule = schedule or search_schedule(config["search"])
    d = config["data"]
    per_epoch = d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image
    return schedule.epochs * per_epoch


def estimate_finalists_seconds(config: Config, timing: StepTiming) -> float:
    """The finalists' confirmation: each run the retrain's epochs of training and validation."""
    d = config["data"]
    return finalist_epochs(config) * (d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image)


def estimate_retrain_seconds(config: Config, timing: StepTiming, test_images: int = 10_000) -> float:
    """One retrain seed: the preset's epochs of training and validation, then train, val and the
    test set evaluated once each."""
    d = config["data"]
    return config["retrain"]["epochs"] * (
        d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image
    ) + (d["train_size"] + d["val_size"] + test_images) * timing.eval_s_per_image
