"""schedule.py: the Hyperband schedule equals what Keras Tuner's oracle really runs."""

import random

import pytest
from keras_tuner.oracles import HyperbandOracle

from alexnet_search.schedule import format_schedule, hyperband_schedule


@pytest.mark.parametrize("max_epochs, trials, configs, epochs", [
    (10, 30, 22, 120), (20, 30, 22, 226), (30, 90, 62, 576), (81, 211, 143, 1767), (27, 70, 49, 375), (9, 23, 17, 75),
])
def test_schedule_totals(max_epochs, trials, configs, epochs):
    s = hyperband_schedule(max_epochs, 3)
    assert (s.trials, s.new_configs, s.epochs) == (trials, configs, epochs)
    assert hyperband_schedule(max_epochs, 3, iterations=2).epochs == 2 * epochs


@pytest.mark.parametrize("max_epochs, factor, iterations", [(9, 3, 1), (2, 2, 2), (27, 3, 1), (12, 4, 1), (27, 9, 1)])
def test_schedule_matches_a_simulated_oracle(tmp_path, max_epochs, factor, iterations):
    """Drive Keras Tuner's own oracle to the end, every trial completing with a random score."""
    import keras_tuner

    oracle = HyperbandOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_epochs=max_epochs,
                             factor=factor, hyperband_iterations=iterations, seed=1)
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0, 1)
    oracle.update_space(hp)
    keras_tuner.Tuner(oracle=oracle, hypermodel=lambda hp: None, directory=str(tmp_path), project_name="sim")
    rng = random.Random(0)
    trials = epochs = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        values = trial.hyperparameters.values
        trials += 1
        epochs += values["tuner/epochs"] - values["tuner/initial_epoch"]
        oracle.update_trial(trial.trial_id, {"val_accuracy": rng.random()})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    schedule = hyperband_schedule(max_epochs, factor, iterations)
    assert (trials, epochs) == (schedule.trials, schedule.epochs)


def test_format_schedule():
    text = format_schedule(hyperband_schedule(9, 3))
    assert "23 trials (17 new configurations" in text and "75 epochs" in text


def test_random_and_bayesian_studies_are_one_round_of_full_length_trials():
    from alexnet_search.schedule import search_schedule

    s = search_schedule({"tuner": "random", "max_trials": 8, "max_epochs": 9, "factor": 3, "hyperband_iterations": 1})
    assert (s.trials, s.new_configs, s.epochs, s.brackets) == (8, 8, 72, 1)
    assert format_schedule(s) == "8 trials of 9 epochs each, from scratch: 72 epochs"
    h = search_schedule({"tuner": "hyperband", "max_epochs": 9, "factor": 3, "hyperband_iterations": 1})
    assert (h.trials, h.epochs) == (23, 75)
