"""The one base class of the errors a user can fix: bad input, a refused setting, a stopped run.

The `dsmn` command prints such an error as one line (`dsmn COMMAND: message`) and exits with status 2;
any other exception is a bug and keeps its traceback. Library users catch `UserError` the same way.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to change (a file, a flag, a setting)."""
