"""CIFAR-10's files: where they come from, and each batch read safely. No Keras until a download,
so the launcher checks a data folder before it starts a chief and its workers.

Sources, in order: `--data-dir PATH`, the `CIFAR10_DIR` environment variable, else Keras' own
download (`keras.datasets.cifar10.load_data()`, cached in ~/.keras/datasets). A folder is the
official python-batch layout (`data_batch_N`, `test_batch`), with any number of training batches.

Batch files are pickles, and unpickling runs whatever a file asks for. They are read through an
unpickler that admits only the few numpy and builtin names the format needs, so a hostile file is
refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

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
