"""retrain.py: the epoch a retrain keeps. The full retrain-best/baseline runs are in test_cli.py."""

import keras
import numpy as np

from alexnet_search.retrain import KeepBestEpoch


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return model


def _run(monitor, values):
    """Feed `values` as the epochs' validation metric, with epoch k's weights all equal to k."""
    model, keep = _model(), KeepBestEpoch(monitor)
    keep.set_model(model)
    keep.on_train_begin()
    for epoch, value in enumerate(values):
        model.set_weights([np.full(w.shape, epoch + 1.0, w.dtype) for w in model.get_weights()])
        keep.on_epoch_end(epoch, {monitor: value})
    keep.on_train_end()
    return keep, model.get_weights()[0].ravel()[0]


def test_the_best_validation_epoch_is_put_back_not_the_last():
    keep, weight = _run("val_accuracy", [0.3, 0.6, 0.5, 0.55])
    assert keep.best_epoch == 2 and weight == 2.0


def test_for_a_loss_lower_is_better_and_non_finite_epochs_never_win():
    keep, weight = _run("val_loss", [2.0, float("nan"), 1.2, 1.5])
    assert keep.best_epoch == 3 and weight == 3.0
