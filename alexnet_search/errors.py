"""The exceptions the command line turns into a one-line message."""

from __future__ import annotations

import errno


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


def disk_full_message(exc: OSError) -> str:
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"no space left on the disk{where} ({exc.strerror}); free some, then run the same command again: "
            f"it resumes where it stopped, the interrupted run from its start")
