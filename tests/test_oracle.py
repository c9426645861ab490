"""engine/oracle.py: the study oracle's rules, each against what Keras Tuner's own oracle does:
crash-safe files, failures in a row, leases, a restarted chief, and calls from the port."""

import json

import keras_tuner
import pytest

from alexnet_search.config import load_config
from alexnet_search.search import make_tuner

from conftest import REPO, disk_full_at, fresh_tuner


def test_a_state_write_that_fails_leaves_keras_tuners_files_whole(tmp_path, monkeypatch):
    """The disk fills up as the oracle saves: oracle.json keeps its previous content, whole, and the
    tuner reloads from it."""
    _, study, tuner = fresh_tuner(tmp_path, "s")
    tuner.save()
    before = (study.tuner_dir / "oracle.json").read_text()
    with disk_full_at(monkeypatch, lambda path: path.suffix == ".json"), pytest.raises(OSError, match="No space"):
        tuner.oracle.create_trial("tuner0")  # writes trial.json, then oracle.json
    assert (study.tuner_dir / "oracle.json").read_text() == before and json.loads(before)
    assert not [p for p in study.tuner_dir.rglob(".*") if p.is_file()]  # no temporary file left behind
    again = make_tuner(load_config(REPO / "tuning" / "cpu.toml"), study)
    assert list(again.oracle.trials) == []  # the trial never reached a state file: it was never handed out


def test_reload_repairs_a_kill_between_keras_tuners_two_writes(tmp_path):
    """trial.json says finished while oracle.json still has it running; and a trial.json the
    oracle never recorded. Keras Tuner alone would re-run the first and keep the second forever."""
    config, study, tuner = fresh_tuner(tmp_path, "s")
    tuner.save()  # as run_search does: the study is reloadable from its start
    oracle = tuner.oracle
    oracle.verbose = 0
    trial = oracle.create_trial("tuner0")  # oracle.json now lists it as running
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.3})
    trial.status = "COMPLETED"
    oracle.score_trial(oracle.trials[trial.trial_id])
    oracle.trials[trial.trial_id].status = "COMPLETED"
    oracle._save_trial(oracle.trials[trial.trial_id])  # ... and the process dies here
    phantom = study.tuner_dir / "trial_0001"
    phantom.mkdir()
    state = json.loads((study.tuner_dir / f"trial_{trial.trial_id}" / "trial.json").read_text())
    state.update(trial_id="0001", status="RUNNING", score=None)
    (phantom / "trial.json").write_text(json.dumps(state))

    reloaded = make_tuner(config, study).oracle
    assert list(reloaded.trials) == [trial.trial_id]
    assert reloaded.trials[trial.trial_id].status == "COMPLETED"
    assert reloaded.end_order == [trial.trial_id]
    following = reloaded.create_trial("tuner0")  # not the finished trial handed out again
    assert following.trial_id == "0001" and following.status == "RUNNING"


def _end(oracle, tuner_id: str, status: str, message: str | None = None):
    trial = oracle.create_trial(tuner_id)
    if status == "COMPLETED":
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.3})
    trial.status, trial.message = status, message
    oracle.end_trial(trial)
    return trial


def test_failures_in_a_row_stop_every_tuner_and_count_only_the_latest_run(tmp_path):
    """Keras Tuner raised inside end_trial (on a chief: a gRPC handler that never released the
    oracle's lock) and counted old runs too: a resumed study stopped again at a completed trial."""
    config, study, tuner = fresh_tuner(tmp_path, "s")
    limit = config["search"]["max_consecutive_failed_trials"]
    oracle = tuner.oracle
    oracle.verbose = 0
    tuner.save()
    _end(oracle, "w1", "COMPLETED")
    for i in range(limit):
        assert oracle.stopped is None
        last = _end(oracle, f"w{i % 2}", "FAILED", f"Traceback ...\nFailedTrialError: loss {i} was nan")
    assert oracle.stopped.endswith("loss 2 was nan") and oracle.trials[last.trial_id].status == "FAILED"
    for tuner_id in ("w0", "w1", "a-new-one"):
        assert oracle.create_trial(tuner_id).status == "STOPPED"
    assert oracle.tuner_ids == set() and oracle.ongoing_trials == {}  # a chief waits for no one
    # Rerun: the study resumes, and the failures before it do not stop it at its next completed trial.
    resumed = make_tuner(config, study).oracle
    resumed.verbose = 0
    assert resumed.stopped is None and [t.status for t in resumed.trials.values()].count("FAILED") == limit
    _end(resumed, "w0", "COMPLETED")
    assert resumed.stopped is None and resumed.create_trial("w0").status == "RUNNING"


def test_a_silent_workers_trial_goes_to_the_next_worker_and_the_chief_stops_waiting_for_it(tmp_path, monkeypatch):
    """Keras Tuner's oracle waits forever for every worker id it has seen: a host lost for good
    kept a distributed study from ending."""
    from alexnet_search.engine import oracle as oracle_module

    now = [1000.0]
    monkeypatch.setattr(oracle_module.time, "monotonic", lambda: now[0])
    _, study, tuner = fresh_tuner(tmp_path, "s")
    oracle = tuner.oracle
    oracle.verbose, oracle.lease_s = 0, 60
    tuner.save()
    lost = oracle.create_trial("tuner1")
    kept = oracle.create_trial("tuner2")
    now[0] += 50
    oracle.get_trial(kept.trial_id)  # tuner2's heartbeat
    assert oracle.expire_leases() == []
    now[0] += 20  # tuner1 silent for 70 s, tuner2 for 20
    assert oracle.expire_leases() == [("tuner1", lost.trial_id)]
    assert "tuner1" not in oracle.tuner_ids and "tuner1" not in oracle.ongoing_trials
    handed = oracle.create_trial("tuner3")
    assert handed.trial_id == lost.trial_id and oracle.ongoing_trials["tuner3"] is handed
    # tuner1 was only cut off, and reports the trial first: its result counts, the second run's not.
    report = keras_tuner.engine.trial.Trial(lost.hyperparameters.copy(), trial_id=lost.trial_id, status="COMPLETED")
    oracle.update_trial(lost.trial_id, {"val_accuracy": 0.4})
    oracle.end_trial(report)
    late = keras_tuner.engine.trial.Trial(lost.hyperparameters.copy(), trial_id=lost.trial_id, status="COMPLETED")
    oracle.update_trial(lost.trial_id, {"val_accuracy": 0.9})
    oracle.end_trial(late)
    assert oracle.end_order.count(lost.trial_id) == 1 and oracle.trials[lost.trial_id].score == 0.4
    assert "tuner3" not in oracle.ongoing_trials
    # A worker that vanished between trials is not waited for either; a chief without leases waits.
    now[0] += 61
    assert sorted(oracle.expire_leases()) == [("tuner2", kept.trial_id), ("tuner3", None)]
    assert oracle.tuner_ids == set() and oracle.ongoing_trials == {}
    # tuner2 was only slow: it ends its trial before anyone took it again, and nobody runs it twice.
    oracle.update_trial(kept.trial_id, {"val_accuracy": 0.5})
    oracle.end_trial(keras_tuner.engine.trial.Trial(kept.hyperparameters.copy(), trial_id=kept.trial_id,
                                                    status="COMPLETED"))
    assert oracle.trials[kept.trial_id].status == "COMPLETED" and oracle.create_trial("tuner2").trial_id not in (
        kept.trial_id, lost.trial_id)
    oracle.lease_s = None
    oracle.create_trial("tuner4")
    now[0] += 10**6
    assert oracle.expire_leases() == []


def test_what_a_caller_on_the_port_sends_fails_that_call_and_never_the_oracle(tmp_path, monkeypatch):
    """Keras Tuner's oracle raised inside its lock on an unknown trial id and never released it:
    the chief hung. And an EndTrial could rewrite a trial's values."""
    import threading

    _, _, tuner = fresh_tuner(tmp_path, "s")
    oracle = tuner.oracle
    oracle.verbose = 0
    running = oracle.create_trial("tuner1")
    values = dict(running.hyperparameters.values)
    assert oracle.update_trial("no-such-trial", {"val_accuracy": 1.0}) is None
    assert oracle.update_trial(running.trial_id, {"not_the_objective": 1.0}) is None
    forged = keras_tuner.engine.trial.Trial(running.hyperparameters.copy(), trial_id="no-such-trial", status="COMPLETED")
    oracle.end_trial(forged)
    not_an_end = keras_tuner.engine.trial.Trial(running.hyperparameters.copy(), trial_id=running.trial_id,
                                                status="RUNNING")
    oracle.end_trial(not_an_end)
    unscored = keras_tuner.engine.trial.Trial(running.hyperparameters.copy(), trial_id=running.trial_id,
                                              status="COMPLETED")  # no update_trial before: Keras Tuner raised
    oracle.end_trial(unscored)
    assert oracle.end_order == [] and "no-such-trial" not in oracle.trials
    assert oracle.trials[running.trial_id].status == "RUNNING"

    def another_worker_is_served(tuner_id):
        other = threading.Thread(target=oracle.create_trial, args=(tuner_id,))
        other.start()
        other.join(timeout=10)
        return not other.is_alive() and tuner_id in oracle.ongoing_trials

    assert another_worker_is_served("tuner2")  # the lock is free
    # A call that raises all the same (the disk fills up as the oracle saves) releases it too.
    with disk_full_at(monkeypatch, lambda path: path.suffix == ".json"), pytest.raises(OSError, match="No space"):
        oracle.create_trial("tuner3")
    assert another_worker_is_served("tuner4")
    oracle.update_trial(running.trial_id, {"val_accuracy": 0.5})
    rewritten = running.hyperparameters.copy()
    rewritten.values["lr"] = 123.0
    oracle.end_trial(keras_tuner.engine.trial.Trial(rewritten, trial_id=running.trial_id, status="COMPLETED"))
    assert oracle.trials[running.trial_id].status == "COMPLETED"
    assert oracle.trials[running.trial_id].hyperparameters.values == values


def test_a_restarted_chief_hands_running_trials_back_to_their_workers(tmp_path, monkeypatch):
    """Keras Tuner sends them for retry: each ran twice while its worker, still alive, trained it.
    A single process resumes its interrupted trial as before."""
    from alexnet_search import cluster

    def killed_while_running(name: str, tuner_id: str):
        config, study, tuner = fresh_tuner(tmp_path, name)
        tuner.oracle.verbose = 0
        tuner.save()  # as run_search does: the study is reloadable from its start
        return config, study, tuner.oracle.create_trial(tuner_id)  # ... and the process dies

    config, study, running = killed_while_running("single", "tuner0")
    single = make_tuner(config, study).oracle
    assert single.ongoing_trials == {} and single.create_trial("tuner0").trial_id == running.trial_id  # run again
    for var, value in ((cluster.TUNER_ID, "chief"), (cluster.ORACLE_IP, "127.0.0.1"),
                       (cluster.ORACLE_PORT, "8000")):
        monkeypatch.setenv(var, value)
    config, study, running = killed_while_running("chief", "tuner1")
    chief = make_tuner(config, study).oracle
    assert chief.ongoing_trials["tuner1"].trial_id == running.trial_id
    assert chief.create_trial("tuner2").trial_id != running.trial_id
    assert chief.create_trial("tuner1").trial_id == running.trial_id  # its worker, asking again


def test_a_call_on_the_port_cannot_grow_the_studys_space(tmp_path):
    """Keras Tuner's UpdateSpace adds any hyperparameter it is sent, for good: one call would have
    changed the study's space, and retrain-best refused the study from then on."""
    _, study, tuner = fresh_tuner(tmp_path, "s")
    oracle = tuner.oracle
    before = [hp.name for hp in oracle.hyperparameters.space]
    oracle.update_space(oracle.hyperparameters.copy())  # a worker declaring the same space: fine
    foreign = keras_tuner.HyperParameters()
    foreign.Float("planted", 0.0, 1.0)
    with pytest.raises(ValueError, match="not in this study's space"):
        oracle.update_space(foreign)
    assert [hp.name for hp in oracle.hyperparameters.space] == before
    oracle.verbose = 0
    assert oracle.create_trial("tuner0").status == "RUNNING"  # the refused call left the oracle unlocked


def test_a_worker_told_nothing_is_left_waits_while_another_trial_may_still_come_back(tmp_path, monkeypatch):
    """Random search at max_trials (and the retrains' planned runs) answered STOPPED as soon as
    every trial was handed out: the asking worker left, and when the other's lease then lapsed the
    chief ended with that trial in its retry queue, the study marked finished without it."""
    from alexnet_search import cluster
    from alexnet_search.engine import oracle as oracle_module
    from alexnet_search.study import study_for

    for var, value in ((cluster.TUNER_ID, "chief"), (cluster.ORACLE_IP, "127.0.0.1"), (cluster.ORACLE_PORT, "8000")):
        monkeypatch.setenv(var, value)
    now = [1000.0]
    monkeypatch.setattr(oracle_module.time, "monotonic", lambda: now[0])
    config = load_config(REPO / "tuning" / "cpu-random.toml").with_overrides({"search": {"max_trials": 2}})
    study = study_for(tmp_path, "r")
    study.root.mkdir()
    oracle = make_tuner(config, study).oracle
    oracle.verbose, oracle.lease_s = 0, 60
    first, second = oracle.create_trial("tuner1"), oracle.create_trial("tuner2")
    oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
    first.status = "COMPLETED"
    oracle.end_trial(first)
    assert oracle.create_trial("tuner1").status == "IDLE"  # tuner2's trial may still need a worker
    now[0] += 30
    assert oracle.create_trial("tuner1").status == "IDLE"  # it asks again (every second, in a study)
    now[0] += 31
    assert oracle.expire_leases() == [("tuner2", second.trial_id)]
    assert oracle.create_trial("tuner1").trial_id == second.trial_id  # taken over, not lost
    oracle.update_trial(second.trial_id, {"val_accuracy": 0.6})
    second.status = "COMPLETED"
    oracle.end_trial(second)
    assert oracle.create_trial("tuner1").status == "STOPPED"


def test_a_chief_that_cannot_record_a_trials_end_stops_instead_of_handing_the_trial_back(tmp_path, monkeypatch):
    """A full disk on the chief failed each worker's report of its trial's end: the trial went back
    to its worker, was trained again, its end failed again, and its lease never lapsed."""
    import threading

    from alexnet_search import cluster
    from alexnet_search.engine import kt
    from alexnet_search.errors import DiskFull

    from conftest import free_port

    for var, value in ((cluster.TUNER_ID, "chief"), (cluster.ORACLE_IP, "127.0.0.1"),
                       (cluster.ORACLE_PORT, str(free_port()))):
        monkeypatch.setenv(var, value)
    _, study, tuner = fresh_tuner(tmp_path, "s")
    oracle = tuner.oracle
    oracle.verbose = 0
    running = oracle.create_trial("tuner1")
    oracle.update_trial(running.trial_id, {"val_accuracy": 0.5})
    reported = keras_tuner.engine.trial.Trial(running.hyperparameters.copy(), trial_id=running.trial_id,
                                              status="COMPLETED")  # as a worker's end arrives over gRPC
    with disk_full_at(monkeypatch, lambda path: path.suffix == ".json"), pytest.raises(OSError, match="No space"):
        oracle.end_trial(reported)
    stopped = []

    def serve():
        try:
            kt.serve_oracle(oracle)
        except DiskFull as exc:
            stopped.append(str(exc))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    server.join(timeout=20)
    assert stopped and stopped[0].startswith("no space left on the disk holding")
