"""A search's schedule: Hyperband's brackets and rounds as Keras Tuner's `HyperbandOracle` runs
them, or the one round of a random or Bayesian search. Plain arithmetic: `config` reads it for the
equal-budget default of max_trials, `plan` and the report for totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The tuners whose trials follow Hyperband's brackets (max_epochs, factor, hyperband_iterations); the
# others train max_trials configurations for max_epochs each.
BRACKETED = ("hyperband", "bohb")


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
    ceil(max_epochs / factor^(b - r)) epochs. tests/test_schedule.py drives the real oracle to the end
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


def search_schedule(s: dict) -> Schedule:
    """A preset's [search] as rounds: Hyperband's schedule, or for RandomSearch and Bayesian
    optimisation one round of max_trials configurations trained max_epochs each."""
    if s["tuner"] in BRACKETED:
        return hyperband_schedule(s["max_epochs"], s["factor"], s["hyperband_iterations"])
    n, epochs = s["max_trials"], s["max_epochs"]
    return Schedule((Round(bracket=0, round=0, trials=n, epochs=epochs, new_configs=n, epochs_spent=n * epochs),), 1)


def race_runs(config) -> int:
    """The fewest runs the confirmation's race for the lead adds (`confirm.race`): the leader's
    extra seeds, leader_seeds - seeds, when the first leader holds; each change of lead adds up to
    as many again."""
    c = config["confirm"]
    return max(0, c["leader_seeds"] - c["seeds"])


def finalist_runs(config) -> int:
    """Runs the finalists' confirmation trains (`confirm`): (finalists + baselines) x seeds, plus
    `race_runs`. Fewer when the search completed fewer distinct configurations than [confirm]
    finalists; none without finalists."""
    c = config["confirm"]
    if not c["finalists"]:
        return 0
    return (c["finalists"] + len(c["baselines"])) * c["seeds"] + race_runs(config)


def finalist_epochs(config) -> int:
    """Epochs of `finalist_runs`, each [confirm] epochs."""
    return finalist_runs(config) * config["confirm"]["epochs"]


TUNER_NAMES = {"hyperband": "Hyperband", "bohb": "BOHB", "random": "Random search", "bayesian": "Bayesian optimisation"}


def describe_search(s: dict) -> str:
    """A preset's [search] in one line, its tuner and budget: what `plan` and the report say."""
    if s["tuner"] in BRACKETED:
        drawn = " (each new configuration drawn by TPE from the trials so far)" if s["tuner"] == "bohb" else ""
        return (f"{TUNER_NAMES[s['tuner']]}{drawn}, max_epochs {s['max_epochs']}, factor {s['factor']}, hyperband_iterations "
                f"{s['hyperband_iterations']}")
    return (f"{TUNER_NAMES[s['tuner']]} (Keras Tuner's {s['tuner']} oracle), {s['max_trials']} trials of "
            f"{s['max_epochs']} epochs")


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
