"""Classify image files with a study's exported model.

PNG and JPEG only, any size and mode: each image is converted to RGB and resized to CIFAR's 32x32
(the model then resizes to its own input size, as in training). Images and model files may come
from anyone: Pillow is told to open these two formats only (others, EPS among them, can run
external programs), an image over Pillow's pixel limit (a decompression bomb) is refused, and the
model loads in Keras' safe mode (no code from the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .model import CIFAR_SHAPE, CLASS_NAMES


FORMATS = ["PNG", "JPEG"]


def load_images(paths: list[str]) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                # Pillow warns between its pixel limit and twice it, and raises beyond: refuse both.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path, formats=FORMATS) as img:
                    img = img.convert("RGB").resize(CIFAR_SHAPE[:2], Image.Resampling.BILINEAR, reducing_gap=2.0)
                    images.append(np.asarray(img, dtype=np.uint8))
        except FileNotFoundError:
            raise UserError(f"image {path} not found") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UserError(f"{path} is too large to open safely ({exc}); resize it first") from None
        except UnidentifiedImageError:
            raise UserError(f"{path} is not a PNG or JPEG image; convert it to one of those") from None
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data inside a PNG/JPEG
            raise UserError(f"{path} is a damaged image ({type(exc).__name__}: {exc}); use another file") from None
    return np.stack(images)


def load_exported(model_path: Path):
    import keras

    if not model_path.is_file():
        raise UserError(f"no exported model at {model_path}; run `make retrain-best` for this study first")
    if model_path.suffix != ".keras":
        raise UserError(f"{model_path} is not a .keras file; pass a model.keras from a study's best/ folder")
    try:
        return keras.models.load_model(model_path, safe_mode=True)
    except Exception as exc:  # a zip that is not Keras', a damaged archive, a config Keras refuses
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{model_path} is not a loadable Keras model ({type(exc).__name__}: {first}); "
                        f"re-export it with `make retrain-best`") from None


def predict(model_path: Path, paths: list[str], top: int = 3) -> list[list[tuple[str, float]]]:
    """Top classes with probabilities, per image."""
    model = load_exported(model_path)
    probs = model.predict(load_images(paths), verbose=0)
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][:top]
        out.append([(CLASS_NAMES[i], float(row[i])) for i in order])
    return out
