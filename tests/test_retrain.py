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


def _study_with_best(tmp_path, values, name="cpu"):
    import json

    folder = tmp_path / "results" / name
    folder.mkdir(parents=True)
    (folder / "best_hyperparameters.json").write_text(json.dumps(
        {"trial_id": "0012", "val_accuracy": 0.5, "hyperparameters": values}))
    return folder


def test_hyperparameters_come_from_another_study_or_a_file(tmp_path, tiny_config):
    import json

    from alexnet_search.config import load_config
    from alexnet_search.retrain import hyperparameters_from

    config = load_config(tiny_config)
    folder = _study_with_best(tmp_path, {"dropout": 0.3, "lr": 0.02, "lr_schedule": "cosine"})
    values, where = hyperparameters_from("cpu", tmp_path / "results", config)
    assert values == {"dropout": 0.3, "lr": 0.02, "lr_schedule": "cosine"}
    assert where == f"{folder / 'best_hyperparameters.json'} (trial 0012)"
    flat = tmp_path / "hyperparameters.json"  # best/hyperparameters.json is a flat dict
    flat.write_text(json.dumps({"dropout": 0.4}))
    assert hyperparameters_from(str(flat), tmp_path / "results", config)[0] == {"dropout": 0.4}


def test_hyperparameters_from_elsewhere_must_be_known_and_inside_their_bounds(tmp_path, tiny_config):
    import pytest

    from alexnet_search.config import load_config
    from alexnet_search.errors import UserError
    from alexnet_search.retrain import hyperparameters_from

    config = load_config(tiny_config)
    with pytest.raises(UserError, match="no .*best_hyperparameters.json; finish that study"):
        hyperparameters_from("absent", tmp_path / "results", config)
    _study_with_best(tmp_path, {"dropout": 0.3, "kernel": 5}, name="odd")
    with pytest.raises(UserError, match="unknown hyperparameter 'kernel'"):
        hyperparameters_from("odd", tmp_path / "results", config)
    _study_with_best(tmp_path, {"momentum": 1.5}, name="wild")
    with pytest.raises(UserError, match="momentum = 1.5 is out of range; it must be >= 0.0 and < 1.0"):
        hyperparameters_from("wild", tmp_path / "results", config)
    # Outside the preset's search range but a valid model: a hand-picked value may go there.
    _study_with_best(tmp_path, {"lr": 0.5}, name="bold")
    assert hyperparameters_from("bold", tmp_path / "results", config)[0] == {"lr": 0.5}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        hyperparameters_from(str(tmp_path / "bad.json"), tmp_path / "results", config)
    with pytest.raises(UserError, match="invalid"):
        hyperparameters_from("../elsewhere", tmp_path / "results", config)
