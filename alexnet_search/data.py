"""CIFAR-10 in training: how it is split, and how batches reach the model (its files: `cifar`).

Images stay uint8 at 32x32 (30 MB for 10,000); the model scales and resizes per batch. Batches are
built in numpy (`Batches`, a `keras.utils.PyDataset`), one pipeline for every Keras backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from .errors import UserError
from .space import Hyperparameters


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    note: str


def make_splits(x: np.ndarray, y: np.ndarray, train_size: int, val_size: int) -> Splits:
    """Training subset and a disjoint validation set, both from the training images.

    The subset is the first `train_size` images. Validation takes the next `val_size` images when
    the source has them; otherwise it is carved from the end of the subset, which then trains on
    `train_size - val_size` images. The test set is never used here.
    """
    n = len(x)
    if n >= train_size + val_size:
        return Splits(
            x[:train_size], y[:train_size], x[train_size:train_size + val_size],
            y[train_size:train_size + val_size],
            f"training on images 0-{train_size - 1}, validating on images {train_size}-"
            f"{train_size + val_size - 1} ({train_size + val_size} of {n} used)",
        )
    if n >= train_size and train_size > val_size:
        keep = train_size - val_size
        return Splits(
            x[:keep], y[:keep], x[keep:train_size], y[keep:train_size],
            f"the source has only {n} training images, so validation ({val_size}) is carved from "
            f"the {train_size}-image subset: training on {keep}",
        )
    raise UserError(
        f"data.train_size {train_size} + data.val_size {val_size} need more than the {n} training "
        f"images available; lower them in the preset"
    )


def augment(images: np.ndarray, translate: float, rng: np.random.Generator, cutout: float = 0.0) -> np.ndarray:
    """A batch's training augmentation: a random horizontal flip and a random shift per image, and
    with `cutout` a square of that fraction of the image's side set to grey.

    The shift is the paper's random crop: each image is reflect-padded by `translate` x 32 pixels
    on each side and a random 32x32 window is cut from it (the paper cut 224 of 256: up to ~6%
    each way). Cutout (DeVries and Taylor 2017) centres its square anywhere on the image, so near
    an edge less of it falls inside. Works on uint8; no pixel values are interpolated. Plain
    numpy, so it runs the same under every Keras backend; every draw comes from `rng`.
    """
    n, size = len(images), images.shape[1]
    flip = rng.random(n) < 0.5
    out = images.copy()
    out[flip] = out[flip, :, ::-1]
    pad = int(round(translate * size))
    if pad:
        padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        dy, dx = rng.integers(0, 2 * pad + 1, (2, n))
        for i in range(n):  # slicing per image: 6x faster than one fancy-indexed gather
            out[i] = padded[i, dy[i]:dy[i] + size, dx[i]:dx[i] + size]
    side = int(round(cutout * size))
    if side:
        cy, cx = rng.integers(0, size, (2, n))
        for i in range(n):
            top, left = max(0, cy[i] - side // 2), max(0, cx[i] - side // 2)
            out[i, top:cy[i] - side // 2 + side, left:cx[i] - side // 2 + side] = 128
    return out


class Batches(keras.utils.PyDataset):
    """uint8 image batches for `fit`/`evaluate`/`predict`, on any Keras backend.

    `shuffle`: a new order each epoch. `translate`: augment each training image (None: none).
    Every draw is a function of (`seed`, epoch, batch index) alone, so batches are the same in
    every run whatever thread builds them; with `seed=None` one seed is drawn from numpy's global
    generator, which `keras.utils.set_random_seed` fixes. Training batches (shuffled) drop the
    last partial batch when there is more than one: a batch of another shape would make XLA
    (JAX, or TensorFlow's jit_compile) compile the train step a second time for every model.
    `parallel_map`: build batches on worker threads; `prefetch`: let those threads keep up to 8
    batches ready ahead of the one training, instead of 1 (the preset's `[data]` speed options;
    neither changes the data; without worker threads Keras' own adapter decides).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int | None = None, translate: float | None = None, cutout: float = 0.0,
                 parallel_map: bool = True, prefetch: bool = True):
        super().__init__(workers=_WORKERS if parallel_map else 1, max_queue_size=8 if prefetch else 1)
        self.x, self.y, self.batch_size = x, np.asarray(y), batch_size
        self.shuffle, self.translate, self.cutout = shuffle, translate, cutout
        self.seed = int(np.random.randint(2**31 - 1)) if seed is None else int(seed)
        self.epoch = 0
        self._cached: tuple[int, np.ndarray | None] = (-1, None)
        whole = len(x) // batch_size if shuffle and len(x) > batch_size else math.ceil(len(x) / batch_size)
        self._num_batches = whole

    def __len__(self) -> int:
        return self._num_batches

    def __getitem__(self, index: int):
        if not 0 <= index < self._num_batches:
            raise IndexError(index)
        span = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.shuffle:
            take = np.sort(self._order()[span])  # sorted: reads memory in order; the batch's content is what counts
            x, y = self.x[take], self.y[take]
        else:
            x, y = self.x[span], self.y[span]
        if self.translate is not None:
            x = augment(x, self.translate, np.random.default_rng([self.seed, _DRAWS, self.epoch, index]), self.cutout)
        return x, y

    def _order(self) -> np.ndarray:
        # One permutation per epoch, kept for its batches (worker threads may compute it twice).
        epoch, order = self._cached
        if epoch != self.epoch:
            order = np.random.default_rng([self.seed, _ORDER, self.epoch]).permutation(len(self.x))
            self._cached = (self.epoch, order)
        return order

    def on_epoch_end(self):
        self.epoch += 1


# Stream names that keep the order and the augmentation draws independent of each other.
_ORDER, _DRAWS = 0x0D, 0xA6
# Worker threads for `parallel_map`: numpy releases the GIL while it copies and gathers, and
# Keras' enqueuer hands batches back in order whatever thread finished first.
_WORKERS = 4


def pipeline_options(config) -> dict[str, bool]:
    """The preset's input-pipeline switches, as keyword arguments for `Batches`/`TrainingSet`."""
    return {key: config["data"][key] for key in ("parallel_map", "prefetch")}


@dataclass(frozen=True)
class TrainingSet:
    """Training images for `HyperModel.fit`, which builds the augmented pipeline from `hp`."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    seed: int | None = None
    parallel_map: bool = True
    prefetch: bool = True

    def batches(self, hp: Hyperparameters) -> Batches:
        """Shuffled batches, augmented as `hp` says."""
        return Batches(self.x, self.y, self.batch_size, shuffle=True, seed=self.seed, translate=hp.translate,
                            cutout=hp.cutout, parallel_map=self.parallel_map, prefetch=self.prefetch)
