"""Trained models that ship with autoreg: `python sample.py ckpt=<name>`, compress.py and
`AutoregressiveModule.from_checkpoint(<name>)` take a shipped model's short name wherever they
take a checkpoint path.

Each is one weights-only file `<name>.pt` (fp32; the evaluated weights, i.e. the weight average
where the run had `optim.ema_decay`) with the run's hparams, and an entry in manifest.json: family,
config, data, test NLL (whole test split and its first 200 images), parameters, steps, CPU-hours
and the commit that trained it. A file carries `autoreg_format`; a loader refuses a format it
does not know in one line. `autoreg.checkpoint.export_pretrained` writes both from a run's best.ckpt
(experiments/benchmark/ship.py).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT = 1
HERE = Path(str(resources.files(__name__)))
MANIFEST = HERE / "manifest.json"


def manifest() -> dict[str, dict[str, Any]]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def resolve(ckpt: str) -> str:
    """The file of a shipped model named `ckpt`, or `ckpt` itself (a path)."""
    entry = manifest().get(str(ckpt))
    return str(HERE / entry["file"]) if entry and not Path(ckpt).exists() else str(ckpt)
