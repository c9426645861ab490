"""Presets: TOML files in tuning/, validated into one plain dict-backed `Config`.

A preset may start with `extends = "other.toml"` (relative to itself): tables are merged key by
key, so `cpu.toml` keeps `paper.toml`'s search space and changes only the sizes.

Every key is checked here, once, with a message that names the file, the key and the fix; the rest
of the package can trust a `Config`.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .geometry import check_image_size
from .schedule import BRACKETED
from .space import BOUNDS, SEED_BN_MOMENTUM, SEED_CONV1_KERNEL, SEED_SCRIPT, problems

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Keras Tuner's tuners a preset may choose ([search] tuner), and BOHB (`bohb`).
TUNERS = ("hyperband", "bohb", "random", "bayesian")
# What a retrain's runs train on ([retrain] train_on): the training split alone, validated on the
# validation split (the epoch that validated best kept), or both splits, kept at their last epoch.
TRAIN_ON = ("train", "train+val")


def trains_on_val(config: Config) -> bool:
    """Whether the preset's retrains train on the validation images too (`[retrain] train_on`)."""
    return config["retrain"]["train_on"] == "train+val"
# section -> key -> (types, check, what a valid value looks like)


def _ints(low: int, high: int) -> tuple:
    """Whole numbers from `low` to `high`: every count has a ceiling, checked before anything is
    written, so that a typo is refused in one line instead of failing hours later or every trial."""
    return (int,), lambda v: low <= v <= high, f"an integer from {low} to {high}"


_SCHEMA: dict[str, dict[str, tuple]] = {
    "study": {
        # A trial's seed is the study seed x 100,003 + its number (search.AlexNetTuner), which numpy
        # and Keras take below 2^32.
        "seed": _ints(1, 40_000),
        "expects_gpu": ((bool,), lambda v: True, "true or false"),
        "description": ((str,), lambda v: True, "a string"),
    },
    # Upper bounds, checked before anything is allocated: CIFAR-10 has 50,000 training images; 512
    # is 4x the paper's input (one batch of 8192 such images is 25 GB of float32 already).
    "data": {
        "train_size": ((int,), lambda v: 1 <= v <= 50_000, "an integer from 1 to 50000 (CIFAR-10's training images)"),
        "val_size": ((int,), lambda v: 1 <= v <= 50_000, "an integer from 1 to 50000 (CIFAR-10's training images)"),
        "image_size": ((int,), lambda v: 1 <= v <= 512, "an integer from 1 to 512"),
        "batch_size": ((int,), lambda v: 1 <= v <= 8192, "an integer from 1 to 8192"),
        "parallel_map": ((bool,), lambda v: True, "true or false"),
        "prefetch": ((bool,), lambda v: True, "true or false"),
    },
    "model": {
        "width_multiplier": ((int, float), lambda v: 0 < v <= 4, "a number in (0, 4]"),
        # Bounded: 11 at 128x128 is the seed's; a typo of millions would stall the size check.
        "conv1_kernel": ((int,), lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
        # Batch norm's moving-average momentum; 1 would never update the statistics.
        "bn_momentum": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "jit_compile": ((bool,), lambda v: True, "true or false"),
        "precision": ((str,), lambda v: v in PRECISIONS, '"float32", "mixed_float16" or "mixed_bfloat16"'),
    },
    "distributed": {
        "host": ((str,), lambda v: bool(v.strip()), "a host name or IP address"),
        "port": ((int,), lambda v: 1 <= v <= 65535, "a port number (1-65535)"),
        # Up to a week: a lease is a bound on silence, not a budget.
        "lease_s": ((int, float), lambda v: 1 <= v <= 604800, "seconds, from 1 to 604800"),
    },
    "search": {
        "tuner": ((str,), lambda v: v in TUNERS, '"hyperband", "bohb", "random" or "bayesian"'),
        "objective": ((str,), lambda v: v in ("val_accuracy", "val_loss"),
                      '"val_accuracy" or "val_loss"'),
        # Epochs and trials: far beyond any study of this network, low enough that the schedule's
        # arithmetic and Keras Tuner's zero-padded trial ids stay small.
        "max_epochs": _ints(1, 1000),
        "factor": _ints(2, 100),
        "hyperband_iterations": _ints(1, 100),
        "max_consecutive_failed_trials": _ints(1, 10_000),
        "max_retries_per_trial": _ints(0, 100),
        "max_trials": _ints(1, 10_000),
        "initial_points": _ints(1, 10_000),
    },
    "confirm": {
        # Each run is a full retrain: a hundred of them is days on a GPU.
        "finalists": _ints(0, 100),
        "seeds": _ints(1, 100),
        "leader_seeds": _ints(1, 100),
        "epochs": _ints(1, 10_000),
        "baselines": ((list,), lambda v: all(isinstance(n, str) for n in v) and len(set(v)) == len(v),
                      'a list of [baselines.NAME] names, each once, e.g. ["paper"]'),
    },
    "retrain": {
        "epochs": _ints(1, 10_000),
        "tta": ((bool,), lambda v: True, "true or false"),
        "train_on": ((str,), lambda v: v in TRAIN_ON, '"train" or "train+val"'),
    },
}

_SPACE_KEYS = {
    "float": {"min", "max", "default", "step", "sampling"},
    "int": {"min", "max", "default", "step"},
    "choice": {"values", "default"},
}


@dataclass(frozen=True)
class Config:
    """A validated preset. `data` is the merged TOML as plain dicts (JSON-serialisable)."""

    data: dict[str, Any]
    path: str

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return self.data["space"]

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> "Config":
        """This preset with command-line values over some keys ({section: {key: value}}), checked
        like the preset's own (None values are skipped)."""
        data = copy.deepcopy(self.data)
        changed = False
        for section, values in overrides.items():
            for key, value in values.items():
                if value is not None:
                    data.setdefault(section, {})[key] = value
                    changed = True
        if not changed:
            return self
        validate(data, f"{self.path} with command-line overrides")
        return Config(_with_defaults(data), self.path)

    def to_json(self) -> str:
        return json.dumps({"preset": self.path, **self.data}, indent=2, sort_keys=True)


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} not found; presets live in tuning/ (e.g. tuning/cpu.toml)")
    if path.resolve() in seen:
        raise UserError(f"{path}: 'extends' loops back to itself")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix the syntax at that spot") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise UserError(f"{path}: 'extends' must be a file name string, e.g. extends = \"paper.toml\"")
    base = _read_toml(path.parent / parent, seen + (path.resolve(),))
    return _merge(base, raw)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A space entry is replaced whole: merging {"values": [...]} into a float range
            # would leave a mix of both.
            out[key] = value if _is_space_entry(value) else _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_space_entry(value: dict) -> bool:
    return "type" in value


def _type_name(types: tuple) -> str:
    return " or ".join(t.__name__ for t in types)


def _check_value(where: str, value: Any, spec: tuple) -> None:
    types, check, want = spec
    is_bool = isinstance(value, bool)
    if (is_bool and bool not in types) or not isinstance(value, types) or not check(value):
        raise UserError(f"{where} = {value!r} is invalid: it must be {want}")


def _check_space_entry(where: str, name: str, entry: Any) -> None:
    if name not in BOUNDS:
        raise UserError(f"{where}: unknown hyperparameter '{name}'; the model takes " + ", ".join(sorted(BOUNDS)))
    if not isinstance(entry, dict):
        raise UserError(f"{where} must be a table with type, and min/max or values")
    kind = entry.get("type")
    if kind not in _SPACE_KEYS:
        raise UserError(f'{where}.type = {kind!r} is invalid: use "float", "int" or "choice"')
    unknown = set(entry) - _SPACE_KEYS[kind] - {"type"}
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} for a {kind}; "
            f"allowed: {', '.join(sorted(_SPACE_KEYS[kind]))}"
        )
    bounds = BOUNDS[name]
    # Without a default the search starts from the seed's value, which must then be in the range.
    default = entry.get("default", SEED_SCRIPT[name])
    given = "default" in entry
    if bounds.names and kind != "choice":
        raise UserError(f'{where} must be a choice, e.g. type = "choice", values = {json.dumps(list(bounds.names))}')

    number = (int,) if kind == "int" else (int, float)
    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.values must be a non-empty list, e.g. values = {json.dumps(list(bounds.names) or [0.0, 0.9])}")
        candidates = values
        if default not in values:
            raise UserError(f"{where}.default = {default!r} is not one of values {values}" if given else
                            f"{where}: the seed's {name} = {default!r} is not one of values {values}; add it, "
                            f"or set a default")
    else:
        for key in ("min", "max"):
            if key not in entry:
                raise UserError(f"{where}: missing '{key}'")
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, number):
                raise UserError(f"{where}.{key} = {v!r} is invalid: it must be {_type_name(number)}")
        lo, hi = entry["min"], entry["max"]
        if lo > hi:
            raise UserError(f"{where}: min {lo} is larger than max {hi}; swap them")
        step = entry.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
            raise UserError(f"{where}.step = {step!r} is invalid: it must be a positive {_type_name(number)}")
        sampling = entry.get("sampling", "linear")
        if sampling not in ("linear", "log"):
            raise UserError(f'{where}.sampling = {sampling!r} is invalid: use "linear" or "log"')
        if sampling == "log" and lo <= 0:
            raise UserError(f"{where}: log sampling needs min > 0 (got {lo})")
        if isinstance(default, bool) or not isinstance(default, number) or not lo <= default <= hi:
            raise UserError(f"{where}.default = {default!r} must be a {_type_name(number)} in [{lo}, {hi}]" if given
                            else f"{where}: the seed's {name} = {default!r} is outside [{lo}, {hi}]; widen the "
                                 f"range, or set a default inside it")
        candidates = [lo, hi, default]

    for v in candidates:
        problem = bounds.problem(v)
        if problem:
            raise UserError(f"{where}: {name} = {v!r} {problem}")


def _check_baselines(where: str, baselines: Any) -> None:
    if not isinstance(baselines, dict):
        raise UserError(f"{where}: 'baselines' must be tables, e.g. [baselines.paper] with lr = 0.01")
    for name, values in baselines.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
            raise UserError(f"{where}: baseline name '{name}' must be letters, digits, '-' or '_' (it names a folder)")
        if not isinstance(values, dict):
            raise UserError(f"{where}: [baselines.{name}] must be a table of hyperparameter = value")
        found = problems(values)
        if found:
            raise UserError(f"{where}: baselines.{name}: {found[0]}")


def validate(data: dict[str, Any], where: str) -> None:
    """Raise UserError for the first unknown key, missing key, wrong type or bad value."""
    known = set(_SCHEMA) | {"space", "baselines"}
    for section in data:
        if section not in known:
            raise UserError(
                f"{where}: unknown section [{section}]; sections are " + ", ".join(sorted(known))
            )
    for section, keys in _SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise UserError(f"{where}: '{section}' must be a table ([{section}])")
        for key in table:
            if key not in keys:
                raise UserError(
                    f"{where}: unknown key '{section}.{key}'; [{section}] takes "
                    + ", ".join(sorted(keys))
                )
        for key, spec in keys.items():
            if key not in table:
                if section == "study" and key in ("expects_gpu", "description"):
                    continue
                if section in ("model", "distributed", "confirm"):
                    continue  # all optional, defaults below
                if (section, key) in (("search", "max_retries_per_trial"), ("search", "tuner"),
                                      ("search", "max_trials"), ("search", "initial_points"), ("retrain", "tta"),
                                      ("retrain", "train_on")):
                    continue
                raise UserError(f"{where}: missing key '{section}.{key}' ({spec[2]})")
            _check_value(f"{where}: {section}.{key}", table[key], spec)
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}: no [space.*] tables; declare at least one hyperparameter")
    for name, entry in space.items():
        _check_space_entry(f"{where}: space.{name}", name, entry)
    _check_baselines(where, data.get("baselines", {}))
    _check_contenders(where, data.get("confirm", {}).get("baselines", []), data.get("baselines") or {"seed": {}})


def _check_contenders(where: str, names: list[str], baselines: dict) -> None:
    """[confirm] baselines: named baselines the finalists' confirmation trains beside them."""
    for name in names:
        if name not in baselines:
            raise UserError(f"{where}: confirm.baselines names '{name}', which is not a baseline of this preset; it "
                            f"has {', '.join(baselines)} (add a [baselines.{name}] table, or drop the name)")
        if name.isdigit():  # a contender is listed under its name where finalists are listed under trial ids
            raise UserError(f"{where}: confirm.baselines: '{name}' reads as a search trial's id; give that baseline "
                            f"a name with a letter in it")


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data.setdefault("study", {}).setdefault("expects_gpu", False)
    data["study"].setdefault("description", "")
    model = data.setdefault("model", {})
    model.setdefault("width_multiplier", 1.0)
    model.setdefault("conv1_kernel", SEED_CONV1_KERNEL)
    model.setdefault("bn_momentum", SEED_BN_MOMENTUM)
    model.setdefault("jit_compile", False)
    model.setdefault("precision", "float32")
    dist = data.setdefault("distributed", {})
    dist.setdefault("host", "127.0.0.1")
    dist.setdefault("port", 8000)
    dist.setdefault("lease_s", 600)
    data["search"].setdefault("max_retries_per_trial", 0)
    data["search"].setdefault("tuner", "hyperband")
    if data["search"]["tuner"] not in BRACKETED and "max_trials" not in data["search"]:
        # An equal budget: as many full-length trials as Hyperband's schedule spends epochs.
        from .schedule import hyperband_schedule

        s = data["search"]
        epochs = hyperband_schedule(s["max_epochs"], s["factor"], s["hyperband_iterations"]).epochs
        s["max_trials"] = max(1, epochs // s["max_epochs"])
    data["retrain"].setdefault("tta", True)
    data["retrain"].setdefault("train_on", "train")
    confirm = data.setdefault("confirm", {})
    confirm.setdefault("finalists", 3)
    confirm.setdefault("seeds", 2)
    # One more than the others: the adopted contender's mean is never two lucky draws (confirm.py).
    confirm.setdefault("leader_seeds", confirm["seeds"] + 1)
    confirm.setdefault("baselines", [])
    # The race only has to rank contenders; the retrain may train the winner longer than that.
    confirm.setdefault("epochs", data["retrain"]["epochs"])
    data["data"].setdefault("parallel_map", True)
    data["data"].setdefault("prefetch", True)
    # Without named baselines a preset still has the seed's: every hyperparameter at its default.
    data.setdefault("baselines", {"seed": {}})
    for name, entry in data["space"].items():
        entry.setdefault("default", SEED_SCRIPT[name])  # recorded in config.json, and part of the study's identity
    return data


def load_config(path: str | Path) -> Config:
    """Read, merge (`extends`) and validate a preset."""
    path = Path(path)
    data = _read_toml(path)
    validate(data, str(path))
    try:
        check_image_size(data["data"]["image_size"], data.get("model", {}).get("conv1_kernel", SEED_CONV1_KERNEL))
    except UserError as exc:
        raise UserError(f"{path}: data.{exc} (or a smaller model.conv1_kernel)") from None
    config = Config(_with_defaults(data), str(path))
    c = config["confirm"]
    if c["leader_seeds"] < c["seeds"]:
        raise UserError(f"{path}: confirm.leader_seeds = {c['leader_seeds']} is below confirm.seeds = {c['seeds']}: "
                        f"the adopted contender runs at least as many seeds as every other; raise it to "
                        f"{c['seeds']} or more")
    if c["epochs"] > (retrain := config["retrain"]["epochs"]):
        # Inherited, typically: a preset that shortens the retrain of one that races at a set length.
        raise UserError(f"{path}: confirm.epochs = {c['epochs']} is more than retrain.epochs = {retrain}: the race "
                        f"would train its contenders longer than the winner's retrain; set [confirm] epochs to "
                        f"{retrain} or less")
    return config


def require_baselines(config: Config, names: list[str] | None) -> list[str]:
    """The preset's baselines `names` asks for (all of them for None), or a UserError naming those
    it lacks."""
    baselines = config["baselines"]
    unknown = [n for n in names or [] if n not in baselines]
    if unknown:
        raise UserError(f"no baseline named {', '.join(unknown)} in {config.path}; it has "
                        f"{', '.join(baselines) or 'none'} (add a [baselines.NAME] table)")
    return list(names or baselines)
