"""User-facing errors: each carries one line that names the problem and the fix."""


class UserError(Exception):
    """Bad input from the user (config, files, checkpoints); shown as one line, no traceback."""


class DataError(UserError):
    """A dataset that cannot be read or obtained."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""
