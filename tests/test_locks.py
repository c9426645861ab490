"""locks.py: one search (one retrain-best, one baseline of a name) per study at a time, and no lock
outliving its process."""

import os
import signal
import subprocess
import sys

import pytest

from alexnet_search import locks
from alexnet_search.errors import UserError

from conftest import REPO, run_cli


def _holder(study_root, what):
    """Another process holding `what` of the study at `study_root` until killed."""
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            f"from alexnet_search import locks; lock = locks.held(Path({str(study_root)!r}), {what!r}); lock.__enter__(); "
            f"print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_until_the_first_dies_however_it_dies(tmp_path):
    study = tmp_path / "results" / "cpu"
    first = _holder(study, "search")
    try:
        with pytest.raises(UserError, match=rf"study cpu is busy: its search is running in pid {first.pid} since "):
            with locks.held(study, "search"):
                pass
        with locks.held(study, "retrain-best"):  # another command of the same study is not excluded
            with locks.held(study, "retrain-best"):  # and holding it again in the same process does nothing
                pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with locks.held(study, "search"):  # the kernel dropped the killed process's lock
        assert f"pid {os.getpid()} since" in (tmp_path / "results" / ".locks" / "cpu.search.lock").read_text()
        assert not study.exists()  # the locks live beside the study, where --overwrite does not reach
    second = _holder(study, "search")  # and this process let go of it at the block's end
    second.send_signal(signal.SIGKILL)
    second.wait()


def test_a_search_of_a_busy_study_is_refused_in_one_line_before_it_writes(tmp_path, cifar_dir, tiny_config):
    results = tmp_path / "results"
    holder = _holder(results / "tiny", "search")
    try:
        result = run_cli("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", results,
                         cwd=tmp_path, timeout=120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"error: study tiny is busy: its search is running in pid {holder.pid}" in result.stderr
    assert sorted(p.name for p in results.iterdir()) == [".locks"]  # no study folder was made
