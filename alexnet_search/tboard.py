"""TensorBoard logs on every Keras backend, TensorFlow installed or not.

Keras' own TensorBoard callback imports TensorFlow, and Keras Tuner writes logs and HParams only
on the TensorFlow backend, so this package writes them itself with the `tensorboard` package's
event writer and summary protos: the files are TensorBoard's own format, byte for byte what
`tf.summary` writes, and read by its Scalars and HParams dashboards unchanged.

Layout (as Keras' callback and Keras Tuner lay it out, so dashboards and `report` read one shape):

    tensorboard/                    the HParams experiment: every hyperparameter's domain, the metrics
    tensorboard/<run>/              one HParams session per trial or retrain seed, and its `epochs`
    tensorboard/<run>/train/        epoch_loss, epoch_accuracy, epoch_learning_rate per epoch
    tensorboard/<run>/validation/   epoch_loss, epoch_accuracy per epoch
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import keras
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams
from tensorboard.plugins.scalar import summary_v2 as scalars
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

# The HParams tab's metric columns: (tag, run subfolder, display name).
METRICS = (
    ("epoch_accuracy", "validation", "val accuracy"),
    ("epoch_loss", "validation", "val loss"),
    ("epochs", None, "epochs"),
    ("epoch_accuracy", "train", "train accuracy"),
    ("epoch_loss", "train", "train loss"),
)


class Writer:
    """One event file in `folder`, created on first use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._file: EventFileWriter | None = None

    def open(self) -> EventFileWriter:
        """The file, created now if not yet (its first event records when)."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = EventFileWriter(str(self.folder))
        return self._file

    def write(self, summary: summary_pb2.Summary, step: int = 0) -> None:
        self.open().add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.write(scalars.scalar_pb(tag, float(value)), step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _domain(entry: dict[str, Any]):
    if entry["type"] == "choice":
        return hparams.Discrete(list(entry["values"]))
    if entry["type"] == "int":
        return hparams.IntInterval(int(entry["min"]), int(entry["max"]))
    return hparams.RealInterval(float(entry["min"]), float(entry["max"]))


def write_experiment(folder: str | Path, space: dict[str, dict[str, Any]]) -> None:
    """Declare the HParams experiment, so the dashboard lists every hyperparameter's domain and
    every metric, even for trials that have not logged them yet."""
    writer = Writer(folder)
    metrics = [hparams.Metric(tag, group=group, display_name=shown) for tag, group, shown in METRICS]
    writer.write(hparams.hparams_config_pb(
        hparams=[hparams.HParam(name, _domain(entry)) for name, entry in space.items()], metrics=metrics))
    writer.close()


class TensorBoardLogger(keras.callbacks.Callback):
    """Per-epoch train and validation scalars and one HParams session, in `log_dir`.

    `session` names the HParams session (a trial id, or `retrain-best/seed7`); `values` are its
    hyperparameters. Writers open when training begins, so a copy made before then (Keras Tuner
    deep-copies a trial's callbacks) holds nothing but the folder.
    """

    def __init__(self, log_dir: str | Path, values: dict[str, Any] | None = None, session: str | None = None):
        super().__init__()
        self.log_dir, self.values, self.session = Path(log_dir), values, session
        self._writers: dict[str, Writer] = {}
        self._last_epoch: int | None = None

    def _writer(self, name: str) -> Writer:
        if name not in self._writers:
            self._writers[name] = Writer(self.log_dir / name if name else self.log_dir)
        return self._writers[name]

    def on_train_begin(self, logs=None):
        # The train writer's file opens now: `report.fit_seconds` reads fit's start from it.
        self._writer("train").open()
        if self.values is not None:
            self._writer("").write(hparams.hparams_pb(self.values, trial_id=self.session))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            if key.startswith("val_"):
                self._writer("validation").scalar(f"epoch_{key[4:]}", value, epoch)
            else:
                self._writer("train").scalar(f"epoch_{key}", value, epoch)
        if "learning_rate" not in logs and self.model is not None:
            lr = getattr(self.model.optimizer, "learning_rate", None)
            if lr is not None:
                self._writer("train").scalar("epoch_learning_rate", _number(lr), epoch)
        self._last_epoch = epoch

    def on_train_end(self, logs=None):
        if self._last_epoch is not None:  # the HParams tab's `epochs` column: epochs this model has trained
            self._writer("").scalar("epochs", self._last_epoch + 1, 0)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _number(value) -> float:
    """A backend scalar as a float. Not through numpy's __array__: TensorFlow's tensors and Keras'
    variables lack its `copy` keyword, which numpy 2 warns about on every call."""
    tensor = keras.ops.convert_to_tensor(value)
    return float(tensor.numpy() if hasattr(tensor, "numpy") else tensor.item())


def events(folder: Path) -> Iterator[event_pb2.Event]:
    """Every event of the event files directly in `folder`, oldest file first; a file cut short
    by a killed run yields what it holds."""
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: (p.name.split(".")[3:4], p.name)):
        try:
            yield from EventFileLoader(str(path)).Load()
        except Exception:  # DataLossError, from whichever TensorFlow (or its stub) reads the file
            continue


def scalar_value(value: summary_pb2.Summary.Value) -> float:
    """A scalar summary's number: Keras 3 and this module write tensors, older writers simple_value."""
    return float(tensor_util.make_ndarray(value.tensor)) if value.HasField("tensor") else float(value.simple_value)
