"""The one base class of the problems a user can fix.

A ``UsageError`` names what was given (a file, a folder, a setting) and why it cannot be used.
Command-line entry points print it as ``error: <message>`` and exit with status 2; any other
exception is a bug and keeps its traceback. A ``ValueError`` subclass, so callers that catch
``ValueError`` keep working.
"""


class UsageError(ValueError):
    """Something the user gave cannot be used; the message says what and why."""
