"""What a run's console leaves out: library noise a user cannot act on (real warnings stay)."""
from __future__ import annotations

import logging
import warnings


class _DropAdverts(logging.Filter):
    """Lightning logs "Tip: try litlogger / litmodels" adverts on every run: nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "litmodels" not in message


def install_log_filters() -> None:
    """Called by the entry tasks (autoreg.cli); idempotent."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in logger.filters):
        logger.addFilter(_DropAdverts())
    # Lightning's own use of a deprecated torch API, nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
