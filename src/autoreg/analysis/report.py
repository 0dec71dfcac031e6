"""Sweep reports: `python -m autoreg.analysis.report <sweep dir>` writes <sweep dir>/report.md.

Each job of a Hydra multirun is a subdirectory holding `.hydra/overrides.yaml` (what it varied)
and `metrics.json` (written by training at its end). A job without metrics.json is reported as
failed, so one crashed job never hides the others.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.metrics


def read_jobs(sweep_dir: Path) -> list[Job]:
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        overrides = dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [])
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        jobs.append(Job(path, overrides, metrics))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose values differ between jobs, in a stable order."""
    keys = sorted({k for job in jobs for k in job.overrides})
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _sort_value(value: str | None):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def table(jobs: list[Job]) -> str:
    """A markdown table, one row per job, sorted by the swept keys."""
    keys = swept_keys(jobs) or sorted({k for job in jobs for k in job.overrides})[:1]
    jobs = sorted(jobs, key=lambda j: [_sort_value(j.overrides.get(k)) for k in keys])
    columns = ["final val/nll", "best val/nll", "val/bpd", "params", "steps", "train min"]
    lines = ["| " + " | ".join(keys + columns) + " |", "|" + "---|" * (len(keys) + len(columns))]
    for job in jobs:
        m = job.metrics
        cells = [job.overrides.get(k, "") for k in keys]
        if job.failed:
            cells += ["FAILED"] + [""] * (len(columns) - 1)
        else:
            cells += [
                f"{m['val/nll']:.2f}" if "val/nll" in m else "",
                f"{m['best/val/nll']:.2f}" if "best/val/nll" in m else "",
                f"{m['val/bpd']:.4f}" if "val/bpd" in m else "",
                f"{int(m['params']):,}" if "params" in m else "",
                str(int(m.get("global_step", 0))),
                f"{m.get('train_seconds', 0) / 60:.1f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(sweep_dir: Path) -> Path:
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise SystemExit(f"error: no jobs (*/.hydra/overrides.yaml) under {sweep_dir}; pass a multirun sweep dir")
    out = Path(sweep_dir) / "report.md"
    failed = sum(job.failed for job in jobs)
    out.write_text(f"# Sweep report: {sweep_dir}\n\n{len(jobs)} jobs, {failed} failed.\n\n{table(jobs)}\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    print(write_report(parser.parse_args(argv).sweep_dir))


if __name__ == "__main__":
    main()
