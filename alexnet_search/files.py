"""Files a crash cannot leave half-written: JSON and text replaced whole (a temporary file, fsync,
rename, fsync of the folder), folders made durable and swapped whole, and JSON read back with a
clear error when someone damaged it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` at `path`, all or nothing (a crash leaves the old file or the new one)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        # UTF-8 whatever the locale: a report names values and studies a C locale cannot encode.
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable: a rename is a change to the folder, not to the file."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """Make every file under `folder`, and the folders themselves, durable: before a state file
    that points at them is written (a power cut must not leave a COMPLETED trial with an empty
    checkpoint, or `best/` with a truncated export). Files written by other libraries (Keras
    Tuner's checkpoints, Keras' exports) are flushed by them but never fsync'd."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


class SpaceReserve:
    """A file of random bytes that a process holds on its study's disk and lets go when the disk fills up,
    so that there is room left to record how its run stopped (runs.json's "interrupted", the
    summary). Without it those writes fail too, and a run stopped by a full disk reads as a crash
    on resume: two of them would fail a trial for good."""

    SIZE = 256 * 1024  # a few JSON files' worth, many times over

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def hold(self) -> None:
        """Raises OSError (ENOSPC) if the disk has not even this much room."""
        try:
            # The name is this process's own: whatever stands there goes, and a link planted under
            # it is removed, never written through (O_EXCL creates the file anew or fails).
            self.release()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                # Random, not zeros: a compressing filesystem (ZFS, btrfs) stores zeros as a hole,
                # which holds nothing back.
                f.write(os.urandom(self.SIZE))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _read_umask() -> int:
    """This process's umask, read once at import: os.umask can only be read by setting it, and
    setting it to 0 around every write left a window where another thread's files were
    world-writable."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def read_json(path: str | Path) -> Any:
    """A JSON file this tool wrote; UserError (not a traceback) when someone damaged it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it was edited or damaged: restore it, or start "
                        f"the study over with --overwrite") from None


def replace_dir_atomic(staging: Path, target: Path) -> None:
    """Put a fully written `staging` folder at `target`, keeping the old one until the swap."""
    old = target.with_name(f".{target.name}.old")
    restore_dir(target)
    fsync_tree(staging)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def restore_dir(target: Path) -> None:
    """Put back the folder a `replace_dir_atomic` killed between its two renames had moved aside."""
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)

