"""What every training run of a preset shares: the data splits, the speed options for this machine,
the GPUs a model trains on, and the batches. The search, retrain-best, baseline and `make bench`'s
study all start here, so a trial and a retrain of the same hyperparameters see the same data the
same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import devices
from .config import Config
from .cifar import Source
from .data import Batches, Splits, TrainingSet, make_splits, pipeline_options
from .hypermodel import AlexNetHyperModel


@dataclass
class Training:
    """A preset's training setup on this machine; `prepare` builds it."""

    config: Config
    source: Source
    splits: Splits
    precision: str
    jit_compile: bool
    note: str | None  # why the preset's speed options were changed here, if they were
    strategy: Any  # tf.distribute.MirroredStrategy over several GPUs on TensorFlow, else None (JAX: process-wide)
    batch_size: int  # global: the preset's batch size times the devices a step is split over

    @classmethod
    def prepare(cls, config: Config, source: Source, several_gpus: bool = True) -> "Training":
        """Read and split the training images (UserError on bad data, before anything is written),
        and settle the speed options and devices. `several_gpus=False`: one device, as a
        distributed study's chief (it trains nothing) or a single-GPU worker."""
        x, y = source.train()
        d = config["data"]
        splits = make_splits(x, y, d["train_size"], d["val_size"])
        precision, jit, note = devices.precision_and_xla(config)
        strategy = devices.strategy() if several_gpus else None
        return cls(config, source, splits, precision, jit, note, strategy,
                   d["batch_size"] * devices.replicas(strategy))

    def describe(self) -> list[str]:
        """Lines saying what this setup changed or uses: speed note, GPUs, data."""
        lines = [f"note: {self.note}"] if self.note else []
        if self.precision != "float32":
            lines.append(f"precision: {self.precision} (layers compute in 16 bits, weights and scores stay float32)")
        if self.strategy is not None:
            lines.append(f"{self.strategy.num_replicas_in_sync} GPUs per model (MirroredStrategy): "
                         f"global batch {self.batch_size}")
        elif (count := devices.replicas(None)) > 1:
            lines.append(f"{count} devices per model (Keras DataParallel on JAX): global batch {self.batch_size}")
        lines.append(f"data: {self.source.describe()}: {self.splits.note}")
        return lines

    def trained_with(self) -> dict[str, Any]:
        """The speed options runs here actually use (the preset's, after `devices.precision_and_xla`),
        for the provenance beside a result: the preset alone does not say them."""
        return {"precision": self.precision, "jit_compile": self.jit_compile}

    def hypermodel(self, horizon: int | None = None) -> AlexNetHyperModel:
        """The preset's hypermodel with this machine's speed options; `horizon`: the epochs a
        learning-rate schedule spans (default: Hyperband's max_epochs)."""
        return AlexNetHyperModel.from_config(self.config, horizon=horizon, precision=self.precision,
                                             jit_compile=self.jit_compile)

    def build(self, hypermodel: AlexNetHyperModel, hp):
        """`hypermodel.build(hp)`, under the multi-GPU strategy where there is one."""
        if self.strategy is None:
            return hypermodel.build(hp)
        with self.strategy.scope():
            return hypermodel.build(hp)

    def train_images(self, with_val: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The training split's images and labels; `with_val`: the validation split's after them
        (a retrain with `train_on = "train+val"`)."""
        x, y = self.splits.x_train, self.splits.y_train
        if with_val:
            x, y = np.concatenate([x, self.splits.x_val]), np.concatenate([y, self.splits.y_val])
        return x, y

    def train_set(self, seed: int, with_val: bool = False) -> TrainingSet:
        """`train_images`, for `HyperModel.fit` to augment as each trial's values say."""
        return TrainingSet(*self.train_images(with_val), self.batch_size, seed=seed, **pipeline_options(self.config))

    def batches(self, x: np.ndarray, y: np.ndarray) -> Batches:
        """Plain batches (no shuffling, no augmentation): validation and evaluation."""
        return Batches(x, y, self.batch_size, **pipeline_options(self.config))

    def val_set(self) -> Batches:
        return self.batches(self.splits.x_val, self.splits.y_val)
