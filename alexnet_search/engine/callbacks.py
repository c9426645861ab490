"""The callbacks every trial of every phase trains with (`engine.tuner.StudyTuner` adds them): the
NaN and divergence guard, a worker's heartbeat, the checkpoint written once at the end, and Ctrl-C
or SIGTERM turned into a recorded interruption.
"""

from __future__ import annotations

import math
import signal
import threading

import keras
import keras_tuner

from ..trials import ENDED
from . import kt


class TrialGuard(keras.callbacks.Callback):
    """Stops a trial whose training loss is no longer finite, or has diverged, and says why.

    Checked per epoch (a per-batch check would force a device sync every step). With Keras'
    probability clipping the cross-entropy of 10 classes tops out near 16; a model at chance
    scores ln 10 = 2.3, so an epoch mean above 3 x ln 10 means confidently wrong: diverged.
    One instance serves every trial (Keras Tuner deep-copies search callbacks per trial).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.limit = 3 * math.log(num_classes)
        self.reason: str | None = None

    def __deepcopy__(self, memo):
        return self

    def on_train_begin(self, logs=None):
        self.reason = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (not math.isfinite(loss) or loss > self.limit):
            kind = "became non-finite" if not math.isfinite(loss) else f"diverged (above {self.limit:.1f})"
            self.reason = f"training loss {kind}: {loss:.4g} at epoch {epoch + 1}"
            self.model.stop_training = True


class Heartbeat(keras.callbacks.Callback):
    """A worker's word to its chief while it trains a trial (`StudyOracle.expire_leases`).

    Sent every `interval` s from a thread, so a long epoch or compile does not silence it and a
    call blocked by a partition holds up nothing else; but only when a batch ended since the last
    (the first beat aside: the first batch compiles), so a worker hung mid-trial loses its lease
    as a dead one does. When the chief answers that the trial has ended (its lease had expired and
    another worker finished it first), the trial stops at its next batch rather than go on writing
    over the recorded run's checkpoint. A no-op where it was never started (one process, a chief).
    One instance serves every trial (Keras Tuner deep-copies search callbacks per trial).
    """

    def __init__(self):
        super().__init__()
        self.batches, self.superseded, self._stop = 0, False, None

    def __deepcopy__(self, memo):
        return self

    def start(self, oracle, trial_id: str, interval: float) -> None:
        self.stop()
        self.batches, self.superseded = 0, False
        stop = self._stop = threading.Event()

        def beat():
            said = -1
            while not stop.wait(interval):
                if self.batches == said:
                    continue  # no progress since the last beat: say nothing
                said = self.batches
                try:
                    self.superseded = oracle.get_trial(trial_id).status in ENDED
                except Exception:  # the chief is gone or unreachable: the trial's own calls will say so
                    pass

        threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}").start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self.superseded = False

    def on_train_batch_end(self, batch, logs=None):
        self._step()

    def on_test_batch_end(self, batch, logs=None):
        self._step()

    def _step(self) -> None:
        self.batches += 1
        if self.superseded:
            raise keras_tuner.errors.FailedTrialError(
                "another worker finished this trial first (this worker's lease on it had expired); stopped")


class BestEpochAtEnd(kt.SaveBestEpoch):
    """Keras Tuner's checkpoint of a trial's best epoch, written once when training ends.

    Keras Tuner writes it at every epoch that improves the objective: at paper.toml's size a 99 MB
    h5 file, 0.2-0.4 s a write on 2 cores against 0.05-0.13 s to copy the weights to memory. Only
    the best epoch's is ever read (by a promoted trial, by the study's best model), and a trial cut
    off mid-way runs again from its start, so a copy in memory is all the epochs between need. The
    last epoch, when it is the best, is written straight from the model: a 1-epoch trial costs
    what it did.
    """

    def on_train_begin(self, logs=None):
        self._best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if self.objective.has_value(logs):
            current = self.objective.get_value(logs)
            if not self.objective.better_than(current, self.best_value):
                return
            self.best_value = current
        # Keras Tuner keeps every epoch when fit does not report the objective: so do we.
        if epoch + 1 == self.params.get("epochs"):
            self._best_weights = None
            self._save_model()
        else:
            self._best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        # Also when the NaN guard stopped training early; after the last callback (Keras Tuner
        # appends this one last), and the model is discarded after fit, so it keeps these weights.
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            self._best_weights = None
            self._save_model()


class LastEpochAtEnd(BestEpochAtEnd):
    """The last epoch's weights, whatever the objective says: a run with no held-out images to
    choose an epoch by (a retrain on train+val) keeps where its schedule ended."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.params.get("epochs"):
            self._save_model()


def checkpoint_at_end(cls: type = BestEpochAtEnd):
    """Within it, Keras Tuner's trials write their checkpoint with `cls` (`BestEpochAtEnd`)."""
    return kt.checkpoint_callback(cls)


class CtrlC(keras.callbacks.Callback):
    """Ctrl-C, or SIGTERM (`kill`, `timeout`, a batch scheduler's preemption), raised where nothing
    swallows it, so the running trial is recorded as interrupted, not as a process that died.

    Python raises KeyboardInterrupt wherever the main thread is; inside TensorFlow that can be a
    finalizer, which ignores it, and the search then runs on. The first signal only sets a flag
    that the next batch, epoch or trial start turns into KeyboardInterrupt; a second one raises
    at once. Deep-copied per trial by Keras Tuner, so the flag lives on the class.
    """

    requested = False
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    @classmethod
    def install(cls) -> dict:
        """Route SIGINT and SIGTERM here; returns the handlers to put back."""
        cls.requested = False

        def handler(signum, frame):
            cls.requested = True
            signal.signal(signum, signal.default_int_handler)  # a second one: at once

        return {sig: signal.signal(sig, handler) for sig in cls.SIGNALS}

    @classmethod
    def check(cls):
        if cls.requested:
            cls.requested = False
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_epoch_end(self, epoch, logs=None):
        self.check()

