"""Every hyperparameter the tool knows, declared once: its name, the seed's value, the bounds any
range must respect, and (by the group it sits in) where it goes.

`Hyperparameters()` is the seed script's model. The model, its optimiser and the input pipeline
each read their own fields from one `Hyperparameters` (`model.build_alexnet`,
`model.compile_alexnet`, `model.lr_schedule_callbacks`, `data.TrainingSet.batches`); a preset's
`[space.NAME]` tables say which of them to search and over what range (`config` checks each range
against the bounds here). Plain data: nothing here knows Keras or Keras Tuner.

To add a hyperparameter: one field below, its one use where the group says it goes, and a
`[space.NAME]` table in a preset to search it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """What any value of a hyperparameter must respect, whatever a preset's range says."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is not allowed
    high_open: bool = False  # `high` itself is not allowed
    whole: bool = False  # widths: whole numbers
    names: tuple[str, ...] = ()  # a value that is a name, not a number: the names it may take

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if self.names:  # by type too: true is not 1, nor 2.0 true
            value = self.typed(value)
            allowed = any(type(value) is type(n) and value == n for n in self.names)
            return None if allowed else f"is not one of {', '.join(map(as_toml, self.names))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "is not a finite number"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            return f"is out of range; it must be {self.describe()}"
        if self.whole and not float(value).is_integer():
            return "must be a whole number"
        return None

    def typed(self, value: Any) -> Any:
        """`value` as this hyperparameter's type: Keras Tuner keeps a choice of booleans as the
        integers 0 and 1 (to it a bool is an int), in its trials and in what they record."""
        if type(value) is int and value in (0, 1) and self.names and all(type(n) is bool for n in self.names):
            return bool(value)
        return value

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        return " and ".join(parts) or "any number"


def as_toml(value: Any) -> str:
    """A value for a person to read: a boolean as a preset spells it (true/false), a string bare
    (no TOML quotes), so not for writing a preset back."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _knob(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata={"bounds": Bounds(**bounds)})


# 16384: 4x the widest layer of the paper (dense 4096), so that a width from a hand-edited JSON
# file or a hostile oracle message cannot ask for terabytes of weights.
_WIDTH = {"low": 1, "high": 16384, "whole": True}


@dataclass(frozen=True)
class Hyperparameters:
    """One value for every hyperparameter; the defaults are the seed script's."""

    # The network: model.build_alexnet. Widths are in the paper's units (a preset's
    # model.width_multiplier scales all of them together).
    conv1_filters: int = _knob(96, **_WIDTH)
    conv2_filters: int = _knob(256, **_WIDTH)
    conv3_filters: int = _knob(384, **_WIDTH)
    conv4_filters: int = _knob(384, **_WIDTH)
    conv5_filters: int = _knob(256, **_WIDTH)
    dense_units: int = _knob(4096, **_WIDTH)
    dropout: float = _knob(0.5, low=0.0, high=1.0, high_open=True)

    # The optimiser and loss: model.compile_alexnet (plain SGD, Keras' default momentum of 0, no
    # decay, the plain cross-entropy, the raw weights evaluated).
    lr: float = _knob(1e-3, low=0.0, low_open=True)
    momentum: float = _knob(0.0, low=0.0, high=1.0, high_open=True)
    nesterov: bool = _knob(False, names=(False, True))
    # The weights' exponential moving average, evaluated and kept in their place: its momentum per
    # step, 0 for none (the seed).
    ema: float = _knob(0.0, low=0.0, high=1.0, high_open=True)
    weight_decay: float = _knob(0.0, low=0.0)
    label_smoothing: float = _knob(0.0, low=0.0, high=1.0, high_open=True)
    # Its learning-rate schedule: model.lr_schedule_callbacks (the seed kept lr constant, no warmup).
    lr_schedule: str = _knob("constant", names=("constant", "plateau", "cosine"))
    warmup_epochs: int = _knob(0, low=0, high=1000, whole=True)

    # The data: data.TrainingSet.batches (random shifts of up to 10% of the image, and flips; no cutout).
    translate: float = _knob(0.1, low=0.0, high=0.5)
    cutout: float = _knob(0.0, low=0.0, high=1.0)

    @classmethod
    def of(cls, values: dict[str, Any]) -> "Hyperparameters":
        """From a name -> value dict (a trial's, a JSON file's); missing names keep the seed's
        value, and anything else (Keras Tuner's tuner/* bookkeeping) is ignored."""
        return cls(**{k: BOUNDS[k].typed(v) for k, v in values.items() if k in NAMES})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def problems(values: dict[str, Any]) -> list[str]:
    """What is wrong with a set of named values (a baseline, a hyperparameters.json): unknown
    names, values out of their bounds. Empty when every value can be trained."""
    found = []
    for name, value in values.items():
        if name not in BOUNDS:
            found.append(f"unknown hyperparameter '{name}' (known: {', '.join(NAMES)})")
        elif problem := BOUNDS[name].problem(value):
            found.append(f"{name} = {value!r} {problem}")
    return found


# conv1's kernel in the seed: a preset's `[model] conv1_kernel` (part of the network's shape, with
# the input size and width multiplier), not a hyperparameter, so baselines and tuned models share it.
SEED_CONV1_KERNEL = 11
# Batch norm's moving-statistics momentum in the seed: Keras' default. Also a preset's `[model]` key.
SEED_BN_MOMENTUM = 0.99

NAMES: tuple[str, ...] = tuple(f.name for f in fields(Hyperparameters))
# Every hyperparameter at the seed script's value: the hand-picked AlexNet this tool starts from.
SEED_SCRIPT: dict[str, Any] = Hyperparameters().as_dict()
BOUNDS: dict[str, Bounds] = {f.name: f.metadata["bounds"] for f in fields(Hyperparameters)}
