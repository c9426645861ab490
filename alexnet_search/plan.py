"""What a study will cost, before anything trains: its schedule (`schedule`) for a preset, and
time estimates from a few training steps timed on this machine, for one process or for N workers
side by side (`make search WORKERS=N`). It assumes every trial completes: failed trials promote
fewer configurations and spend less.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import numpy as np

from .config import Config, trains_on_val
from .console import format_duration, printer
from .schedule import Schedule, describe_search, finalist_epochs, finalist_runs, format_schedule, race_runs, search_schedule


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
    from .devices import precision_and_xla
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
    (`launcher.placement`), so that the timed steps run at a worker's speed. Call it after
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
    run's length is [confirm] epochs, so `workers` train them in rounds."""
    return math.ceil(finalist_runs(config) / workers)


def estimate_finalists_seconds(config: Config, timing: StepTiming, workers: int = 1) -> float:
    """The finalists' confirmation: each run [confirm] epochs of training and validation, in
    `confirmation_rounds`."""
    return confirmation_rounds(config, workers) * config["confirm"]["epochs"] * _epoch_seconds(config, timing)


def estimate_retrain_seconds(config: Config, timing: StepTiming, test_images: int = 10_000) -> float:
    """One retrain seed: the preset's epochs of training and validation (on train+val, training
    on both and validating nothing), then train, val and the test set evaluated once each."""
    d = config["data"]
    epoch_s = ((d["train_size"] + d["val_size"]) * timing.train_s_per_image
               if trains_on_val(config) else _epoch_seconds(config, timing))
    return (config["retrain"]["epochs"] * epoch_s
            + (d["train_size"] + d["val_size"] + test_images) * timing.eval_s_per_image)


def print_plan(config: Config, workers: int | str = 0, estimate: bool = True, start_keras: Callable = lambda: None,
               out: TextIO = sys.stdout) -> None:
    """`make plan`: the preset's schedule, its confirmation and retrain, then (`estimate`) the
    durations from steps timed here, for one process or `workers` side by side ("auto": as many as
    `search --workers auto` starts here). `start_keras` imports Keras, only if it times steps."""
    say = printer(out)
    schedule = search_schedule(config["search"])
    d, m = config["data"], config["model"]
    if config["study"]["description"]:
        say(config["study"]["description"])
    say(f"{config.path}: {describe_search(config['search'])}; {d['train_size']} training + {d['val_size']} "
        f"validation images at {d['image_size']}x{d['image_size']}, batch {d['batch_size']}; "
        f"width x{m['width_multiplier']}, conv1 {m['conv1_kernel']}x{m['conv1_kernel']}")
    say(format_schedule(schedule))
    c, epochs = config["confirm"], config["confirm"]["epochs"]
    if c["finalists"]:
        against = f" and baseline {', '.join(c['baselines'])}" if c["baselines"] else ""
        race = race_runs(config)
        say(f"then the finalists: the best {c['finalists']} configurations{against} trained again with "
            f"{c['seeds']} seed{'s' if c['seeds'] > 1 else ''} each for {epochs} epochs"
            + (f", the best mean then with {race} more (again for each new leader)" if race else "")
            + f": {finalist_epochs(config)} epochs" + (" or more" if race else ""))
    else:
        say("then no confirmation ([confirm] finalists = 0): the search's best trial is adopted")
    say(f"then retrain-best: {config['retrain']['epochs']} epochs per seed"
        + (" on the training and validation images" if trains_on_val(config) else ""))
    if estimate:
        start_keras()
        _print_estimates(config, schedule, workers, say)


def _print_estimates(config: Config, schedule: Schedule, workers: int | str, say) -> None:
    from . import backend, devices, launcher

    count, threads = 1, None
    if workers:
        gpus = devices.visible_gpus()
        count, why = (launcher.auto_workers(gpus, len(os.sched_getaffinity(0))) if workers == "auto"
                      else (workers, f"{workers} worker(s)"))
        say(f"\n--workers {workers}: {why}")
        if not gpus and "TF_NUM_INTRAOP_THREADS" not in os.environ:  # as the launcher holds each worker
            threads = launcher.cpu_threads(len(os.sched_getaffinity(0)), count)
            hold_threads(threads)
    timing = time_training_steps(config)
    search_s = estimate_seconds(config, timing, schedule, count)
    finalists_s = estimate_finalists_seconds(config, timing, count)
    retrain_s = estimate_retrain_seconds(config, timing)
    held = f" on {threads} thread(s), a worker's share" if threads else ""
    say(f"\nmeasured on {backend.describe_device()}{held}, Keras backend {backend.version()}: "
        f"{1 / timing.train_s_per_image:.0f} training images/s, "
        f"{1 / timing.eval_s_per_image:.0f} inference images/s (default hyperparameters)")
    rounds = confirmation_rounds(config, count)
    side_by_side = (f" with {count} workers side by side (the search at least "
                    f"{format_duration(search_s)}: a Hyperband round waits for its last trial" if count > 1 else
                    f" (the search {format_duration(search_s)}")
    say(f"estimated: make search {format_duration(search_s + finalists_s)}{side_by_side}, its finalists "
        f"{format_duration(finalists_s)}" + (f" in {rounds} rounds" if count > 1 and finalists_s else "")
        + f"), retrain-best {format_duration(retrain_s)} per seed "
        f"(widths vary by trial; failed trials shorten the search)")
