"""search.py: ranking, Hyperband bookkeeping, and the tuner's crash-safe state files."""

from types import SimpleNamespace

import keras_tuner

from alexnet_search.config import load_config
from alexnet_search.search import make_tuner, ranked_trials, searched_values, trial_epochs
from alexnet_search.study import study_for

from conftest import REPO


def _trial(trial_id, score, status="COMPLETED", **values):
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return SimpleNamespace(trial_id=trial_id, score=score, status=status, hyperparameters=hp)


def test_ranking_is_best_first_with_ties_to_the_earlier_trial():
    trials = [_trial("0003", 0.5), _trial("0001", 0.5), _trial("0002", 0.7), _trial("0004", 0.9, status="FAILED")]
    oracle = SimpleNamespace(trials={t.trial_id: t for t in trials},
                             objective=keras_tuner.Objective("val_accuracy", "max"))
    assert [t.trial_id for t in ranked_trials(oracle)] == ["0002", "0001", "0003"]
    oracle.objective = keras_tuner.Objective("val_loss", "min")
    assert [t.trial_id for t in ranked_trials(oracle)] == ["0001", "0003", "0002"]


def test_hyperband_bookkeeping_is_kept_out_of_results():
    values = {"lr": 0.01, "dropout": 0.6000000000000001, "tuner/epochs": 9, "tuner/initial_epoch": 3,
              "tuner/bracket": 1, "tuner/round": 1, "tuner/trial_id": "0004"}
    assert searched_values(values) == {"lr": 0.01, "dropout": 0.6}
    assert trial_epochs(_trial("0005", 0.1, **values)) == 6


def test_tuner_state_is_keras_tuners_own_and_reloads(tmp_path):
    config = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    study.root.mkdir()
    tuner = make_tuner(config, study)
    assert isinstance(tuner, keras_tuner.Hyperband)
    trial = tuner.oracle.create_trial("tuner0")
    tuner.save()
    names = {p.name for p in (study.tuner_dir).iterdir()}
    assert {"oracle.json", "tuner0.json", f"trial_{trial.trial_id}"} <= names
    assert not [p for p in study.tuner_dir.rglob("*.tmp")]  # atomic writes leave no temporaries
    again = make_tuner(config, study)
    assert list(again.oracle.trials) == [trial.trial_id]
    assert again.oracle.hyperparameters.get("lr") == 1e-3  # the space, with the seed's defaults
