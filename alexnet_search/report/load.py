"""Reading a study folder: its trials (tuner/trial_*/trial.json), JSON results and TensorBoard scalars.
Keras Tuner is not imported: a report reads the files as they are on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tboard
from ..errors import UserError
from ..files import read_json, restore_dir
from ..trials import direction, model_epochs, rank_key, searched_values


@dataclass(frozen=True)
class Trial:
    """One tuner/trial_*/trial.json, Hyperband's bookkeeping split from the hyperparameters."""

    id: str
    status: str
    score: float | None
    values: dict[str, Any]  # the searched hyperparameters only
    epochs: int  # the model's total epochs at the trial's end; a promoted trial's include its parent's
    initial_epoch: int
    bracket: int | None
    parent: str | None
    message: str


def read(path: Path, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise UserError(f"{path} is missing; rerun `make search` with this study's CONFIG and STUDY to rewrite it")
        return None
    return read_json(path)


def load_trials(tuner_dir: Path, max_epochs: int) -> list[Trial]:
    """Every trial of the study, in the order Keras Tuner created them (a trial without Hyperband's
    tuner/epochs, RandomSearch's or Bayesian optimisation's, trained max_epochs)."""
    trials = []
    for path in sorted(tuner_dir.glob("trial_*/trial.json")):
        state = read(path)
        try:
            hp = state["hyperparameters"]["values"]
            score = state.get("score")
            trials.append(Trial(
                id=str(state["trial_id"]), status=str(state["status"]),
                score=None if score is None else float(score), values=searched_values(hp),
                epochs=model_epochs(hp, max_epochs), initial_epoch=int(hp.get("tuner/initial_epoch", 0)),
                bracket=hp.get("tuner/bracket"), parent=hp.get("tuner/trial_id"),
                message=str(state.get("message") or "").strip(),
            ))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path} is not a Keras Tuner trial record ({type(exc).__name__}: {exc}); it was "
                            f"edited or comes from another tool: restore it, or delete that trial's folder") from None
    return sorted(trials, key=lambda t: t.id)


def ranked(trials: list[Trial], objective: str) -> list[Trial]:
    """Completed trials, best first, ties to the earlier trial (as search.ranked_trials)."""
    return sorted((t for t in trials if t.status == "COMPLETED" and t.score is not None),
                  key=lambda t: rank_key(t.score, t.id, direction(objective)))


def read_scalars(run: Path, tag: str) -> dict[int, float]:
    """{step: value} of one TensorBoard run folder; a later event file overrides an earlier one."""
    out: dict[int, float] = {}
    for event in tboard.events(run):
        for v in event.summary.value:
            if v.tag == tag:
                try:
                    out[int(event.step)] = tboard.scalar_value(v)
                except (TypeError, ValueError):  # not a scalar (another tool's, or crafted): not a point
                    continue
    return out


def fit_seconds(run: Path) -> float | None:
    """Seconds a trial's `fit` ran, from its TensorBoard event times: the train writer opens as
    fit starts, and the last validation summary closes its last epoch. None without both."""
    train = [e.wall_time for e in tboard.events(run / "train")]
    val = [e.wall_time for e in tboard.events(run / "validation")]
    return max(val) - min(train) if train and val else None


def curve(trial: Trial, by_id: dict[str, Trial], tensorboard: Path, tag: str,
          seen: frozenset = frozenset()) -> dict[int, float]:
    """A trial's validation curve by epoch, a promoted trial's with its parent's epochs before its
    own. Parents are followed once each: edited records that name each other end the chain."""
    own = read_scalars(tensorboard / trial.id / "execution0" / "validation", tag)
    parent = by_id.get(trial.parent)
    if parent is None or parent.id in seen | {trial.id}:
        return own
    # A promoted trial's run starts at tuner/initial_epoch: the epochs before are its parent's.
    inherited = {s: v for s, v in curve(parent, by_id, tensorboard, tag, seen | {trial.id}).items()
                 if s < trial.initial_epoch}
    return {**inherited, **own}



def load_baselines(root: Path) -> dict[str, dict]:
    """Each named baseline's metrics.json (baselines/NAME/), by name."""
    folder = root / "baselines"
    if folder.is_dir():
        for aside in folder.glob(".*.old"):  # a swap killed half-way: put the old results back first
            restore_dir(aside.with_name(aside.name[1:-len(".old")]))
    return {p.parent.name: read(p) for p in sorted(folder.glob("*/metrics.json"))}
