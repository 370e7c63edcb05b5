"""The one exception type for mistakes a user can make (bad path, bad value, malformed file).

The CLI prints its message as one sentence and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input, reported without a traceback."""
