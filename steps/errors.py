"""The one exception type a step shows its user as a one-line error (no traceback)."""


class UserError(Exception):
    """Bad input or unusable data: the message says what is wrong and where."""


class DataError(UserError):
    """A data file is missing, unreadable or unusable; the message names the file."""
