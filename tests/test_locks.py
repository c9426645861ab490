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


def test_a_filesystem_that_refuses_locks_is_named_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """NFS without its lock daemon answers flock with ENOLCK (some FUSE and Lustre mounts with
    EOPNOTSUPP): that was a traceback at every start."""
    import errno

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", refuse)
    monkeypatch.setattr(locks, "mount_of", lambda path, mounts="": ("nfs4", "rw,vers=4.2"))
    with pytest.raises(UserError, match=r"its filesystem \(nfs4\) refuses file locks \(No locks available\)"):
        with locks.held(tmp_path / "results" / "cpu", "search"):
            pass
    assert list(tmp_path.iterdir()) == []  # no results/.locks/ left behind


def test_an_nfs_mount_with_local_locks_only_is_said_once(tmp_path, capsys):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {tmp_path} nfs4 rw,relatime,vers=4.2,local_lock=all 0 0\n"
                      "proc /proc proc rw 0 0\n")
    folder = tmp_path / "results"
    assert locks.mount_of(folder, str(mounts)) == ("nfs4", "rw,relatime,vers=4.2,local_lock=all")
    line = locks.warn_without_exclusion(folder, str(mounts))
    assert "local locks only" in line and "not on others" in line
    locks.warn_without_exclusion(folder, str(mounts))
    assert capsys.readouterr().err.count("local locks only") == 1
    mounts.write_text(f"server:/export {tmp_path} nfs4 rw,vers=4.2 0 0\n")
    assert locks.warn_without_exclusion(folder, str(mounts)) is None  # NFS with its lock daemon: no word


def test_a_link_planted_where_the_lock_file_goes_is_not_followed(tmp_path):
    """The lock file is opened for writing (and truncated): through a link it wrote over its target."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "results" / ".locks").mkdir(parents=True)
    (tmp_path / "results" / ".locks" / "cpu.search.lock").symlink_to(target)
    with pytest.raises(UserError, match="cannot create the lock"):
        with locks.held(tmp_path / "results" / "cpu", "search"):
            pass
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_overwrite_waits_for_no_retrain_it_would_empty(tmp_path, cifar_dir, tiny_config):
    """--overwrite empties runs/, best/ and baselines/: it emptied them under a running retrain-best
    or baseline, which take their own locks, not the search's."""
    from alexnet_search.config import load_config
    from alexnet_search.study import prepare_search, study_for

    study = study_for(tmp_path / "results", "tiny")
    prepare_search(study, load_config(tiny_config), overwrite=False)
    (study.root / "runs" / "retrain-best").mkdir(parents=True)
    holder = _holder(study.root, "retrain-best")
    try:
        result = run_cli("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir",
                         tmp_path / "results", "--overwrite", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "is busy: its retrain-best is running" in lines[0]
    assert (study.root / "runs" / "retrain-best").is_dir()
