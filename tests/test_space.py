"""space.py: one declaration per hyperparameter; the seed's values are its defaults."""

import pytest

from alexnet_search.space import BOUNDS, NAMES, SEED_SCRIPT, Hyperparameters


def test_the_defaults_are_the_seed_script_and_inside_their_own_bounds():
    assert SEED_SCRIPT == {
        "conv1_filters": 96, "conv2_filters": 256, "conv3_filters": 384, "conv4_filters": 384, "conv5_filters": 256,
        "dense_units": 4096, "dropout": 0.5, "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
        "lr_schedule": "constant", "translate": 0.1,
        # Added since, each off at its seed value: the seed had none of them.
        "label_smoothing": 0.0, "warmup_epochs": 0, "cutout": 0.0, "nesterov": False, "ema": 0.0,
    }
    assert set(NAMES) == set(BOUNDS) == set(SEED_SCRIPT)
    assert all(BOUNDS[name].problem(value) is None for name, value in SEED_SCRIPT.items())


def test_of_keeps_the_seed_value_for_missing_names_and_ignores_keras_tuners_own():
    hp = Hyperparameters.of({"lr": 0.05, "tuner/epochs": 3, "tuner/trial_id": "0001"})
    assert hp == Hyperparameters(lr=0.05) and hp.as_dict() == {**SEED_SCRIPT, "lr": 0.05}


@pytest.mark.parametrize("name, value, problem", [
    ("lr", 0.0, "it must be > 0.0"),
    ("dropout", 1.0, "it must be >= 0.0 and < 1.0"),
    ("momentum", -0.1, "it must be >= 0.0 and < 1.0"),
    ("conv1_filters", 0, "it must be >= 1"),
    ("conv1_filters", 9.5, "must be a whole number"),
    ("weight_decay", float("nan"), "is not a finite number"),
    ("translate", True, "is not a finite number"),
    ("lr_schedule", "linear", "is not one of constant, plateau, cosine"),
    ("nesterov", 2, "is not one of false, true"),
    ("nesterov", 1.0, "is not one of false, true"),
    ("nesterov", "true", "is not one of false, true"),
])
def test_bounds_say_what_is_wrong(name, value, problem):
    assert problem in BOUNDS[name].problem(value)


@pytest.mark.parametrize("name, value", [("lr", 1e-9), ("dropout", 0.0), ("translate", 0.5), ("dense_units", 1),
                                         ("lr_schedule", "cosine"), ("weight_decay", 1.0)])
def test_bounds_admit_their_edges(name, value):
    assert BOUNDS[name].problem(value) is None


def test_keras_tuners_zero_and_one_are_a_boolean_hyperparameters_false_and_true():
    # A Choice of booleans comes back from Keras Tuner (and its trial records) as 0 and 1.
    assert BOUNDS["nesterov"].problem(1) is None and BOUNDS["nesterov"].problem(0) is None
    assert Hyperparameters.of({"nesterov": 1}).nesterov is True
    assert Hyperparameters.of({"nesterov": 0}).nesterov is False
