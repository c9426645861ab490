"""What a Hyperband study will cost, before anything trains.

The schedule is read off Keras Tuner's own `HyperbandOracle` (its bracket sizes and epoch budgets),
so it cannot drift from what `search` will do. It assumes every trial completes: failed trials
promote fewer configurations and spend less.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .config import Config


@dataclass(frozen=True)
class Round:
    bracket: int
    round: int
    trials: int
    epochs: int  # cumulative epochs a model of this round has trained when it ends
    new_configs: int  # 0 for promoted rounds
    epochs_spent: int  # epochs this round trains, promoted trials continuing from the last round


@dataclass(frozen=True)
class Schedule:
    rounds: tuple[Round, ...]
    iterations: int

    @property
    def trials(self) -> int:
        return self.iterations * sum(r.trials for r in self.rounds)

    @property
    def new_configs(self) -> int:
        return self.iterations * sum(r.new_configs for r in self.rounds)

    @property
    def epochs(self) -> int:
        return self.iterations * sum(r.epochs_spent for r in self.rounds)

    @property
    def brackets(self) -> int:
        return len({r.bracket for r in self.rounds})


def hyperband_schedule(max_epochs: int, factor: int, iterations: int = 1) -> Schedule:
    """One Hyperband iteration's rounds, in the order Keras Tuner runs them.

    Keras Tuner's HyperbandOracle (keras_tuner/src/tuners/hyperband.py), written out with the same
    arithmetic: brackets count down from the most exploratory; bracket b has b + 1 rounds; round r
    of bracket b runs ceil(ceil(1 + log_factor(max_epochs)) / (b + 1) * factor^(b - r)) trials to
    ceil(max_epochs / factor^(b - r)) epochs. tests/test_plan.py drives the real oracle to the end
    and checks these counts against it.
    """
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:  # the oracle's min_epochs is 1
        epochs /= factor
        brackets += 1
    last_round_size = math.ceil(1 + math.log(max_epochs, factor))
    rounds = []
    for bracket in reversed(range(brackets)):
        previous_epochs = 0
        for rnd in range(bracket + 1):
            trials = math.ceil(last_round_size / (bracket + 1) * factor ** (bracket - rnd))
            epochs = math.ceil(max_epochs / factor ** (bracket - rnd))
            rounds.append(
                Round(
                    bracket=bracket,
                    round=rnd,
                    trials=trials,
                    epochs=epochs,
                    new_configs=trials if rnd == 0 else 0,
                    epochs_spent=trials * (epochs - previous_epochs),
                )
            )
            previous_epochs = epochs
    return Schedule(tuple(rounds), iterations)


def schedule_for(config: Config) -> Schedule:
    return search_schedule(config["search"])


def search_schedule(s: dict) -> Schedule:
    """A preset's [search] as rounds: Hyperband's schedule, or for RandomSearch and Bayesian
    optimisation one round of max_trials configurations trained max_epochs each."""
    if s.get("tuner", "hyperband") == "hyperband":
        return hyperband_schedule(s["max_epochs"], s["factor"], s["hyperband_iterations"])
    n, epochs = s["max_trials"], s["max_epochs"]
    return Schedule((Round(bracket=0, round=0, trials=n, epochs=epochs, new_configs=n, epochs_spent=n * epochs),), 1)


def format_schedule(schedule: Schedule) -> str:
    if len(schedule.rounds) == 1:  # RandomSearch, Bayesian optimisation: no brackets, no promotions
        r = schedule.rounds[0]
        return f"{r.trials} trials of {r.epochs} epochs each, from scratch: {schedule.epochs} epochs"
    lines = [
        f"{'bracket':>7} {'round':>5} {'trials':>6} {'epochs each':>11} {'new configs':>11} {'epochs spent':>12}",
    ]
    for r in schedule.rounds:
        lines.append(
            f"{r.bracket:>7} {r.round:>5} {r.trials:>6} {r.epochs:>11} {r.new_configs:>11} {r.epochs_spent:>12}"
        )
    it = f" x {schedule.iterations} iterations" if schedule.iterations > 1 else ""
    lines.append(
        f"total{it}: {schedule.brackets} brackets, {schedule.trials} trials "
        f"({schedule.new_configs} new configurations, the rest promoted), {schedule.epochs} epochs"
    )
    return "\n".join(lines)


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

    from .data import TrainingSet, make_dataset
    from .distribute import speed_for
    from .hypermodel import AlexNetHyperModel

    batch = config["data"]["batch_size"]
    precision, jit, _ = speed_for(config)
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

    model.evaluate(make_dataset(x[:batch], y[:batch], batch), verbose=0)
    start = time.perf_counter()
    model.evaluate(make_dataset(x, y, batch), verbose=0)
    evaluate = (time.perf_counter() - start) / len(x)
    return StepTiming(train, evaluate)


def estimate_seconds(config: Config, timing: StepTiming, schedule: Schedule | None = None) -> float:
    """Search duration: epochs x (training images + validation images), at the measured rates."""
    schedule = schedule or schedule_for(config)
    d = config["data"]
    per_epoch = d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image
    return schedule.epochs * per_epoch


def estimate_retrain_seconds(config: Config, timing: StepTiming, test_images: int = 10_000) -> float:
    """One retrain seed: the preset's epochs of training and validation, then train, val and the
    test set evaluated once each."""
    d = config["data"]
    return config["retrain"]["epochs"] * (
        d["train_size"] * timing.train_s_per_image + d["val_size"] * timing.eval_s_per_image
    ) + (d["train_size"] + d["val_size"] + test_images) * timing.eval_s_per_image


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"
