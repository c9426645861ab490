"""A study's folder, `results/<study>/`, and what is written next to every result.

    results/<study>/
        study.json          the search identity (space, sizes, Hyperband settings, seed)
        config.json         the resolved preset (after `extends`), as the search ran it
        versions.json       Python, TensorFlow, Keras, Keras Tuner, numpy, git commit, device
        tuner/              Keras Tuner's state: oracle.json, trial_*/ (trial.json, checkpoints)
        tensorboard/        one run per trial (<trial_id>/execution0), plus retrain runs
        finalists/          the finalists' confirmation: Keras Tuner's state, as tuner/ (`confirm`)
        finalists.json      each finalist's validation score per seed, and which was adopted
        best_hyperparameters.json   the adopted configuration: what retrain-best trains
        best/               retrain-best's exports and metrics
        baselines/NAME/     each named baseline's metrics (baseline/: the seed's, before names)

JSON files are written atomically (a temporary file, then a rename), so a crash never leaves a
half-written file where a good one stood.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import Config
from .errors import UserError


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
    """A trial's hyperparameter values without the bookkeeping entries (`is_bookkeeping`)."""
    return {k: clean_value(v) for k, v in values.items() if not is_bookkeeping(k)}


def short(value: Any) -> str:
    """A value as the progress lines and tables show it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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
    or "min"; ties to the better search rank), then the rest."""
    sign = -1.0 if way == "max" else 1.0
    return sorted(finalists, key=lambda f: (not f["complete"], sign * f["mean"] if f["complete"] else 0.0,
                                            f["study"], f["rank"]))


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


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` at `path`, all or nothing (a crash leaves the old file or the new one)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable: a rename is a change to the folder, not to the file."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | Path) -> Any:
    """A JSON file this tool wrote; UserError (not a traceback) when someone damaged it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it was edited or damaged: restore it, or start "
                        f"the study over with --overwrite") from None


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Put a fully written `staging` folder at `target`, keeping the old one until the swap."""
    old = target.with_name(f".{target.name}.old")
    restore_dir(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def restore_dir(target: Path) -> None:
    """Put back the folder a `replace_dir_atomic` killed between its two renames had moved aside."""
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def versions() -> dict[str, Any]:
    import keras
    import keras_tuner
    import numpy
    import tensorboard

    from . import backend

    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = "not installed"
    return {
        "python": platform.python_version(),
        "backend": backend.version(),
        "tensorflow": tensorflow,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "tensorboard": tensorboard.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": backend.describe_device(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Study:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def tuner_dir(self) -> Path:
        return self.root / "tuner"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def identity_file(self) -> Path:
        return self.root / "study.json"

    @property
    def finalists_dir(self) -> Path:
        return self.root / "finalists"

    @property
    def finalists_file(self) -> Path:
        return self.root / "finalists.json"

    @property
    def adopted_file(self) -> Path:
        return self.root / "best_hyperparameters.json"

    def saved_identity(self) -> tuple[str | None, dict | None]:
        """(the preset it was made from, its search identity) from study.json; (None, None) when
        there is none or it cannot be read."""
        try:
            saved = read_json(self.identity_file)
            identity = dict(saved["identity"])
            search = identity.get("search")
            if isinstance(search, dict) and "tuner" not in search:
                # Hyperband studies made before 2026-11-28 08:40 (a691975) left the default tuner out.
                identity["search"] = {**search, "tuner": "hyperband"}
            return saved.get("preset"), identity
        except (OSError, UserError, KeyError, TypeError, AttributeError, ValueError):
            return None, None

    def exists(self) -> bool:
        return self.identity_file.is_file()



def write_provenance(folder: Path, config: Config, extra: dict | None = None) -> None:
    """config.json (the resolved preset) and versions.json into `folder`, atomically."""
    resolved = json.loads(config.to_json())
    if extra:
        resolved.update(extra)
    write_json_atomic(folder / "config.json", resolved)
    write_json_atomic(folder / "versions.json", versions())


def study_for(results_dir: str | Path, name: str) -> Study:
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"study name {name!r} is invalid: use a plain folder name such as 'cpu'")
    return Study(Path(results_dir) / name)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


# What may grow under a study's existing trials: more Hyperband iterations, more trials for the
# other tuners. Every trial so far stays a trial of the larger study.
EXTENSIBLE = ("search.hyperband_iterations", "search.max_trials")


def _lookup(identity: dict, dotted: str) -> Any:
    section, key = dotted.split(".")
    return identity.get(section, {}).get(key)


def extension(study: Study, config: Config) -> list[str]:
    """How `config` extends the study's existing search ("search.hyperband_iterations 1 -> 2"),
    or [] when it does not (a new study, the same search, or a different one)."""
    _, old = study.saved_identity()
    if old is None:
        return []
    new = config.search_identity()
    return [f"{k} {_lookup(old, k)} -> {_lookup(new, k)}" for k in _differences(old, new)
            if k in EXTENSIBLE and _grows(old, new, k)]


def _grows(old: dict, new: dict, dotted: str) -> bool:
    before, after = _lookup(old, dotted), _lookup(new, dotted)
    return isinstance(before, int) and isinstance(after, int) and after > before


def same_training(a: dict, b: dict, sections: tuple[str, ...] = ("data", "model")) -> list[str]:
    """Where two search identities (`Config.search_identity`) differ in `sections`: by default what
    a model is trained on and what it is (data sizes, network shape), which runs must share to be
    compared; add "space" for studies whose trials and finalists are to be set side by side."""
    return _differences(*({k: d.get(k, {}) for k in sections} for d in (a, b)))


def require_same_network(study: Study, config: Config) -> None:
    """UserError when `config` trains other data or another network than the study was searched
    with (its identity's data and model).

    retrain-best and baseline train at the preset's sizes: with another preset a study's best
    would be retrained on another network, or a baseline set beside a tuned model it cannot be
    compared with. The search's own settings (budget, tuner, study seed) do not matter here, so
    a study searched with SEED=2 or extended with ITERATIONS=2 retrains with the plain preset. A
    study without study.json (no search yet) has nothing to compare.
    """
    preset, old = study.saved_identity()
    if old is None:
        return
    diff = same_training(old, config.search_identity())
    if diff:
        raise UserError(
            f"{study.root} was searched with {preset or 'another preset'}, which differs from "
            f"{config.path} in {', '.join(diff)}; use that CONFIG, or --study NEW_NAME (retrain-best: "
            f"--from {study.name}, to retrain its best at {config.path}'s sizes)"
        )


def prepare_search(study: Study, config: Config, overwrite: bool) -> bool:
    """Make the study folder ready for a search; return True when resuming existing trials.

    A study made from a different search (space, sizes, Hyperband settings or seed) is refused
    unless `overwrite`, so trials of two searches never mix; a larger budget (EXTENSIBLE) extends
    it. Nothing is written before the checks.
    """
    identity = config.search_identity()
    resuming = False
    if study.exists() and not overwrite:
        _, old = study.saved_identity()
        if old is None:
            raise UserError(
                f"{study.identity_file} is unreadable; rerun with --overwrite to start {study.name} over"
            ) from None
        diff = [k for k in _differences(old, identity) if not (k in EXTENSIBLE and _grows(old, identity, k))]
        shrinking = [k for k in diff if k in EXTENSIBLE and _grows(identity, old, k)]
        if shrinking:
            raise UserError(
                f"{study.root} has run {shrinking[0]} = {_lookup(old, shrinking[0])}; a study can grow but not "
                f"shrink (its trials are kept). Give at least that, or --study NEW_NAME for a new study"
            )
        if diff:
            shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
            raise UserError(
                f"{study.root} holds a study of a different search (differs in {shown}); use "
                f"--study NEW_NAME for a new study, or --overwrite to discard this one"
            )
        resuming = study.tuner_dir.exists()
    if overwrite and study.root.is_dir():
        foreign = foreign_entries(study.root)
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (" ..." if len(foreign) > 3 else "")
            raise UserError(f"--overwrite refused: {study.root} is not a study folder (it holds {shown}); "
                            f"--overwrite only empties a folder this tool made. Choose another --study")
    try:
        study.root.mkdir(parents=True, exist_ok=True)
        probe = study.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to {study.root} ({exc.strerror or exc}); choose another --results-dir"
        ) from None
    if overwrite:
        # Everything goes, baseline and report included: a report must never set a new search
        # beside an old one's baseline. Only ever in a folder this tool made.
        for child in study.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    write_json_atomic(study.identity_file, {"preset": config.path, "identity": identity})
    return resuming


# What this tool writes in a study folder (results/README.md), dot-files being its staging names.
STUDY_ENTRIES = {
    "study.json", "config.json", "versions.json", "tuner", "logs", "tensorboard", "best_hyperparameters.json",
    "finalists", "finalists.json",
    "search_summary.json", "best", "baseline", "baselines", "report.md", "report",
}


def foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that this tool would not have written there (empty for a study folder)."""
    if folder.is_symlink() or not folder.is_dir():
        return [folder.name]
    return [p.name for p in folder.iterdir() if p.name not in STUDY_ENTRIES and not p.name.startswith(".")]


def require_study(study: Study) -> None:
    if not study.exists():
        raise UserError(
            f"no study at {study.root}; run `make search` (or `alexnet-search search`) with the same "
            f"CONFIG/--study first"
        )
