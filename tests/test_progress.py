"""progress.py: per-epoch lines with trial counters, elapsed time and an estimate of time left."""

import copy
import io

from alexnet_search.progress import EpochReporter, Progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_left_is_remaining_epochs_times_the_median_epoch_time():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(total_units=3, total_epochs=10, out=out, clock=clock)
    p.epochs_done = 2  # resumed: two epochs finished in an earlier run
    p.begin("trial 2/3", 0, 4, "(id 0001)")
    clock.now = 30
    p.epoch_end(0, {"loss": 2.0, "accuracy": 0.3, "val_accuracy": 0.25}, seconds=30)
    last = out.getvalue().splitlines()[-1]
    assert "[trial 2/3] epoch 1/4" in last and "acc 0.3000" in last and "val_acc 0.2500" in last
    assert "elapsed 30s" in last and "~3m 30s left" in last  # (10 - 2 - 1) epochs x 30 s
    p.end(4, "best val_accuracy 0.3")
    assert p.epochs_done == 6 and out.getvalue().splitlines()[-1].endswith("done: best val_accuracy 0.3")


def test_a_suspended_epoch_does_not_inflate_the_time_left():
    out = io.StringIO()
    p = Progress(total_units=1, total_epochs=10, out=out, clock=FakeClock())
    p.begin("trial 1/1", 0, 10)
    for epoch, seconds in enumerate([20, 1500, 20, 22]):  # the second epoch spanned a 25-minute Ctrl-Z
        p.epoch_end(epoch, {}, seconds=seconds)
    assert out.getvalue().splitlines()[-1].endswith("~2m 06s left")  # 6 epochs x the median 21 s


def test_promoted_trials_count_only_their_own_epochs():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(total_units=1, total_epochs=6, out=out, clock=clock)
    p.begin("trial 1/1", 3, 9)  # a promoted trial continues from epoch 3: 6 epochs of its own
    p.epoch_end(3, {}, seconds=10)
    assert "epoch 4/9" in out.getvalue() and "~50s left" in out.getvalue()


def test_epoch_reporter_copies_share_one_progress():
    p = Progress(total_units=1, total_epochs=1, out=io.StringIO())
    reporter = copy.deepcopy(EpochReporter(p))  # as Keras Tuner does for every trial
    assert reporter.progress is p
