"""plan.py: a study's time, estimated from timed steps, counts every epoch and the final evaluations."""

import pytest

from conftest import REPO


def test_estimates_count_every_epoch_and_the_final_evaluations():
    from alexnet_search.config import load_config
    from alexnet_search.plan import (
        StepTiming, confirmation_rounds, estimate_finalists_seconds, estimate_retrain_seconds, estimate_seconds,
    )

    cpu = load_config(REPO / "tuning" / "cpu.toml")  # 8,000 + 2,000 images, 75 search epochs, 30 retrain
    timing = StepTiming(train_s_per_image=0.001, eval_s_per_image=0.0001)
    assert estimate_seconds(cpu, timing) == pytest.approx(75 * (8.0 + 0.2))
    # 30 epochs of training and validation, then train + val + the 10,000 test images once
    assert estimate_retrain_seconds(cpu, timing) == pytest.approx(30 * 8.2 + 2.0)
    # The finalists: 2 configurations and the paper's recipe x 1 seed x 30 epochs, validated every
    # epoch, none tested; and the leader's second and third seeds.
    assert estimate_finalists_seconds(cpu, timing) == pytest.approx((3 * 1 + 2) * 30 * 8.2)
    none = cpu.with_overrides({"confirm": {"finalists": 0}})
    assert estimate_finalists_seconds(none, timing) == 0
    # Two workers side by side (make search WORKERS=2): the search's epochs shared, at best; the
    # confirmation's 5 runs, each 30 epochs long, in 3 rounds.
    assert estimate_seconds(cpu, timing, workers=2) == pytest.approx(75 * 8.2 / 2)
    assert confirmation_rounds(cpu, 2) == 3 and confirmation_rounds(cpu) == 5
    assert estimate_finalists_seconds(cpu, timing, workers=2) == pytest.approx(3 * 30 * 8.2)
    assert estimate_finalists_seconds(none, timing, workers=2) == 0
