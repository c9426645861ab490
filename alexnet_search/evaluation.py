"""A retrained run, scored: the epoch whose weights it kept, each split's accuracy and loss (the
test set read once per run), the mirrored test-time augmentation beside, and the mean and spread
over a retrain's seeds.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import keras
import numpy as np

from .training import Training
from .trials import direction


def kept_epoch(history: dict[str, list], objective: str) -> int | None:
    """The epoch (from 1) whose weights a run kept: its best finite `objective`, the first on a tie."""
    values = [(v, i) for i, v in enumerate(history.get(objective, [])) if math.isfinite(v)]
    if not values:
        return None
    sign = 1.0 if direction(objective) == "max" else -1.0
    return max(values, key=lambda vi: (sign * vi[0], -vi[1]))[1] + 1


def evaluate(training: Training, model: keras.Model, test, with_val: bool = False) -> dict[str, float]:
    """Accuracy and loss on each split, without augmentation or dropout (the test set read here,
    once per run), and test-time augmentation beside: each test image and its mirror averaged.
    `with_val`: the run trained on the validation split too, so "train" covers both and there is
    no "val" (a score on trained images would pass for a held-out one)."""
    result = {}
    splits = training.splits
    held = {"train": training.train_images(with_val)} | ({} if with_val else {"val": (splits.x_val, splits.y_val)})
    for split, (x, y) in {**held, "test": test}.items():
        loss, accuracy = model.evaluate(training.batches(x, y), verbose=0)
        result[f"{split}_loss"], result[f"{split}_accuracy"] = float(loss), float(accuracy)
    x, y = test
    probabilities = model.predict(training.batches(x, y), verbose=0) + \
        model.predict(training.batches(x[:, :, ::-1], y), verbose=0)
    result["test_accuracy_tta"] = float(np.mean(probabilities.argmax(axis=1) == y))
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one run) of each split's accuracy and test loss."""
    out: dict[str, Any] = {}
    for key in ("test_accuracy", "test_accuracy_tta", "val_accuracy", "train_accuracy", "test_loss"):
        values = [r[key] for r in runs if key in r]
        if not values:
            continue
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out
