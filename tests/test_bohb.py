"""bohb.py: Hyperband's draws until a budget has d + 1 finished trials, then TPE's, seeded."""

import json
import math

import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial
from keras_tuner.oracles import HyperbandOracle

from alexnet_search.bohb import BUDGET, BOHBOracle
from alexnet_search.config import load_config
from alexnet_search.study import study_for


def _oracle(cls=BOHBOracle, seed=1):
    oracle = cls(objective=keras_tuner.Objective("val_accuracy", "max"), max_epochs=9, factor=3, seed=seed)
    hp = oracle.hyperparameters
    hp.Float("lr", 1e-3, 0.3, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Int("conv3_filters", 192, 576, step=64)
    hp.Choice("dense_units", [1024, 2048, 4096])
    hp.Choice("momentum", [0.9])  # one value: not a dimension
    hp.Fixed("lr_schedule", "cosine")
    return oracle


def _finish(oracle, n, epochs=1, seed=0):
    """n completed trials at `epochs`, scored by how close their lr is to 0.03 (a decade wide peak)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        values = {"lr": float(10 ** rng.uniform(-3, math.log10(0.3))), "dropout": float(rng.integers(0, 6) / 10),
                  "conv3_filters": int(192 + 64 * rng.integers(0, 7)), "dense_units": int(rng.choice([1024, 2048, 4096])),
                  "momentum": 0.9, "lr_schedule": "cosine", "tuner/epochs": epochs}
        trial = Trial(oracle.hyperparameters.copy(), trial_id=f"{len(oracle.trials):04d}", status="COMPLETED")
        trial.hyperparameters.values = values
        trial.score = -abs(math.log10(values["lr"]) - math.log10(0.03))
        oracle.trials[trial.trial_id] = trial


def _share_near_peak(draws):
    return np.mean([0.01 <= d["lr"] <= 0.1 for d in draws])


def test_until_a_budget_has_d_plus_1_trials_the_draws_are_hyperbands():
    bohb, hyperband = _oracle(), _oracle(HyperbandOracle)
    for oracle in (bohb, hyperband):
        _finish(oracle, 4)  # 4 dimensions: 5 are needed
        _finish(oracle, 4, epochs=3, seed=1)
    assert [bohb._random_values() for _ in range(5)] == [hyperband._random_values() for _ in range(5)]


def test_with_enough_trials_the_draws_follow_the_scores_and_repeat_with_the_seed():
    bohb, hyperband = _oracle(), _oracle(HyperbandOracle)
    for oracle in (bohb, hyperband):
        _finish(oracle, 12)
    drawn, random = [bohb._random_values() for _ in range(30)], [hyperband._random_values() for _ in range(30)]
    modelled = [d for d in drawn if BUDGET in d]
    assert 10 <= len(modelled) <= 28  # about two in three: a third stay random
    assert all(d[BUDGET] == 1 for d in modelled)
    # The peak's decade is 40% of the log range: random draws land there about that often.
    assert _share_near_peak(modelled) >= _share_near_peak(random) + 0.3, (_share_near_peak(modelled), _share_near_peak(random))
    for d in modelled:  # every searched name, single-valued ones included, inside its range
        assert d["momentum"] == 0.9 and d["lr_schedule"] == "cosine" and d["conv3_filters"] in range(192, 577, 64)
        assert d["dense_units"] in (1024, 2048, 4096) and 0 <= d["dropout"] <= 0.5
    again = _oracle()
    _finish(again, 12)
    assert [again._random_values() for _ in range(30)] == drawn


def test_the_model_fits_the_largest_budget_with_enough_trials():
    bohb = _oracle()
    _finish(bohb, 12, epochs=1)
    _finish(bohb, 5, epochs=3, seed=2)
    _finish(bohb, 2, epochs=9, seed=3)  # too few at 9
    modelled = [d for d in (bohb._random_values() for _ in range(12)) if BUDGET in d]
    assert modelled and {d[BUDGET] for d in modelled} == {3}


@pytest.mark.slow
def test_a_bohb_study_draws_from_its_model_and_resumes(tmp_path, cifar_dir, tiny_config):
    """One searched dimension (2 finished trials make a model) over two Hyperband iterations."""
    import io

    from alexnet_search.cifar import Source
    from alexnet_search.search import run_search
    from alexnet_search.training import Training

    fixed = "".join(f'[space.{name}]\ntype = "choice"\nvalues = [{value}]\ndefault = {value}\n'
                    for name, value in (("dropout", 0.2), ("conv3_filters", 192), ("dense_units", 1024),
                                        ("conv5_filters", 128), ("weight_decay", 0.0005), ("label_smoothing", 0.1)))
    preset = tmp_path / "bohb.toml"
    preset.write_text(f'extends = "{tiny_config}"\n[search]\ntuner = "bohb"\nhyperband_iterations = 2\n{fixed}')
    config = load_config(preset)
    study, out = study_for(tmp_path / "results", "bohb"), io.StringIO()
    training = Training.prepare(config, Source(cifar_dir))
    run_search(config, study, training, out=out)
    trials = [json.loads(p.read_text()) for p in sorted(study.tuner_dir.glob("trial_*/trial.json"))]
    assert len(trials) == 10 and all(t["status"] == "COMPLETED" for t in trials)
    assert any(BUDGET in t["hyperparameters"]["values"] for t in trials)  # some drawn by the model
    from alexnet_search.report import write_report

    assert "BOHB (each new configuration drawn by TPE" in write_report(study).read_text()
    again = io.StringIO()
    run_search(config, study, training, out=again)  # finished: nothing runs again
    assert "resuming with 10 finished" in again.getvalue()
    assert len(list(study.tuner_dir.glob("trial_*/trial.json"))) == 10
