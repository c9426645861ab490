"""What a study adopted, and how: finalists.json (the confirmation's record: each contender's runs,
seeds and validation scores, best mean first) read back, the adoption into best_hyperparameters.json,
and the pool of several studies' finalists. Plain JSON: no Keras, so the report and retrain-best
read it as it is. Also the hyperparameters retrain-best may take from elsewhere (`--from`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .config import Config
from .console import columns, printer, short
from .errors import UserError
from .files import read_json, write_json_atomic
from .space import problems
from .study import Study, study_for, training_differences
from .trials import contender_name, direction, first_raced, model_epochs, rank_finalists, run_seeds, searched_values


def finalists_table(summary: dict) -> str:
    seeds = run_seeds(summary["finalists"])
    header = ["finalist", "search score", *(f"seed {s}" for s in seeds), "mean", "std"]
    rows = []
    for f in summary["finalists"]:
        by_seed = {r["seed"]: r for r in f["runs"]}
        cells = ["-" if r is None else f"{r['score']:.4f}" if r.get("score") is not None else r["status"].lower()
                 for r in (by_seed.get(s) for s in seeds)]
        origin = "baseline" if f.get("baseline") else f"{f['search_score']:.4f} ({f['search_epochs']} ep)"
        rows.append([f"{f['study']}/{f['trial_id']}", origin, *cells,
                     f"{f['mean']:.4f}" if f["complete"] else "-", f"{f['std']:.4f}" if f["std"] is not None else "-"])
    return "\n".join(columns([header] + rows, left=0))


def adopt(study: Study, config: Config, summary: dict | None = None, search_best: list = (),
          out: TextIO = sys.stdout) -> dict:
    """Write best_hyperparameters.json: the best complete finalist of `summary`, or (no
    confirmation) the search's best trial. UserError when no finalist completed all its runs."""
    say = printer(out)
    objective = config["search"]["objective"]
    if summary is None:
        if not search_best:
            raise UserError(f"study {study.name} has no completed trial yet; run or resume `make search` until one "
                            f"finishes")
        best = search_best[0]
        adopted = {"study": study.name, "trial_id": best.trial_id, objective: best.score,
                   "epochs_trained": model_epochs(best.hyperparameters.values, config["search"]["max_epochs"]),
                   "hyperparameters": searched_values(best.hyperparameters.values),
                   "adopted_by": "the search's best score ([confirm] finalists = 0: not confirmed)"}
    else:
        best = first_raced(summary["finalists"], summary.get("leader_seeds", 0))
        if best is None:
            raise UserError(f"no finalist of study {study.name} completed all its runs (see {study.finalists_file}); "
                            f"nothing was adopted. Check the failures, widen [confirm] finalists, and rerun the search")
        searched = sum(not f.get("baseline") for f in summary["finalists"])
        against = [f["trial_id"] for f in summary["finalists"] if f.get("baseline")]
        adopted = {"study": best["study"], "trial_id": best["trial_id"], objective: best["search_score"],
                   "epochs_trained": best["search_epochs"], "hyperparameters": best["hyperparameters"],
                   "adopted_by": f"best mean {objective} of {searched} finalists"
                                 + (f" and baseline {', '.join(against)}" if against else "")
                                 + (": no finalist beat this baseline" if best.get("baseline") else ""),
                   **({"baseline": best["baseline"]} if best.get("baseline") else {}),
                   "confirmed": {"seeds": [r["seed"] for r in best["runs"]], "epochs": summary["epochs"],
                                 "scores": [r["score"] for r in best["runs"]], "mean": best["mean"], "std": best["std"]}}
    write_json_atomic(study.adopted_file, adopted)
    values = " ".join(f"{k}={short(v)}" for k, v in adopted["hyperparameters"].items())
    say(f"adopted {contender_name(adopted)} ({adopted['adopted_by']}) into {study.adopted_file}:\n    {values}\n"
        f"next: make retrain-best CONFIG={config.path}" + ("" if study.name == config.name else f" STUDY={study.name}"))
    return adopted


def read_adopted(study: Study) -> dict:
    """best_hyperparameters.json, or a UserError that says how to get one."""
    if not study.adopted_file.is_file():
        raise UserError(f"study {study.name} has not adopted a configuration yet: its search or its finalists' "
                        f"confirmation has not finished. Rerun the same `make search` command to finish it")
    return read_json(study.adopted_file)


def pooled_best(study: Study, others: list[Study]) -> tuple[dict, list[dict]]:
    """The best confirmed finalist of `study` and `others` (studies of the same space, data and
    network: another study seed), and every finalist of the pool, best first.

    Every study's finalists were confirmed with the same seeds and epochs, so their means compare
    directly; UserError when a study is not confirmed, or was searched or confirmed otherwise."""
    _, mine = study.saved_identity()
    pool, settings = [], None
    for member in [study, *others]:
        _, identity = member.saved_identity()
        if identity is None:
            raise UserError(f"--pool {member.name}: no study at {member.root}")
        diff = training_differences(mine, identity, ("space", "data", "model"))
        if diff:
            raise UserError(f"--pool {member.name}: its search space, data or network differ from {study.name}'s "
                            f"(in {', '.join(diff[:4])}); pool only studies of the same preset")
        summary = read_json(member.finalists_file) if member.finalists_file.is_file() else None
        if not summary or not summary.get("finished"):
            raise UserError(f"--pool {member.name}: its finalists' confirmation has not finished; rerun its "
                            f"`make search` (the same command resumes it)")
        theirs = (summary["objective"], summary["epochs"], summary["seeds"], summary.get("leader_seeds", 0))
        if settings is not None and theirs != settings:
            raise UserError(f"--pool {member.name}: its finalists were confirmed with {theirs[0]} over seeds "
                            f"{theirs[2]} at {theirs[1]} epochs, leader raced to {theirs[3]} seeds; {study.name}'s "
                            f"with {settings[0]} over seeds {settings[2]} at {settings[1]} epochs, raced to "
                            f"{settings[3]}: the scores do not compare")
        settings = theirs
        pool += [{**f, "study": member.name} for f in summary["finalists"]]  # the folder's name, even if renamed
    ranked = rank_finalists(pool, direction(settings[0]))
    best = first_raced(ranked, settings[3])
    if best is None:
        raise UserError(f"no finalist of {', '.join(s.name for s in [study, *others])} completed all its runs")
    return best, ranked


def hyperparameters_from(origin: str, results_dir: str | Path, config: Config) -> tuple[dict[str, Any], str]:
    """Hyperparameter values to retrain from elsewhere, and a line saying where they came from.

    `origin` is another study's name in `results_dir` (its best_hyperparameters.json: the search
    may have run at another size, e.g. cpu.toml's, and be retrained at paper.toml's), or a JSON
    file: a best_hyperparameters.json, or a best/ or baselines/NAME/ hyperparameters.json. Every
    name must be a hyperparameter (space.py) and every value inside its bounds; a value may lie
    outside this preset's search range. Names it lacks keep the seed's value.
    """
    path = Path(origin)
    if not (path.suffix == ".json" or path.is_file()):
        path = study_for(results_dir, origin).root / "best_hyperparameters.json"
        if not path.is_file():
            raise UserError(f"--from {origin}: no {path}; finish that study's search first, or pass a "
                            f"hyperparameters.json file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--from {origin}: cannot read {path} as JSON ({exc}); pass a hyperparameters.json") from None
    values = data.get("hyperparameters", data) if isinstance(data, dict) else None
    if not isinstance(values, dict) or not values:
        raise UserError(f"--from {origin}: {path} holds no hyperparameter values")
    found = problems(values)
    if found:
        raise UserError(f"--from {origin}: {path}: {found[0]}")
    trial = f" (trial {data['trial_id']})" if isinstance(data, dict) and "trial_id" in data else ""
    return values, f"{path}{trial}"
