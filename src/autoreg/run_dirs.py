"""Where a run writes, decided before Hydra makes any dir (so without torch): the run dir of a
new or resumed run (the `autoreg_run_dir` / `autoreg_config_subdir` / `autoreg_run_name`
resolvers of conf/train.yaml),
`resume=`'s checkpoint, and a writable-dir check. Resuming itself is autoreg.checkpoint's."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from autoreg.errors import CheckpointError, OutputError

LAST = "last.ckpt"


def ensure_writable(directory: Path, key: str = "paths.output_dir") -> None:
    """Create `directory` and write a probe file in it, or fail with one line."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{key}={directory} cannot be written ({err.strerror or err}); pick another dir or fix its permissions") from None


@functools.lru_cache(maxsize=None)
def resume_dir(resume: str | None, ckpt_path: str | None, new_dir: str) -> str | None:
    """The run dir to continue, or None for a new run in `new_dir`.

    `resume=<run dir>` continues that run. `ckpt_path=last` continues the newest run beside
    `new_dir` (under outputs/runs) that has a checkpoints/last.ckpt, if any. Cached: Hydra resolves
    the run dir more than once and must get the same answer."""
    if resume not in (None, ""):
        return str(resume)
    if ckpt_path == "last":
        runs = [p for p in Path(new_dir).parent.glob(f"*/checkpoints/{LAST}") if p.is_file()]
        if runs:
            return str(max(runs, key=lambda p: p.stat().st_mtime).parent.parent)
    return None


def run_dir(resume: str | None, ckpt_path: str | None, new_dir: str) -> str:
    return resume_dir(resume, ckpt_path, new_dir) or new_dir


def config_subdir(mode: Any, resume: str | None, ckpt_path: str | None, new_dir: str) -> str:
    """`.hydra` for a new run (and every sweep job); `.hydra/resume_<time>` for a resumed run, so
    the run's original config and overrides stay where they were."""
    if str(mode).endswith("MULTIRUN") or not resume_dir(resume, ckpt_path, new_dir):
        return ".hydra"
    return f".hydra/resume_{Path(new_dir).name}"


def run_dir_checkpoint(directory: str | os.PathLike) -> Path:
    """`<directory>/checkpoints/last.ckpt` for `resume=<directory>`, or a one-line error."""
    path = Path(directory) / "checkpoints" / LAST
    if not path.is_file():
        raise CheckpointError(f"resume={directory} has no checkpoints/{LAST}: not an autoreg run dir, or it was stopped before its first checkpoint")
    return path


NEW_RUN_NAME = re.compile(r"^(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)_(.+)$")


def run_name(model_name: str, overrides: str) -> str:
    """A single run's dir name after its start time: the model and the command line's overrides
    (`pixelrnn_model.cell=gru`), so that TensorBoard's run list says what each run is."""
    rest = re.sub(r"(^|,)model=[^,]*", "", overrides).strip(",")
    return job_dirname(f"{model_name}_{rest}" if rest else model_name, max_len=100)


def trial_name(output_dir: Path) -> str:
    """The run's name in TensorBoard's HParams table, what it is before when:
    `pixelrnn_model.cell=gru (2026-11-29_03-10-00)`, `0_model.kernel=3 (<sweep's time>)`."""
    output_dir = Path(output_dir)
    match = NEW_RUN_NAME.match(output_dir.name)
    if match:
        return f"{match[2]} ({match[1]})"
    return f"{output_dir.name} ({output_dir.parent.name})"


def job_dirname(overrides: str, max_len: int = 120) -> str:
    """A sweep job's directory (and TensorBoard run) name from its overrides, kept under the
    file-name limit: a long one is cut and made unique with a hash of the whole."""
    if len(overrides) <= max_len:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{overrides[: max_len - 11]}.._{digest}"
