"""User-facing errors: each carries one line that names the problem and the fix."""
import os
import sys


class UserError(Exception):
    """Bad input from the user (config, files, checkpoints); shown as one line, no traceback."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message is one line for the user."""


class DataError(UserError):
    """A dataset that cannot be read or obtained, or whose contents cannot be what it claims."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


class OutputError(UserError):
    """An output path (run dir, checkpoint, event file) that cannot be written."""


class TrainingDivergedError(UserError):
    """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def exit_with_one_line(err: UserError) -> None:
    """`error: <message>` on stderr and exit status 1; with HYDRA_FULL_ERROR=1 the error goes on
    up instead, for its traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
