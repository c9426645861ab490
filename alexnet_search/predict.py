"""Classify image files with a study's exported model.

Any size and mode: each image is converted to RGB and resized to CIFAR's 32x32 (the model then
resizes to its own input size, as in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .model import CIFAR_SHAPE, CLASS_NAMES


def load_images(paths: list[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB").resize(CIFAR_SHAPE[:2], Image.Resampling.BILINEAR, reducing_gap=2.0)
                images.append(np.asarray(img, dtype=np.uint8))
        except FileNotFoundError:
            raise UserError(f"image {path} not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{path} is not a readable image ({exc}); use PNG or JPEG files") from None
    return np.stack(images)


def load_exported(model_path: Path):
    import keras

    if not model_path.is_file():
        raise UserError(f"no exported model at {model_path}; run `make retrain-best` for this study first")
    return keras.models.load_model(model_path, safe_mode=True)


def predict(model_path: Path, paths: list[str], top: int = 3) -> list[list[tuple[str, float]]]:
    """Top classes with probabilities, per image."""
    model = load_exported(model_path)
    probs = model.predict(load_images(paths), verbose=0)
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][:top]
        out.append([(CLASS_NAMES[i], float(row[i])) for i in order])
    return out
