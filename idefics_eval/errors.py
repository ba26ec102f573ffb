"""The one exception type for mistakes a user can fix.

The command line prints a `UserError` as one line and exits with status 2; anything else is an
internal error (status 1).
"""


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""
