"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (file, flag, study): printed as one line, no traceback."""
