"""retrain-best's exports, and their check: `best/model.keras` (Keras, any backend) and
`best/serving/` (a TensorFlow SavedModel, where TensorFlow is installed), each loaded back and
required to predict like the model in memory before it replaces an earlier export.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from . import backend
from .model import CIFAR_SHAPE

VERIFY_IMAGES = 512  # test images the exports are checked on against the model in memory


def export_model(model: keras.Model, folder: Path) -> bool:
    """model.keras, and serving/ (a SavedModel whose `serve` endpoint takes uint8 (N, 32, 32, 3))
    where TensorFlow is installed: a SavedModel is TensorFlow's format on every backend (JAX
    exports through jax2tf). `model` is `model.for_export`'s. Returns whether serving/ was written."""
    model.save(folder / "model.keras")
    if not backend.has_tensorflow():
        return False
    import tensorflow as tf

    # An explicit endpoint rather than `model.export()`: it pins the signature to uint8 CIFAR
    # images in batches of any size and calls the model with training=False, so dropout and batch
    # norm run in inference mode whatever the caller's Keras defaults.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: model.call(images, training=False),
        input_signature=[tf.TensorSpec((None, *CIFAR_SHAPE), tf.uint8, name="image")],
    )
    archive.write_out(str(folder / "serving"), verbose=False)
    return True


def verify_exports(model: keras.Model, folder: Path, images: np.ndarray, tolerance: float = 1e-4) -> int:
    """Load the exports back; raise unless they give `model`'s probabilities and classes.

    Classes are compared where the top two probabilities differ by more than `tolerance`: on a
    near-tie, float rounding in another graph may legitimately pick the other class.
    """
    expected = model.predict(images, verbose=0)
    top2 = np.sort(expected, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > tolerance
    reloaded = keras.models.load_model(folder / "model.keras", safe_mode=True)
    predictions = [("model.keras", reloaded.predict(images, verbose=0))]
    if (folder / "serving").is_dir():
        import tensorflow as tf

        serving = tf.saved_model.load(str(folder / "serving"))
        predictions.append(("serving/", serving.serve(tf.constant(images)).numpy()))
    for name, got in predictions:
        worst = float(np.abs(expected - got).max())
        wrong = int((expected.argmax(1) != got.argmax(1))[decided].sum())
        if worst > tolerance or wrong:
            raise RuntimeError(
                f"exported {name} disagrees with the trained model (max probability difference "
                f"{worst:.2g}, {wrong} classes differ); the earlier export was left in place"
            )
    return len(images)
