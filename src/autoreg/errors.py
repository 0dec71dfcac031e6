"""User-facing errors: each carries one line that names the problem and the fix."""


class UserError(Exception):
    """Bad input from the user (config, files, checkpoints); shown as one line, no traceback."""


class DataError(UserError):
    """A dataset that cannot be read or obtained, or whose contents cannot be what it claims."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


class OutputError(UserError):
    """An output path (run dir, checkpoint, event file) that cannot be written."""


class TrainingDivergedError(UserError):
    """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""
