"""The exceptions the command line turns into a one-line message."""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line.

    The command line prints it as `error: <message>` and exits with status 2, without a traceback.
    """


class DiskFull(BaseException):
    """The disk (or the user's quota) filled up while a trial trained.

    A BaseException, as KeyboardInterrupt is: Keras Tuner fails a trial on any Exception, for
    good, and a full disk is no verdict on the trial's hyperparameters. So the study stops, the
    trial stays unfinished, and the same command re-runs it once space is freed.
    """


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space OSError behind `exc` (itself, or what it was raised from), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_message(exc: OSError, folder: str | Path | None = None) -> str:
    """One line naming the disk (the one holding `folder`, the study or the results, with what is
    free on it now) and the file that could not be written, where the error says which."""
    # h5py (Keras' checkpoints) puts the file and errno in a message of several lines instead.
    named = exc.filename or (m.group(1) if (m := re.search(r"\b(?:file)?name = '([^']+)'", str(exc))) else None)
    disk = ""
    if folder is not None:
        try:
            disk = f" holding {folder} ({_size(shutil.disk_usage(folder).free)} free now)"
        except OSError:
            disk = f" holding {folder}"
    return (f"no space left on the disk{disk}{f' while writing {named}' if named else ''}; free some, then run "
            f"the same command again: it resumes where it stopped, the interrupted run from its start")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
