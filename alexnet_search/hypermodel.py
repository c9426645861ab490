"""The Keras Tuner HyperModel: maps `hp` onto `model.build_alexnet`, `model.compile_alexnet` and,
in `fit`, the augmentation of `data.TrainingSet`.

The search space itself (names, ranges, defaults) lives in the preset's [space.*] tables; this
module only declares those entries on `hp`. Every default is the seed's value, so
`build(keras_tuner.HyperParameters())` is the seed's model.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras_tuner

from .config import Config
from .data import TrainingSet
from .model import build_alexnet, compile_alexnet, lr_schedule_callback
from .study import clean_value

_MODEL_ARGS = set(inspect.signature(build_alexnet).parameters) - {"image_size", "num_classes", "precision"}
_COMPILE_ARGS = set(inspect.signature(compile_alexnet).parameters) - {"model", "jit_compile", "precision"}
_COMPILE_DEFAULTS = {k: p.default for k, p in inspect.signature(compile_alexnet).parameters.items()}
_DATA_ARGS = set(inspect.signature(TrainingSet.dataset).parameters) - {"self"}
_DEFAULTS = {k: p.default for k, p in inspect.signature(build_alexnet).parameters.items()}
_WIDTHS = {"conv1_filters", "conv2_filters", "conv3_filters", "conv4_filters", "conv5_filters", "dense_units"}


def declare(hp: keras_tuner.HyperParameters, name: str, entry: dict[str, Any]):
    """Declare one [space.NAME] table on `hp` and return its current value."""
    kind = entry["type"]
    if kind == "choice":
        return hp.Choice(name, entry["values"], default=entry["default"])
    if kind == "int":
        return hp.Int(name, entry["min"], entry["max"], step=entry.get("step"), default=entry["default"])
    return hp.Float(
        name, float(entry["min"]), float(entry["max"]), step=entry.get("step"),
        sampling=entry.get("sampling", "linear"), default=float(entry["default"]),
    )


class AlexNetHyperModel(keras_tuner.HyperModel):
    """AlexNet over the preset's search space.

    `width_multiplier` scales every conv and dense width after the hyperparameters are read, so
    a CPU preset can search the paper's space (in the paper's units) on a narrower network.
    `horizon` is the epoch count a learning-rate schedule spans: Hyperband's max_epochs in a
    search, the retrain's epochs in retrain-best.
    """

    def __init__(self, space: dict[str, dict[str, Any]], image_size: int = 128,
                 width_multiplier: float = 1.0, jit_compile: bool = False, horizon: int = 64,
                 precision: str = "float32"):
        super().__init__(name="alexnet")
        self.space = space
        self.image_size = image_size
        self.width_multiplier = width_multiplier
        self.jit_compile = jit_compile
        self.horizon = horizon
        self.precision = precision

    @classmethod
    def from_config(cls, config: Config, horizon: int | None = None, precision: str | None = None,
                    jit_compile: bool | None = None) -> "AlexNetHyperModel":
        """The preset's hypermodel; `precision`/`jit_compile` override its speed options (see
        `distribute.speed_options`, which turns them off where no GPU is visible)."""
        m = config["model"]
        return cls(
            space=config.space,
            image_size=config["data"]["image_size"],
            width_multiplier=m["width_multiplier"],
            jit_compile=m["jit_compile"] if jit_compile is None else jit_compile,
            horizon=horizon or config["search"]["max_epochs"],
            precision=precision or m["precision"],
        )

    def values(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The searched values for this `hp`, declaring any not yet declared."""
        return {name: clean_value(declare(hp, name, entry)) for name, entry in self.space.items()}

    def compile_args(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The searched values that `model.compile_alexnet` takes; those not searched keep its defaults."""
        return {k: v for k, v in self.values(hp).items() if k in _COMPILE_ARGS}

    def build(self, hp: keras_tuner.HyperParameters):
        values = self.values(hp)
        model_args = {k: v for k, v in values.items() if k in _MODEL_ARGS}
        compile_args = self.compile_args(hp)
        # Widths not in the space keep the seed's value; all of them are scaled.
        for name in _WIDTHS:
            width = model_args.get(name, _DEFAULTS[name])
            model_args[name] = max(1, round(width * self.width_multiplier))
        model = build_alexnet(image_size=self.image_size, precision=self.precision, **model_args)
        return compile_alexnet(model, jit_compile=self.jit_compile, precision=self.precision, **compile_args)

    def fit(self, hp, model, x, *args, **kwargs):
        """`model.fit`, with a `TrainingSet` turned into its augmented pipeline for this `hp`.

        Keras Tuner passes its callbacks (checkpointing, TensorBoard, HParams) and Hyperband's
        epochs/initial_epoch through kwargs: all are forwarded.
        """
        values = self.values(hp)
        if isinstance(x, TrainingSet):
            x = x.dataset(**{k: v for k, v in values.items() if k in _DATA_ARGS})
            kwargs.setdefault("shuffle", False)  # the pipeline reshuffles each epoch itself
        schedule = lr_schedule_callback(
            values.get("lr_schedule", "constant"), values.get("lr", _COMPILE_DEFAULTS["lr"]), self.horizon
        )
        if schedule is not None:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), schedule]
        return model.fit(x, *args, **kwargs)
