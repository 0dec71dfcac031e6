"""What a run's console leaves out: library noise a user cannot act on (real warnings stay)."""
from __future__ import annotations

import logging
import re
import warnings


# Lightning's INFO lines that inform no one: adverts, defaults restated, hardware that is absent.
_NOISE = re.compile(
    r"litlogger|litmodels"
    r"|^`Trainer\((limit_\w+_batches|val_check_interval)=1\.0\)` was configured so"
    r"|^[GTH]PU available: False"
)


class _DropNoise(logging.Filter):
    """Drops the INFO lines `_NOISE` matches; warnings and errors always pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not _NOISE.search(record.getMessage())


def install_log_filters() -> None:
    """Called by `autoreg.cli.run`, which every entry task goes through, and by `train`; idempotent."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())
    # Lightning's own use of a deprecated torch API, nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
