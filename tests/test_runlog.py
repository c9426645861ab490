"""runlog.py: each trial's crash record, and the verdict on a trial that keeps killing its process."""

import json
import os

from alexnet_search.runlog import CRASHED_RUNS_LIMIT, RunLog


def test_a_run_is_recorded_open_and_closed_with_how_it_ended(tmp_path):
    log = RunLog(tmp_path, "tuner0")
    assert log.runs("0000") == [] and log.runner("0000") == "?"
    assert log.start("0000") is None
    (run,) = log.runs("0000")
    assert run["tuner_id"] == "tuner0" and run["pid"] == os.getpid() and "ended" not in run
    assert log.running == "0000" and log.runner("0000") == "tuner0"
    log.end("0000", "completed")
    assert log.runs("0000")[0]["ended"] == "completed" and log.running is None


def test_only_deaths_count_towards_the_limit_and_ctrl_c_is_not_one(tmp_path):
    log = RunLog(tmp_path, "tuner0")
    for _ in range(CRASHED_RUNS_LIMIT - 1):
        assert log.start("0003") is None  # ... and the process dies: the entry stays open
    log.start("0003")
    log.interrupted()  # Ctrl-C closes this process's entry
    assert log.runs("0003")[-1]["ended"] == "interrupted" and log.running is None
    assert log.start("0003") is None  # still one death short: it runs again
    verdict = RunLog(tmp_path, "tuner0").start("0003")  # a new process, after a second death
    assert verdict is not None and f"died in {CRASHED_RUNS_LIMIT} earlier runs" in verdict


def test_end_closes_only_this_processs_own_entry(tmp_path):
    folder = tmp_path / "trial_0001"
    folder.mkdir()
    other = {"tuner_id": "tuner1", "pid": os.getpid() + 1, "started": "earlier"}
    (folder / "runs.json").write_text(json.dumps([other]))
    log = RunLog(tmp_path, "tuner0")
    log.start("0001")
    log.end("0001", "failed")
    assert [r.get("ended") for r in log.runs("0001")] == [None, "failed"]
