"""One writer per study folder at a time: a search, a retrain-best, a baseline.

Two searches of one study would interleave Keras Tuner's oracle.json and trial files; two
retrain-bests would delete each other's staging folder. Each holds an advisory lock (`fcntl.flock`)
on a file beside the study (`results/.locks/<study>.<what>.lock`, outside the study so
`--overwrite` cannot delete it while held) while it reads and writes the study: the search and
its confirmation, each retrain, each baseline. The kernel drops the
lock when the process ends, however it ends, so a crash or kill -9 never leaves a study locked.
The file keeps the holder's pid and start time, for the message a second command prints.

A distributed study's chief holds the search lock; its workers are part of the same search and
take none. Different commands do not exclude each other: a baseline may train while the search
runs, as on a machine with spare cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from .errors import UserError

_held: dict[str, int] = {}  # lock path -> open descriptor, while this process holds it
_warned: set[str] = set()  # mount points already said to lock this host only


def mount_of(path: Path, mounts: str = "/proc/self/mounts") -> tuple[str, str]:
    """(filesystem type, mount options) of the mount that holds `path`; ("unknown", "") where the
    system does not say."""
    best, found = "", ("unknown", "")
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return found
    target = str(Path(path).resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, found = point, (fields[2], fields[3])
    return found


def warn_without_exclusion(folder: Path, mounts: str = "/proc/self/mounts") -> str | None:
    """On an NFS mount with local locks only ('nolock', local_lock=all or flock), flock succeeds
    but excludes only this host's processes: say so once (stderr), and return the line."""
    fstype, options = mount_of(folder, mounts)
    opts = set(options.split(","))
    if not fstype.startswith("nfs") or not opts & {"nolock", "local_lock=all", "local_lock=flock"}:
        return None
    line = (f"warning: {folder} is on {fstype} mounted with local locks only ({options}); a study's lock "
            f"keeps out processes on this host, not on others: run one search per study across hosts")
    if folder.resolve().anchor + fstype + options not in _warned:
        _warned.add(folder.resolve().anchor + fstype + options)
        print(line, file=sys.stderr, flush=True)
    return line


def _unmake(path: Path, folder: Path, made: tuple[list[Path], bool]) -> None:
    """Remove the lock file (and the folders) this call created, so that a refused command leaves
    the results folder as it found it."""
    folders, file_made = made
    try:
        if file_made:
            path.unlink()
        for created in folders:  # deepest first
            created.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def held(study_root: Path, what: str) -> Iterator[None]:
    """Hold the study at `study_root`'s `what` ("search", "retrain-best", "baseline-paper") for
    the block, or raise UserError naming the process that holds it. Re-entered in the process
    that holds it, it does nothing."""
    study = study_root.name
    folder = study_root.parent / ".locks"
    path = folder / f"{study}.{what}.lock"
    if str(path) in _held:
        yield
        return
    made = [p for p in (folder, *folder.parents) if not p.exists()], not path.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted in its place must not make this open (and truncate) another file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise UserError(f"cannot create the lock {path} ({exc.strerror}); check that --results-dir is writable "
                        f"and that it is not a link") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"study {study} is busy: its {what} is running in {holder}; wait for it to end, or stop "
                        f"it (the same command then resumes where it stopped)") from None
    except OSError as exc:  # ENOLCK, EOPNOTSUPP: NFS without its lock daemon, some FUSE and Lustre mounts
        os.close(fd)
        _unmake(path, folder, made)
        fstype, _ = mount_of(folder)
        raise UserError(f"cannot lock {path}: its filesystem ({fstype}) refuses file locks ({exc.strerror or exc}); "
                        f"put --results-dir on a local disk, or mount it with locking (NFS: lockd running, no "
                        f"'nolock'; Lustre: -o flock)") from None
    warn_without_exclusion(folder)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    _held[str(path)] = fd
    try:
        yield
    finally:
        del _held[str(path)]
        os.close(fd)  # the kernel drops the lock with the last descriptor
