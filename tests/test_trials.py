"""trials.py: a trial's searched values without the bookkeeping, and why it failed, in one line."""

from alexnet_search.trials import failure_reason, searched_values


def test_hyperband_bookkeeping_is_kept_out_of_results():
    values = {"lr": 0.01, "dropout": 0.6000000000000001, "tuner/epochs": 9, "tuner/initial_epoch": 3,
              "tuner/bracket": 1, "tuner/round": 1, "tuner/trial_id": "0004"}
    assert searched_values(values) == {"lr": 0.01, "dropout": 0.6}


def test_a_boolean_keras_tuner_kept_as_0_or_1_is_written_back_as_a_boolean():
    # Keras Tuner stores a Choice of booleans as ints; best_hyperparameters.json and the trial lines
    # must still say false/true, and a width of 1 must stay the number it is.
    values = searched_values({"nesterov": 1, "dense_units": 1, "ema": 0, "tuner/epochs": 3})
    assert values == {"nesterov": True, "dense_units": 1, "ema": 0}
    assert type(values["nesterov"]) is bool and type(values["dense_units"]) is int and type(values["ema"]) is int
    assert type(searched_values({"nesterov": 0})["nesterov"]) is bool



def test_failure_reason_is_the_last_traceback_line_without_the_class():
    message = "Traceback (most recent call last):\n  ...\nkeras_tuner.src.errors.FailedTrialError: out of memory: OOM"
    assert failure_reason(message) == "out of memory: OOM"
    assert failure_reason("ValueError: bad") == "bad"
    assert failure_reason("") == "no reason recorded"

