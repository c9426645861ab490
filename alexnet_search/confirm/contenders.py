"""Who the confirmation trains: the search's best distinct configurations and the preset's
baselines, each once per seed, as planned runs (`units`); and the baseline runs a study beside this
one already completed, which it reuses instead of training them again.

The seeds are CONFIRM_SEED + 1, + 2, ... in every study (the race's extra ones continue them), so
finalists of different studies (another study seed) meet on equal terms (`adoption.pooled_best`),
and none is a seed retrain-best trains with (the study seed + i): the retrain that tests the
adopted configuration is an independent run.
"""

from __future__ import annotations

from typing import Any

from .. import backend
from ..config import Config
from ..errors import UserError
from ..files import read_json
from ..space import SEED_SCRIPT
from ..study import Study, search_identity, training_differences
from ..trials import model_epochs, searched_values

CONFIRM_SEED = 1000
# A run's bookkeeping in its trial's values (see trials.is_bookkeeping): which contender (a search
# trial's id, or a baseline's name, which BASELINE then repeats), which seed, the contender's
# search rank (0 for a baseline), and what the search measured of it.
CONTENDER, CONTENDER_SEED, RANK, SCORE, EPOCHS, BASELINE = (
    "finalist/trial", "finalist/seed", "finalist/rank", "finalist/search_score", "finalist/search_epochs",
    "finalist/baseline")


def confirm_seeds(n: int) -> list[int]:
    return [CONFIRM_SEED + i for i in range(1, n + 1)]


def finalist_units(ranked: list, count: int, seeds: int, max_epochs: int) -> list[dict[str, Any]]:
    """The runs that confirm the best `count` configurations of `ranked` (completed search trials,
    best first): each finalist's values and its bookkeeping, once per seed, finalist by finalist.
    A configuration is a finalist once, under its best trial: Hyperband's promoted trials repeat
    their parent's."""
    finalists, seen = [], []
    for trial in ranked:
        values = searched_values(trial.hyperparameters.values)
        if values not in seen:
            seen.append(values)
            finalists.append((trial, values))
    units = []
    for rank, (trial, values) in enumerate(finalists[:count], 1):
        for seed in confirm_seeds(seeds):
            units.append({**values, CONTENDER: trial.trial_id, CONTENDER_SEED: seed, RANK: rank,
                          SCORE: float(trial.score), EPOCHS: model_epochs(trial.hyperparameters.values, max_epochs)})
    return units


def baseline_units(config: Config, seeds: int) -> list[dict[str, Any]]:
    """The runs that train the preset's `[confirm] baselines` beside the finalists: each baseline's
    values over the seed's (as `make baseline` trains it), once per confirmation seed. Rank 0: on
    an equal mean the known recipe is kept."""
    units = []
    for name in config["confirm"]["baselines"]:
        values = {**{k: SEED_SCRIPT[k] for k in config.space}, **config["baselines"][name]}
        for seed in confirm_seeds(seeds):
            # No SCORE or EPOCHS (it was not searched): Keras Tuner's gRPC messages carry no None values.
            units.append({**values, CONTENDER: name, CONTENDER_SEED: seed, RANK: 0, BASELINE: name})
    return units


def reusable_baseline_runs(study: Study, config: Config, data_source: str) -> dict[tuple, dict]:
    """Completed runs of the preset's baselines in the studies beside `study` (the same results
    folder) that trained what this confirmation would: the same data (`data_source`, as
    `Source.describe` says it, and sizes) and network, epochs, objective and backend (the values
    and seed are checked per run, `FinalistsOracle.take_reused`).

    A baseline does not depend on the search, and on one-thread workers its run repeats digit for
    digit across studies: a second study of a preset takes its runs instead of a round of
    training. The first study beside it wins (by name); a sibling whose files cannot be read is
    passed over."""
    mine, runs = search_identity(config), {}
    names = set(config["confirm"]["baselines"])
    siblings = study.root.parent.iterdir() if study.root.parent.is_dir() else ()
    for sibling in [Study(p) for p in sorted(siblings) if p.is_dir() and p != study.root]:
        _, identity = sibling.saved_identity()
        try:
            summary = read_json(sibling.finalists_file)
            theirs = read_json(sibling.root / "versions.json").get("backend")
            source = read_json(sibling.root / "config.json").get("data_source")
        except (OSError, UserError, AttributeError):
            continue
        if (identity is None or training_differences(mine, identity) or theirs != backend.version()
                or source != data_source
                or summary.get("epochs") != config["confirm"]["epochs"]
                or summary.get("objective") != config["search"]["objective"]):
            continue
        for f in summary.get("finalists", []):
            if f.get("baseline") not in names:
                continue
            for r in f["runs"]:
                if r.get("status") == "COMPLETED" and r.get("score") is not None:
                    runs.setdefault((f["baseline"], r["seed"]), {
                        "trial": f["baseline"], "seed": r["seed"], "score": r["score"], "best_epoch": r.get("best_epoch"),
                        "hyperparameters": f["hyperparameters"],
                        "from": r.get("reused_from") or f"{sibling.name}/{r['run']}"})
    return runs


def contender(values: dict) -> str:
    """How progress lines name a confirmation run's configuration."""
    return f"baseline {values[BASELINE]}" if values.get(BASELINE) else f"finalist {values[RANK]}"
