"""A study's folder, `results/<study>/` (its layout: results/README.md), what makes two studies
the same search, and what is written next to every result (the resolved preset, the versions).

JSON files are written atomically (files.py), so a crash never leaves a half-written file where a
good one stood.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from .config import Config
from .errors import UserError
from .space import SEED_BN_MOMENTUM, SEED_CONV1_KERNEL
from .files import read_json, write_json_atomic


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
            return saved.get("preset"), dict(saved["identity"])
        except (OSError, UserError, KeyError, TypeError, AttributeError, ValueError):
            return None, None

    def exists(self) -> bool:
        return self.identity_file.is_file()

    @property
    def id_file(self) -> Path:
        return self.root / "study-id"

    def make_id(self) -> str:
        """This study's id: a random token made once, by the first phase that leads the study (and
        again after --overwrite). The oracle stamps it on every trial it hands out (`STUDY_ID`), and
        a worker, which sees the same folder, compares: a same-preset study's chief answering on
        this study's port is then refused, not served."""
        if found := self.read_id():
            return found
        fd, tmp = tempfile.mkstemp(prefix=".study-id.", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(8) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, self.id_file)  # created whole or not at all: a process beside may have won
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
        if found := self.read_id():
            return found
        raise UserError(f"{self.id_file} is not one this tool wrote; delete it (a chief of this study makes another)")

    def read_id(self) -> str | None:
        """The id `make_id` made, or None where there is none yet (or it is not one it makes)."""
        try:
            fd = os.open(self.id_file, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as f:
                text = f.read(64).strip()
        except OSError:
            return None
        return text if _STUDY_ID.fullmatch(text) else None


_STUDY_ID = re.compile(r"[0-9a-f]{16}")
# The bookkeeping value (a name with "/", never a hyperparameter) each handed-out trial carries.
STUDY_ID = "study/id"



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


def search_identity(config: Config) -> dict[str, Any]:
    """What must not change under a study's existing trials (study.json): space, sizes, search
    settings, the network's shape and the study seed. Two studies with the same identity are the
    same search; `training_differences` compares parts of two."""
    data = config.data
    ident = {k: v for k, v in data.items() if k in ("space", "search", "data")}
    # Input-pipeline switches change speed, not what a trial sees.
    ident["data"] = {k: v for k, v in ident["data"].items() if k not in ("parallel_map", "prefetch")}
    # How many failures in a row to tolerate is a policy, not part of what was searched.
    ident["search"] = {k: v for k, v in ident["search"].items() if k != "max_consecutive_failed_trials"}
    # Speed options (precision, XLA) may change between runs; the network's shape may not.
    model = data.get("model", {})
    ident["model"] = {"width_multiplier": model.get("width_multiplier", 1.0),
                      "conv1_kernel": model.get("conv1_kernel", SEED_CONV1_KERNEL),
                      "bn_momentum": model.get("bn_momentum", SEED_BN_MOMENTUM)}
    ident["study"] = {"seed": data["study"]["seed"]}
    return json.loads(json.dumps(ident, sort_keys=True))


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


def _grows(old: dict, new: dict, dotted: str) -> bool:
    before, after = _lookup(old, dotted), _lookup(new, dotted)
    return isinstance(before, int) and isinstance(after, int) and after > before


def training_differences(a: dict, b: dict, sections: tuple[str, ...] = ("data", "model")) -> list[str]:
    """Where two search identities (`search_identity`) differ in `sections`: by default what
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
    diff = training_differences(old, search_identity(config))
    if diff:
        raise UserError(
            f"{study.root} was searched with {preset or 'another preset'}, which differs from "
            f"{config.path} in {', '.join(diff)}; use that CONFIG, or --study NEW_NAME (retrain-best: "
            f"--from {study.name}, to retrain its best at {config.path}'s sizes)"
        )


# What a worker must share with its chief: a trial trained with another Keras, Keras Tuner or
# backend is not the trial the chief's other workers train, and its checkpoint may not load back.
WORKER_VERSIONS = ("keras", "keras_tuner", "backend")


def require_chiefs_study(study: Study, config: Config) -> None:
    """UserError unless a worker with `config` trains the study its chief prepared (study.json
    and versions.json, on the filesystem both share) as the chief means it: the same search
    identity (a grown budget aside: only the chief schedules) and the same WORKER_VERSIONS.

    Keras Tuner hands a worker values, never the space: a worker with another preset would build
    other networks from them, or refuse values its own space lacks, trial after trial."""
    require_chiefs_search(study, config)
    require_chiefs_versions(study)


def require_chiefs_search(study: Study, config: Config) -> None:
    """require_chiefs_study's checks of the preset and lease alone: they need no Keras, so a
    worker of another search is refused before the seconds of importing it."""
    preset, old = study.saved_identity()
    if old is None:
        raise UserError(f"{study.identity_file} is missing or unreadable, though a chief serves: a worker must "
                        f"see the chief's study folder (the same --results-dir on a filesystem both share)")
    diff = [k for k in _differences(old, search_identity(config)) if k not in EXTENSIBLE]
    if diff:
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise UserError(f"this worker's {config.path} differs from its chief's {preset or 'preset'} in {shown}; "
                        f"start workers with the chief's --config and --seed")
    # The lease is the chief's, the heartbeat (lease_s / 5) the worker's: they must agree, or a
    # chief with a shorter lease would hand every trial on while its worker still trains it.
    try:
        lease = read_json(study.root / "config.json")["distributed"]["lease_s"]
    except (OSError, UserError, KeyError, TypeError):
        lease = None
    if lease is not None and lease != config["distributed"]["lease_s"]:
        raise UserError(f"this worker's [distributed] lease_s is {config['distributed']['lease_s']:g}, its chief's "
                        f"{lease:g}; start workers with the chief's preset")


def require_chiefs_versions(study: Study) -> None:
    """require_chiefs_study's check of the libraries that train a trial (imports Keras)."""
    try:
        chiefs = read_json(study.root / "versions.json")
    except (OSError, UserError):
        chiefs = None
    if not isinstance(chiefs, dict):
        raise UserError(f"{study.root / 'versions.json'} is missing or unreadable, so this worker's libraries "
                        f"cannot be checked against its chief's; restart the chief (it writes the file)")
    mine = versions()
    diff = [f"{k} {chiefs.get(k)} there, {mine[k]} here" for k in WORKER_VERSIONS if chiefs.get(k) != mine[k]]
    if diff:
        raise UserError(f"this worker's libraries differ from its chief's ({'; '.join(diff)}); install the "
                        f"chief's (pip install -e . from its commit)")


class Prepared(NamedTuple):
    resuming: bool  # the study has trials from an earlier run
    extended: list[str]  # how this run grows its budget ("search.hyperband_iterations 1 -> 2"), or []


def check_search(study: Study, config: Config, overwrite: bool) -> Prepared:
    """What `prepare_search` would do with the study, or the UserError it would raise; writes
    nothing (the launcher asks before it starts a chief and workers).

    A study made from a different search (space, sizes, Hyperband settings or seed) is refused
    unless `overwrite`, so trials of two searches never mix; a larger budget (EXTENSIBLE) extends it.
    """
    identity = search_identity(config)
    resuming, extended = False, []
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
        extended = [f"{k} {_lookup(old, k)} -> {_lookup(identity, k)}" for k in _differences(old, identity)
                    if k in EXTENSIBLE and _grows(old, identity, k)]
    if overwrite and study.root.is_dir():
        foreign = foreign_entries(study.root)
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (" ..." if len(foreign) > 3 else "")
            raise UserError(f"--overwrite refused: {study.root} is not a study folder (it holds {shown}); "
                            f"--overwrite only empties a folder this tool made. Choose another --study")
    return Prepared(resuming, extended)


def prepare_search(study: Study, config: Config, overwrite: bool, provenance: dict | None = None) -> Prepared:
    """Make the study folder ready for a search (`check_search` first: nothing is written before
    the checks), then write its study.json, and its config.json and versions.json with
    `provenance` added (`write_provenance`)."""
    resuming, extended = check_search(study, config, overwrite)
    identity = search_identity(config)
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
    write_provenance(study.root, config, extra=provenance)
    write_json_atomic(study.identity_file, {"preset": config.path, "identity": identity})  # last: "a study is here"
    return Prepared(resuming, extended)


# What this tool writes in a study folder (results/README.md), dot-files being its staging names.
STUDY_ENTRIES = {
    "study.json", "study-id", "config.json", "versions.json", "tuner", "logs", "tensorboard", "best_hyperparameters.json",
    "finalists", "finalists.json", "runs",
    "search_summary.json", "best", "baselines", "report.md", "report",
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
