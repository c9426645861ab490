"""A Keras Tuner trial's record as this package reads it: its searched values without the
bookkeeping, the epochs it trained, where it ended, how it ranks, and why it failed.

Plain data over what Keras Tuner writes (trial.json, oracle.json) and what confirm.py writes
(finalists.json): nothing here imports Keras or Keras Tuner, so the report reads studies without them.
"""

from __future__ import annotations

from typing import Any

from .space import BOUNDS


# Bookkeeping in a trial's hyperparameter values (Hyperband's tuner/epochs, tuner/trial_id, ...; a
# finalist's finalist/seed, ...): never searched, never shown as a hyperparameter. Hyperparameter
# names (space.py) have no "/".
def is_bookkeeping(name: str) -> bool:
    return "/" in name


# Keras Tuner's end states; INVALID is a trial whose hyperparameters could not build a model.
ENDED = ("COMPLETED", "FAILED", "INVALID")
FAILED = ("FAILED", "INVALID")


def direction(objective: str) -> str:
    """"max" for an accuracy, "min" for a loss: the objective's name says which way is better."""
    return "min" if objective.endswith("loss") else "max"


def clean_value(value: Any) -> Any:
    """Round away float noise from stepped ranges (0.6000000000000001 -> 0.6)."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


def searched_values(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameter values without the bookkeeping entries (`is_bookkeeping`), each as
    its own type: Keras Tuner hands a boolean back as 0 or 1, and what is shown and written
    (best_hyperparameters.json, finalists.json, the HParams dashboard) says false or true."""
    return {k: clean_value(BOUNDS[k].typed(v) if k in BOUNDS else v)
            for k, v in values.items() if not is_bookkeeping(k)}


def model_epochs(values: dict[str, Any], max_epochs: int) -> int:
    """Epochs a trial's model has trained when the trial ends: Hyperband's tuner/epochs (a promoted
    trial's include its parent's); a RandomSearch or Bayesian trial trains max_epochs."""
    return int(values.get("tuner/epochs", max_epochs))


def trial_epochs(values: dict[str, Any], max_epochs: int) -> int:
    """Epochs a trial itself trains: `model_epochs` less where a promoted trial starts."""
    return model_epochs(values, max_epochs) - int(values.get("tuner/initial_epoch", 0))


def best_epoch(best_step: int | None, values: dict[str, Any]) -> int | str:
    """The epoch (from 1, counted from the configuration's start) where a trial scored best.
    Keras Tuner's best_step counts from the start of this trial's fit, at tuner/initial_epoch."""
    if best_step is None:
        return "?"
    return int(best_step) + 1 + int(values.get("tuner/initial_epoch", 0))


def rank_key(score: float, trial_id: str, direction: str) -> tuple:
    """Sort key, best first; ties go to the earlier trial.

    Keras Tuner's `get_best_trials` breaks ties by dictionary order, which differs between the
    search process and a reloaded study (trial files are globbed), so two commands could name
    different "best" trials.
    """
    return (-score if direction == "max" else score, trial_id)


def rank_finalists(finalists: list[dict], way: str) -> list[dict]:
    """finalists.json's finalists (`confirm`), best first: complete ones by mean score (`way`: "max"
    or "min"; ties to more runs, then the better search rank), then the rest."""
    sign = -1.0 if way == "max" else 1.0
    return sorted(finalists, key=lambda f: (not f["complete"], sign * f["mean"] if f["complete"] else 0.0,
                                            -len(f.get("runs", ())), f["study"], f["rank"]))


def first_raced(ranked: list[dict], leader_seeds: int) -> dict | None:
    """The best of `ranked` (rank_finalists') that may be adopted: complete, on at least
    `leader_seeds` runs. A finished race leaves its best mean there anyway; where studies are
    pooled, another study's runner-up on one lucky seed must not outrank a raced pick."""
    return next((f for f in ranked if f["complete"] and len(f["runs"]) >= leader_seeds), None)


def mean_spread(mean: float, std: float | None, pm: str = "±") -> str:
    """A confirmed mean and its standard deviation; one run has none."""
    return f"{mean:.4f} {pm} {std:.4f}" if std is not None else f"{mean:.4f} (one run)"


def run_seeds(finalists: list[dict]) -> list[int]:
    """Every seed any of `finalists` (finalists.json's) ran: a table's columns."""
    return sorted({r["seed"] for f in finalists for r in f["runs"]})


def contender_name(entry: dict) -> str:
    """A finalist, an adopted configuration or a retrain's metrics, as lines and tables name it:
    "trial 0018", or "baseline paper" for a preset baseline that competed in the confirmation."""
    return f"baseline {entry['baseline']}" if entry.get("baseline") else f"trial {entry.get('trial_id')}"


def failure_reason(message: str | None) -> str:
    """The last line of a failed trial's traceback, without the exception's class name."""
    lines = (message or "").strip().splitlines()
    if not lines:
        return "no reason recorded"
    name, sep, text = lines[-1].partition(": ")
    return text if sep and name.replace(".", "").replace("_", "").isalnum() else lines[-1]

