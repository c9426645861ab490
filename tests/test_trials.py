"""trials.py: a trial's searched values without the bookkeeping, and why it failed, in one line."""

from alexnet_search.trials import failure_reason, searched_values


def test_hyperband_bookkeeping_is_kept_out_of_results():
    values = {"lr": 0.01, "dropout": 0.6000000000000001, "tuner/epochs": 9, "tuner/initial_epoch": 3,
              "tuner/bracket": 1, "tuner/round": 1, "tuner/trial_id": "0004"}
    assert searched_values(values) == {"lr": 0.01, "dropout": 0.6}



def test_failure_reason_is_the_last_traceback_line_without_the_class():
    message = "Traceback (most recent call last):\n  ...\nkeras_tuner.src.errors.FailedTrialError: out of memory: OOM"
    assert failure_reason(message) == "out of memory: OOM"
    assert failure_reason("ValueError: bad") == "bad"
    assert failure_reason("") == "no reason recorded"

