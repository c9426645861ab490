"""plan.py: a study's time, estimated from timed steps, counts every epoch and the final evaluations."""

import pytest

from conftest import REPO


def test_estimates_count_every_epoch_and_the_final_evaluations():
    from alexnet_search.config import load_config
    from alexnet_search.plan import (
        StepTiming, confirmation_rounds, estimate_finalists_seconds, estimate_retrain_seconds, estimate_seconds,
    )
    from alexnet_search.schedule import search_schedule

    # A preset of its own, so the arithmetic follows the formula and not today's cpu.toml: 800 + 200
    # images, a 2-bracket Hyperband, 10 retrain epochs, 2 finalists and 1 baseline on 2 seeds each
    # at 4 epochs, the leader raced to 3.
    config = load_config(REPO / "tuning" / "cpu.toml").with_overrides({
        "data": {"train_size": 800, "val_size": 200}, "search": {"max_epochs": 2, "factor": 2},
        "retrain": {"epochs": 10, "train_on": "train"},
        "confirm": {"finalists": 2, "seeds": 2, "leader_seeds": 3, "baselines": ["paper"], "epochs": 4}})
    epochs = search_schedule(config["search"]).epochs
    timing = StepTiming(train_s_per_image=0.001, eval_s_per_image=0.0001)
    epoch_s = 0.8 + 0.02  # 800 images trained, 200 validated
    assert estimate_seconds(config, timing) == pytest.approx(epochs * epoch_s)
    # 10 epochs of training and validation, then train + val + the 10,000 test images once
    assert estimate_retrain_seconds(config, timing) == pytest.approx(10 * epoch_s + (1000 + 10_000) * 0.0001)
    # On train+val: 10 epochs of training on all 1,000 images, none validated, then the same evaluations
    both = config.with_overrides({"retrain": {"train_on": "train+val"}})
    assert estimate_retrain_seconds(both, timing) == pytest.approx(10 * 1.0 + (1000 + 10_000) * 0.0001)
    # The confirmation: (2 finalists + 1 baseline) x 2 seeds, then the leader's third, each 4
    # epochs ([confirm] epochs, not the retrain's) validated every epoch, none tested.
    runs = 3 * 2 + 1
    assert estimate_finalists_seconds(config, timing) == pytest.approx(runs * 4 * epoch_s)
    none = config.with_overrides({"confirm": {"finalists": 0}})
    assert estimate_finalists_seconds(none, timing) == 0
    # Two workers side by side: the search's epochs shared, at best; the confirmation's runs, each
    # as long as the others, in rounds of two.
    assert estimate_seconds(config, timing, workers=2) == pytest.approx(epochs * epoch_s / 2)
    assert confirmation_rounds(config, 2) == 4 and confirmation_rounds(config) == runs
    assert estimate_finalists_seconds(config, timing, workers=2) == pytest.approx(4 * 4 * epoch_s)
    assert estimate_finalists_seconds(none, timing, workers=2) == 0
