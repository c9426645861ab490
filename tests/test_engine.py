"""engine/: the callbacks every trial trains with, and the Keras Tuner internals they stand on (kt.py)."""

import json
from types import SimpleNamespace

import keras
import keras_tuner
import numpy as np
import pytest

from alexnet_search.engine import kt
from alexnet_search.engine.callbacks import BestEpochAtEnd, Heartbeat, LastEpochAtEnd


def test_a_workers_heartbeat_needs_progress_and_stops_a_trial_another_worker_finished():
    """A thread beats even when training hangs: only progress may keep a lease (docs/reliability.md)."""
    import time

    asked, status = [], ["RUNNING"]

    class Chief:
        def get_trial(self, trial_id):
            asked.append(trial_id)
            return SimpleNamespace(status=status[0])

    beat = Heartbeat()
    beat.start(Chief(), "0007", interval=0.05)
    time.sleep(0.3)
    assert asked == ["0007"]  # the first beat (the first batch compiles), then silence: no batch ended
    beat.on_train_batch_end(0)
    time.sleep(0.3)
    assert asked == ["0007", "0007"]
    status[0] = "COMPLETED"  # its lease had expired, and another worker finished it first
    beat.on_test_batch_end(0)
    time.sleep(0.3)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="another worker finished this trial first"):
        beat.on_train_batch_end(1)
    beat.stop()
    time.sleep(0.2)
    calls = len(asked)
    beat.on_train_batch_end(2)
    time.sleep(0.2)
    assert len(asked) == calls  # stopped with its trial


@pytest.mark.parametrize("scores, best", [
    ((0.5, 0.7, 0.6), 2.0),  # a middle epoch was best
    ((0.5, 0.6, 0.7), 3.0),  # the last epoch was best
    ((0.5, float("nan"), 0.4), 1.0),  # a NaN epoch is never the best
])
def test_a_trials_checkpoint_holds_its_best_epochs_weights_once_it_ends(tmp_path, scores, best):
    """Only the best epoch's checkpoint is ever read (a promoted trial, best/), and a trial cut off
    mid-way runs again from its start."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "checkpoint.weights.h5"
    saved = BestEpochAtEnd(keras_tuner.Objective("val_accuracy", "max"), str(path))
    saved.set_model(model)
    saved.set_params({"epochs": len(scores)})
    saved.on_train_begin()
    for epoch, score in enumerate(scores):
        model.set_weights([np.full(w.shape, epoch + 1.0) for w in model.get_weights()])
        saved.on_epoch_end(epoch, {"val_accuracy": score})
    saved.on_train_end()
    assert all((w == best).all() for w in model.get_weights())  # the model keeps them too
    model.set_weights([np.zeros(w.shape) for w in model.get_weights()])
    model.load_weights(path)
    assert all((w == best).all() for w in model.get_weights())


def test_a_run_with_nothing_held_out_keeps_its_last_epoch_whatever_scored_best(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "checkpoint.weights.h5"
    saved = LastEpochAtEnd(keras_tuner.Objective("accuracy", "max"), str(path))
    saved.set_model(model)
    saved.set_params({"epochs": 3})
    saved.on_train_begin()
    for epoch, score in enumerate([0.2, 0.9, 0.5]):
        model.set_weights([np.full(w.shape, epoch + 1.0) for w in model.get_weights()])
        saved.on_epoch_end(epoch, {"accuracy": score})
    saved.on_train_end()
    model.set_weights([np.zeros(w.shape) for w in model.get_weights()])
    model.load_weights(path)
    assert all((w == 3.0).all() for w in model.get_weights())


def test_keras_tuners_trials_checkpoint_with_the_callback_the_engine_names():
    """kt.checkpoint_callback swaps the class Keras Tuner's run_trial makes by name; an upgrade
    that renames it must fail here, not silently write a checkpoint at every epoch."""
    from keras_tuner.src.engine import tuner_utils

    assert kt.SaveBestEpoch is tuner_utils.SaveBestEpoch
    with kt.checkpoint_callback(BestEpochAtEnd):
        assert tuner_utils.SaveBestEpoch is BestEpochAtEnd
    assert tuner_utils.SaveBestEpoch is kt.SaveBestEpoch


def test_a_locked_oracle_call_that_raises_releases_keras_tuners_lock():
    class Oracle(keras_tuner.Oracle):
        @kt.locked
        def fails(self):
            raise OSError("disk full")

        @kt.locked
        def works(self):
            return "ok"

    oracle = Oracle(objective="val_accuracy", max_trials=1)
    with pytest.raises(OSError):
        oracle.fails()
    assert oracle.works() == "ok"  # a second call would wait for good on a lock never released


def test_a_parent_trial_id_the_oracle_sends_must_be_one_keras_tuner_makes(tmp_path):
    """Hyperband loads a promoted trial's weights from its parent's folder, named by `tuner/trial_id`."""
    from alexnet_search.errors import UserError

    from conftest import fresh_tuner

    _, study, tuner = fresh_tuner(tmp_path, "s")
    hp = tuner.oracle.hyperparameters.copy()
    hp.values.update({"tuner/trial_id": "../../elsewhere", "tuner/epochs": 2, "tuner/initial_epoch": 1})
    with pytest.raises(UserError, match="parent trial id '../../elsewhere'"):
        tuner.on_trial_begin(keras_tuner.engine.trial.Trial(hp, trial_id="0001", status="RUNNING"))


def test_every_trial_the_oracle_hands_out_carries_the_study_id_and_one_without_is_refused(tmp_path):
    from alexnet_search.errors import UserError
    from alexnet_search.study import STUDY_ID

    from conftest import fresh_tuner

    _, study, tuner = fresh_tuner(tmp_path, "s")
    oracle = tuner.oracle
    assert oracle.study_id == study.read_id() is not None
    trial = oracle.create_trial("tuner0")
    assert trial.hyperparameters.values[STUDY_ID] == study.read_id()
    on_disk = json.loads((study.tuner_dir / f"trial_{trial.trial_id}" / "trial.json").read_text())
    assert on_disk["hyperparameters"]["values"][STUDY_ID] == study.read_id()
    # A trial handed out before studies had ids, then retried: stamped on its way out again.
    del trial.hyperparameters.values[STUDY_ID]
    oracle.ongoing_trials.pop("tuner0")
    oracle._retry_queue.append(trial.trial_id)
    again = oracle.create_trial("tuner1")
    assert again.trial_id == trial.trial_id and again.hyperparameters.values[STUDY_ID] == study.read_id()
    tuner.on_trial_begin(again)  # its own study's: accepted
    other = again.hyperparameters.copy()
    other.values[STUDY_ID] = "f" * 16
    with pytest.raises(UserError, match="of another study"):
        tuner.on_trial_begin(keras_tuner.engine.trial.Trial(other, trial_id="0009", status="RUNNING"))
    assert not (study.tensorboard_dir / "trial_0009").exists()
