"""What a run and a sweep print when they end: where everything went and how to go on."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

log = logging.getLogger("autoreg")


def run_summary(output_dir: Path, metrics: dict[str, float], best_ckpt: str | None) -> list[str]:
    """The lines a finished run prints: its dir, final and best val/nll (bpd), steps and time,
    the best checkpoint, and the commands to look at it and sample from it."""
    def nll(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"

    steps = f"{int(metrics.get('global_step', 0))} steps in {metrics.get('train_seconds', 0):.0f} s"
    if "val/nll" in metrics:
        val = (f"val/nll: final {nll('val/nll')} nats ({metrics['val/bpd']:.4f} bits/dim), "
               f"best {nll('best/val/nll')}; {steps}")
    else:
        val = f"val/nll: none (no validation ran, trainer.limit_val_batches=0?); {steps}"
    lines = [f"run dir: {output_dir}", val]
    if "test/nll" in metrics:
        lines.append(f"test/nll: {nll('test/nll')} nats ({metrics.get('test/bpd', math.nan):.4f} bits/dim)")
    if best_ckpt:
        lines.append(f"best checkpoint: {best_ckpt}")
    lines.append(f"next: tensorboard --logdir {output_dir}" + (f"  |  python sample.py ckpt={best_ckpt}" if best_ckpt else ""))
    return lines


def sweep_table(sweep_dir: Path) -> list[str]:
    """A markdown table of a sweep's jobs (final and best val/nll, steps), failed ones marked."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: (len(p.name.split("_")[0]), p.name))
    lines = ["| job | val/nll | best val/nll | steps |", "|---|---|---|---|"]
    for job in jobs:
        written = job / "metrics.json"
        if not written.is_file():
            lines.append(f"| {job.name} | FAILED | | |")
            continue
        m: dict[str, Any] = json.loads(written.read_text())
        lines.append(f"| {job.name} | {m.get('val/nll', math.nan):.2f} | {m.get('best/val/nll', math.nan):.2f} | {m.get('global_step', '')} |")
    return lines


class SweepSummary(HydraCallback):
    """At the end of a multirun: the sweep dir, a table of its jobs and the report command."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        lines = [f"sweep dir: {sweep_dir}", *sweep_table(sweep_dir),
                 f"next: tensorboard --logdir {sweep_dir}  |  python -m autoreg.analysis.report {sweep_dir}"]
        print("\n".join(lines), flush=True)
