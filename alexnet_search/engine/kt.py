"""Every use of Keras Tuner's private API, in one module.

Read from Keras Tuner 1.4.7 and 1.4.8 (`keras_tuner/src/`: `engine/oracle.py`, `engine/tuner_utils.py`,
`config.py`, `distribute/oracle_chief.py`, `protos/`). Keras Tuner is in maintenance mode and
offers no public hook for any of this; when it moves, this module moves with it, and
tests/test_engine.py fails first. The package's oracles and tuners also override a few of Keras
Tuner's underscored methods (`engine/oracle.py`, `engine/tuner.py` name them where they do).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time

from keras_tuner.src import config as kt_config
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from keras_tuner.src.engine import oracle as kt_oracle
from keras_tuner.src.engine import tuner_utils

from ..cluster import ORACLE_IP, ORACLE_PORT, SERVER_OPTIONS, WORKER_CHANNEL_OPTIONS
from ..errors import DiskFull, disk_full_message

# The checkpoint callback Keras Tuner's `Tuner.run_trial` adds to every trial's fit.
SaveBestEpoch = tuner_utils.SaveBestEpoch


@contextlib.contextmanager
def checkpoint_callback(cls: type):
    """For the call, Keras Tuner's `Tuner.run_trial` makes `cls` where it makes its SaveBestEpoch
    (it looks the name up in `tuner_utils` at each trial), rather than a copy of its run_trial here."""
    made = tuner_utils.SaveBestEpoch
    tuner_utils.SaveBestEpoch = cls
    try:
        yield
    finally:
        tuner_utils.SaveBestEpoch = made


def quiet_failed_trials() -> None:
    """Keep Keras Tuner from printing each failed trial's traceback (the trial's own line says why,
    and trial.json keeps the traceback): its module-level DEBUG flag, read in
    BaseTuner._try_run_and_update_trial."""
    kt_config.DEBUG = False


def locked(method):
    """Keras Tuner's `synchronized` (the same lock, so its own methods still exclude these), with
    the lock released however the call ends. Its decorator releases it only on return: a call
    that raised (a disk full as the oracle saves, a report it cannot score) left the oracle
    locked, and every later call of every worker, and the chief, waited on it for good."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        name = threading.current_thread().name
        if kt_oracle.THREADS[self] == name:  # this thread holds it already: a nested call
            return method(self, *args, **kwargs)
        with kt_oracle.LOCKS[self]:
            kt_oracle.THREADS[self] = name
            try:
                return method(self, *args, **kwargs)
            finally:
                kt_oracle.THREADS[self] = None

    return wrapped


def serve_oracle(oracle) -> None:
    """Be Keras Tuner's chief for `oracle` (its `oracle_chief.start_server`) on
    KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT until every trial is done, then close the port.

    Keras Tuner's own leaves its server to the garbage collector when it returns; a worker that
    connected in that moment would wait on an oracle going away, for Keras Tuner's 60-minute client
    timeout. The servicer and the stop condition are Keras Tuner's; every second, the oracle's
    leases are checked (`StudyOracle.expire_leases`).
    """
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=SERVER_OPTIONS)
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            if oracle.disk_filled is not None:  # no trial's end can be recorded: stop, rerun once freed
                raise DiskFull(disk_full_message(oracle.disk_filled, os.path.dirname(oracle._get_oracle_fname())))
            time.sleep(1)
            for tuner_id, trial_id in oracle.expire_leases():
                print(f"no word from worker {tuner_id} for {oracle.lease_s:g} s ([distributed] lease_s): "
                      + (f"its trial {trial_id} goes to the next worker that asks; " if trial_id else "")
                      + "no longer waiting for it", flush=True)
    finally:
        server.stop(grace=None).wait()


def worker_stub():
    """Keras Tuner's Oracle stub for a worker (what its OracleClient builds), on a channel that
    notices a dead connection (`cluster.WORKER_CHANNEL_OPTIONS`): to the chief at
    KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT as they are now."""
    import grpc

    channel = grpc.insecure_channel(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}",
                                    options=WORKER_CHANNEL_OPTIONS)
    return protos.get_service_grpc().OracleStub(channel)
