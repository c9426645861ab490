"""The Keras Tuner HyperModel: maps `hp` onto a `space.Hyperparameters`, which the model, the
optimiser and the input pipeline each read (`model.build_alexnet`, `model.compile_alexnet`,
`model.lr_schedule_callbacks`, `data.TrainingSet.batches`).

Which hyperparameters are searched, and over what range, is the preset's [space.*] tables; this
module only declares those on `hp`. The rest keep the seed's value, so
`build(keras_tuner.HyperParameters())` is the seed's model.
"""

from __future__ import annotations

from typing import Any

import keras_tuner

from .config import Config
from .data import TrainingSet
from .model import build_alexnet, compile_alexnet, ema_callbacks, lr_schedule_callbacks
from .space import NAMES, SEED_BN_MOMENTUM, SEED_CONV1_KERNEL, Hyperparameters, problems
from .trials import clean_value


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
    search, the confirmation's or the retrain's epochs in theirs.
    """

    def __init__(self, space: dict[str, dict[str, Any]], image_size: int = 128,
                 width_multiplier: float = 1.0, jit_compile: bool = False, horizon: int = 64,
                 precision: str = "float32", conv1_kernel: int = SEED_CONV1_KERNEL,
                 bn_momentum: float = SEED_BN_MOMENTUM):
        super().__init__(name="alexnet")
        self.conv1_kernel = conv1_kernel
        self.bn_momentum = bn_momentum
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
        `devices.precision_and_xla_options`, which turns them off where no GPU is visible)."""
        m = config["model"]
        return cls(
            space=config.space,
            image_size=config["data"]["image_size"],
            width_multiplier=m["width_multiplier"],
            jit_compile=m["jit_compile"] if jit_compile is None else jit_compile,
            horizon=horizon or config["search"]["max_epochs"],
            precision=precision or m["precision"],
            conv1_kernel=m["conv1_kernel"],
            bn_momentum=m["bn_momentum"],
        )

    def values(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The searched values for this `hp`, declaring any not yet declared."""
        return {name: clean_value(declare(hp, name, entry)) for name, entry in self.space.items()}

    def hyperparameters(self, hp: keras_tuner.HyperParameters) -> Hyperparameters:
        """This `hp`'s values. A name the space does not search takes a value set on `hp` directly
        (a baseline's, or one from `--from`), else the seed's. ValueError (the trial fails with it)
        for a value outside space.BOUNDS: values may come over the wire from a chief."""
        values = {**hp.values, **self.values(hp)}
        found = problems({k: v for k, v in values.items() if k in NAMES})
        if found:
            raise ValueError(f"hyperparameter {found[0]}")
        return Hyperparameters.of(values)

    def build(self, hp: keras_tuner.HyperParameters):
        params = self.hyperparameters(hp)
        model = build_alexnet(params, image_size=self.image_size, width_multiplier=self.width_multiplier,
                              precision=self.precision, conv1_kernel=self.conv1_kernel,
                              bn_momentum=self.bn_momentum)
        return compile_alexnet(model, params, jit_compile=self.jit_compile, precision=self.precision)

    def fit(self, hp, model, x, *args, **kwargs):
        """`model.fit`, with a `TrainingSet` turned into its augmented batches for this `hp`.

        Keras Tuner passes its callbacks (checkpointing, TensorBoard, HParams) and Hyperband's
        epochs/initial_epoch through kwargs: all are forwarded.
        """
        params = self.hyperparameters(hp)
        if isinstance(x, TrainingSet):
            x = x.batches(params)
            kwargs.setdefault("shuffle", False)  # the batches reshuffle each epoch themselves
        # The average's swap first: Keras Tuner's checkpoint, among kwargs' callbacks, must see it.
        # Without validation data (a retrain on train+val) a plateau schedule watches the training loss.
        monitor = "val_loss" if kwargs.get("validation_data") is not None else "loss"
        kwargs["callbacks"] = [*ema_callbacks(params), *kwargs.get("callbacks", []),
                               *lr_schedule_callbacks(params, self.horizon, monitor=monitor)]
        return model.fit(x, *args, **kwargs)
