"""CIFAR-10: where it comes from, how it is split, and how batches reach the model.

Sources, in order: `--data-dir PATH`, the `CIFAR10_DIR` environment variable, else Keras' own
download (`keras.datasets.cifar10.load_data()`, cached in ~/.keras/datasets). A folder is the
official python-batch layout (`data_batch_N`, `test_batch`), with any number of training batches.

Batch files are pickles, and unpickling runs whatever a file asks for. They are read through an
unpickler that admits only the few numpy and builtin names the format needs, so a hostile file is
refused instead of executed.

Images stay uint8 at 32x32 (30 MB for 10,000); the model scales and resizes per batch. Batches are
built in numpy (`Batches`, a `keras.utils.PyDataset`), one pipeline for every Keras backend.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .errors import UserError
from .space import Hyperparameters

ENV_VAR = "CIFAR10_DIR"
_BATCH_RE = re.compile(r"^data_batch_(\d+)$")

# What a CIFAR-10 batch pickle may name: numpy's array reconstruction (numpy 1 and 2 spellings)
# and the codec Python 3 uses to pickle bytes at protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def load_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (images uint8 (N, 32, 32, 3), labels uint8 (N,)).

    Same result as `keras.src.datasets.cifar.load_batch` plus the (N, 32, 32, 3) transpose that
    `keras.datasets.cifar10.load_data()` applies; raises UserError for a file that is not one.
    """
    path = Path(path)
    hint = "re-extract cifar-10-python.tar.gz into that folder"
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "refused" in str(exc):
            raise UserError(
                f"{path} is not a plain CIFAR-10 batch: it asks to load code ({exc}), so it was not "
                f"opened; replace it with the official file"
            ) from None
        raise UserError(f"{path} is corrupt or truncated ({exc}); {hint}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    except Exception as exc:  # truncated pickles raise EOFError, ValueError, ...
        raise UserError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); {hint}") from None

    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR-10 batch (expected a dict, got {type(batch).__name__}); {hint}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        shape = getattr(data, "shape", None)
        raise UserError(f"{path} has no uint8 'data' array of shape (N, 3072) (found {shape}); {hint}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise UserError(f"{path}: labels do not match the images (need {data.shape[0]} labels in 0..9); {hint}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """The folder to read: the flag, else $CIFAR10_DIR, else None (download through Keras)."""
    chosen = data_dir or os.environ.get(ENV_VAR) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    origin = "--data-dir" if data_dir else ENV_VAR
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise UserError(f"data folder {path} (from {origin}) {what}; point it at a cifar-10-batches-py folder")
    # Accept the folder the tarball was extracted into, too.
    if not _training_batches(path) and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    return path


def _training_batches(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BATCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


@dataclass(frozen=True)
class Source:
    """Where CIFAR-10 is read from; `describe()` is what results record."""

    folder: Path | None

    def describe(self) -> str:
        return str(self.folder) if self.folder else "keras.datasets.cifar10 (downloaded)"

    def train(self) -> tuple[np.ndarray, np.ndarray]:
        if self.folder is None:
            return _download()[0]
        batches = _training_batches(self.folder)
        if not batches:
            raise UserError(
                f"{self.folder} holds no data_batch_N files; it must be CIFAR-10's python layout "
                f"(cifar-10-batches-py)"
            )
        parts = [load_batch(p) for p in batches]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        if self.folder is None:
            return _download()[1]
        path = self.folder / "test_batch"
        if not path.is_file():
            raise UserError(f"{self.folder} has no test_batch; it must be CIFAR-10's python layout")
        return load_batch(path)


def source_from(data_dir: str | None) -> Source:
    return Source(resolve_data_dir(data_dir))


def _download():
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise UserError(
            f"could not download CIFAR-10 through Keras ({type(exc).__name__}: {exc}); on an offline "
            f"machine pass --data-dir PATH or set {ENV_VAR} to a cifar-10-batches-py folder"
        ) from None
    return (x_train, y_train.reshape(-1).astype(np.uint8)), (x_test, y_test.reshape(-1).astype(np.uint8))


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
