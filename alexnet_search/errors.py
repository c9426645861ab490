"""The one exception type the command line turns into a one-line message."""


class UserError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line.

    The command line prints it as `error: <message>` and exits with status 2, without a traceback.
    """
