"""The TensorBoard logger runs write with (conf/logger/tensorboard.yaml)."""
from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger as LightningTensorBoardLogger


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar Lightning adds to every logged
    step: its staircase would be the first chart TensorBoard opens on, above train/ and val/nll.
    The epoch stays in checkpoints and metrics.json."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
