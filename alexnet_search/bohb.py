"""BOHB (Falkner, Klein and Hutter 2018): Hyperband's brackets, with each new configuration drawn by
a model of the trials finished so far instead of at random. Keras Tuner has no such oracle (its
issue #754); this is its Hyperband oracle with the draw replaced, so it runs distributed, resumes
and extends as Hyperband does. The model is Optuna's TPE sampler, fitted afresh at each draw on the
finished trials of one budget:

- the largest budget (Hyperband's `tuner/epochs`) at which at least d + 1 trials completed, d being
  the searched dimensions (BOHB's N_min); before any budget has that many, configurations are random;
- a third of the draws stay random whatever the model (BOHB's random fraction), so a model misled by
  short trials still sees the whole space;
- each draw is seeded from the oracle's seed state (saved with the oracle), so a study repeats its
  draws, resumed or not, given the same trials.

The model is rebuilt from the oracle's trials at every draw: no state of its own to save, resume or
share between a chief and its workers.
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

from keras_tuner.engine import hyperparameters as hp_module
from keras_tuner.oracles import HyperbandOracle

# BOHB's default share of configurations drawn at random once the model exists.
RANDOM_FRACTION = 1 / 3
# Bookkeeping on a configuration the model drew: the budget (epochs) of the trials it was fitted on.
BUDGET = "bohb/budget"


def _distribution(hp) -> Any:
    """Optuna's distribution for a Keras Tuner hyperparameter; None for one with a single value."""
    import optuna.distributions as d

    if isinstance(hp, hp_module.Fixed):
        return None
    if isinstance(hp, hp_module.Boolean):
        return d.CategoricalDistribution([False, True])
    if isinstance(hp, hp_module.Choice):
        return d.CategoricalDistribution(list(hp.values)) if len(hp.values) > 1 else None
    log = hp.sampling == "log"
    if isinstance(hp, hp_module.Int):
        # Optuna takes no step on a log scale; Keras Tuner's log steps are rare and multiplicative.
        return d.IntDistribution(hp.min_value, hp.max_value, log=log, step=1 if log else (hp.step or 1))
    return d.FloatDistribution(hp.min_value, hp.max_value, log=log, step=None if log else hp.step)


def _inside(dist, value) -> bool:
    """Whether a recorded value is one `dist` can hold (a study's space may have narrowed since)."""
    if hasattr(dist, "choices"):
        return any(type(value) is type(c) and value == c for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return dist.low <= value <= dist.high


class BOHBOracle(HyperbandOracle):
    """Keras Tuner's Hyperband oracle whose new configurations come from TPE (module docstring)."""

    def _random_values(self):
        space = self.hyperparameters.space
        distributions = {hp.name: dist for hp in space if (dist := _distribution(hp)) is not None}
        budget, observed = self._observations(distributions)
        seed = self._seed_state  # the coin and the model are seeded by it alone: no state of their own
        if not observed or random.Random(seed).random() < RANDOM_FRACTION:
            return super()._random_values()  # Hyperband's own draw: until the model exists, the same
        self._seed_state += max(1, len(space))  # as Keras Tuner's random draw advances it
        values = self._suggest(distributions, observed, seed)
        for hp in space:  # the single-valued ones, which the model does not see
            if hp.name not in values:
                values[hp.name] = hp.value if isinstance(hp, hp_module.Fixed) else hp.default
        if self._duplicate(values):
            return super()._random_values()
        return {**values, BUDGET: budget}

    def _observations(self, distributions: dict) -> tuple[int, list[tuple[dict, float]]]:
        """(budget, [(values, score)]) of the completed trials at the largest budget (epochs) that has
        d + 1 of them; (0, []) when none has."""
        by_budget: dict[int, list] = {}
        for trial in self.trials.values():
            if trial.status != "COMPLETED" or trial.score is None or not math.isfinite(trial.score):
                continue
            values = trial.hyperparameters.values
            if all(name in values and _inside(distributions[name], values[name]) for name in distributions):
                by_budget.setdefault(values.get("tuner/epochs", 0), []).append(
                    ({n: values[n] for n in distributions}, trial.score))
        enough = [b for b, seen in by_budget.items() if len(seen) >= len(distributions) + 1]
        return (max(enough), by_budget[max(enough)]) if enough else (0, [])

    def _suggest(self, distributions: dict, observed: list, seed: int) -> dict:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed % 2**32, n_startup_trials=0, multivariate=True)
            study = optuna.create_study(direction="maximize" if self.objective.direction == "max" else "minimize",
                                        sampler=sampler)
            for values, score in observed:
                study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, value=score))
            return dict(study.ask(distributions).params)
