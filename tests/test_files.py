"""files.py: writes a crash cannot leave half-done, and a damaged file read as one clear error."""

import json

import pytest

from alexnet_search.errors import disk_full, disk_full_message
from alexnet_search.files import SpaceReserve, replace_dir_atomic, restore_dir, write_json_atomic


def test_atomic_json_replaces_the_file_whole_and_leaves_no_temporary_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]



def test_a_write_killed_before_its_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """The new content reaches the file's name only by the rename: a plain open(path, "w") fails this."""
    write_json_atomic(tmp_path / "a.json", {"x": 1})

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "a.json", {"x": 2, "long": "y" * 100_000})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]



def test_atomic_json_keeps_the_old_file_when_writing_fails(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "a.json", {"x": object.__new__(type("Unserialisable", (), {"__str__": None}))})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]



def test_replace_dir_swaps_a_finished_folder_in(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "old").write_text("old")
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "new").write_text("new")
    replace_dir_atomic(tmp_path / "staging", tmp_path / "best")
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]



def test_a_kill_between_the_two_renames_loses_no_export(tmp_path):
    # The state replace_dir_atomic leaves when killed after moving best/ aside.
    (tmp_path / ".best.old").mkdir()
    (tmp_path / ".best.old" / "model.keras").write_text("good")
    restore_dir(tmp_path / "best")
    assert (tmp_path / "best" / "model.keras").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "model.keras").write_text("new")
    (tmp_path / ".best.old").mkdir()  # a stale copy beside a live best/ is not restored over it
    replace_dir_atomic(tmp_path / "staging", tmp_path / "best")
    assert (tmp_path / "best" / "model.keras").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]



def test_atomic_writes_make_the_rename_durable_by_syncing_the_folder(tmp_path, monkeypatch):
    """Durability cannot be seen without cutting the power, so this pins POSIX's contract for it:
    the file's data reaches the disk before its new name does, and the folder holding the name
    after it."""
    import os
    import stat

    from alexnet_search import files as files_module

    synced = []
    real = os.fsync
    monkeypatch.setattr(files_module.os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)),
                                                              real(fd))[1])
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert synced == [False, True]  # the file's data, then the folder holding its new name
    synced.clear()
    files_module.write_text_atomic(tmp_path / "report.md", "# report")
    assert synced == [False, True] and (tmp_path / "report.md").read_text() == "# report"
    staging = tmp_path / "staging"
    (staging / "serving").mkdir(parents=True)
    (staging / "model.keras").write_bytes(b"weights")  # written by Keras, which never fsyncs
    (staging / "serving" / "saved_model.pb").write_bytes(b"graph")
    synced.clear()
    replace_dir_atomic(staging, tmp_path / "best")
    # Every file and folder of the export before the rename that publishes it, then the rename.
    assert sorted(synced[:4]) == [False, False, True, True] and synced[4:] == [True]



def test_a_space_reserve_holds_its_bytes_until_released(tmp_path):
    reserve = SpaceReserve(tmp_path / ".reserve.tuner0")
    reserve.hold()
    assert (tmp_path / ".reserve.tuner0").stat().st_size == SpaceReserve.SIZE
    reserve.release()
    reserve.release()  # a second release (Ctrl-C after a full disk) is no error
    assert list(tmp_path.iterdir()) == []


def test_a_space_reserve_that_does_not_fit_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real(*a, **k)))  # the disk fills up as it writes
    with pytest.raises(OSError, match="No space"):
        SpaceReserve(tmp_path / ".reserve.tuner0").hold()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_naming_the_disk_and_the_file(tmp_path):
    import errno

    plain = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs.json"))
    assert disk_full_message(plain, tmp_path).startswith(
        f"no space left on the disk holding {tmp_path} (")  # and what is free on it now
    assert f"free now) while writing {tmp_path / 'runs.json'}; free some" in disk_full_message(plain, tmp_path)
    # h5py (Keras' checkpoints) says it in several lines, the file inside them
    h5 = OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: time = Sat Nov 28\n, filename = "
                               "'r/t/checkpoint.weights.h5', file descriptor = 12, errno = 28)")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = h5
    assert disk_full(wrapped) is h5
    message = disk_full_message(h5)
    assert "\n" not in message and "while writing r/t/checkpoint.weights.h5; free some" in message


def test_the_space_reserve_never_writes_through_a_link_planted_under_its_name(tmp_path):
    from alexnet_search.files import SpaceReserve

    target = tmp_path / "precious.bin"
    target.write_bytes(b"keep me")
    reserve = tmp_path / ".reserve.tuner1"
    reserve.symlink_to(target)
    SpaceReserve(reserve).hold()
    assert target.read_bytes() == b"keep me"
    assert not reserve.is_symlink() and reserve.stat().st_size == SpaceReserve.SIZE


def test_text_is_written_in_utf8_whatever_the_locale(tmp_path):
    """report.md was written in the locale's encoding: a UnicodeEncodeError where it is not UTF-8."""
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "report.md"
    code = f"from alexnet_search.files import write_text_atomic; write_text_atomic({str(path)!r}, '0.70 \\u00b1 0.01 \\u2713')"
    done = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-500:]
    assert path.read_bytes().decode("utf-8") == "0.70 \u00b1 0.01 \u2713"
