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
import time
from pathlib import Path
from typing import Iterator

from .errors import UserError

_held: dict[str, int] = {}  # lock path -> open descriptor, while this process holds it


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"cannot create the lock {path} ({exc.strerror}); check that --results-dir is writable") \
            from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"study {study} is busy: its {what} is running in {holder}; wait for it to end, or stop "
                        f"it (the same command then resumes where it stopped)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    _held[str(path)] = fd
    try:
        yield
    finally:
        del _held[str(path)]
        os.close(fd)  # the kernel drops the lock with the last descriptor
