"""Which hyperparameters matter: Optuna's fANOVA evaluator over the completed trials of one space.

fANOVA (Hutter, Hoos and Leyton-Brown, 2014) fits a random forest from hyperparameter values to
scores and splits the variance of its predictions into each hyperparameter's share. Optuna's
evaluator does it as Optuna ships it; the trials are handed over as an Optuna study built in
memory, each hyperparameter with the domain its preset table declares.

Hyperband trains its trials for different budgets, and a 1-epoch score is not a 27-epoch one: the
budget (the epochs a trial's model trained) is one more input, so its share is reported instead of
being credited to whichever hyperparameters happened to get the long runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ..trials import direction
from .load import Trial

BUDGET = "epochs (budget)"
MIN_TRIALS = 8  # fewer: a forest of a handful of points ranks noise


FORESTS = 5  # fANOVA's forest is random: its shares are averaged over this many, and their range shown


@dataclass(frozen=True)
class Importance:
    # (name, mean share of the explained variance, lowest, highest over the forests), largest first;
    # BUDGET included
    shares: list[tuple[str, float, float, float]]
    trials: int


def _distribution(entry: dict[str, Any], seen: list):
    """The domain a [space.NAME] table declares, stretched to every value `seen` in the trials (a
    study pooled with one searched before a range was narrowed, a value set by hand)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if entry["type"] == "choice":
        return CategoricalDistribution(list(entry["values"]) + [v for v in dict.fromkeys(seen) if v not in entry["values"]])
    lo, hi = min([entry["min"], *seen]), max([entry["max"], *seen])
    if entry["type"] == "int":
        step = entry.get("step") or 1
        fits = all((v - lo) % step == 0 for v in seen) and (hi - lo) % step == 0
        return IntDistribution(lo, hi, step=step if fits else 1)
    log = entry.get("sampling") == "log"
    step = None if log or not entry.get("step") else entry["step"]
    if step and not all(abs(round((v - lo) / step) * step - (v - lo)) < 1e-9 for v in [*seen, hi]):
        step = None
    return FloatDistribution(lo, hi, log=log, step=step)


def importance(space: dict[str, dict], trials: list[Trial], objective: str, forests: int = FORESTS) -> Importance | None:
    """Each searched hyperparameter's share of what explains the completed trials' scores (and the
    budget's, where trials trained for different epochs), over `forests` seeded forests; None with
    fewer than MIN_TRIALS."""
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
    if len(done) < MIN_TRIALS:
        return None
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    distributions = {name: _distribution(entry, [t.values[name] for t in done if name in t.values])
                     for name, entry in space.items()}
    budgets = sorted({t.epochs for t in done})
    if len(budgets) > 1:
        distributions[BUDGET] = IntDistribution(budgets[0], budgets[-1])
    study = optuna.create_study(direction="maximize" if direction(objective) == "max" else "minimize")
    for t in done:
        params = {name: t.values[name] for name in space if name in t.values}
        if len(budgets) > 1:
            params[BUDGET] = t.epochs
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={n: distributions[n] for n in params}, value=float(t.score)))
    runs = [get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), normalize=True)
            for seed in range(forests)]
    shares = [(name, statistics.fmean(float(r[name]) for r in runs), min(float(r[name]) for r in runs),
               max(float(r[name]) for r in runs)) for name in runs[0]]
    return Importance(sorted(shares, key=lambda s: -s[1]), len(done))
