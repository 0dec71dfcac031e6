"""Sweep reports: `python -m autoreg.analysis.report <sweep dir> [--out DIR]` (`make report SWEEP=...`).

Each job of a Hydra multirun is a subdirectory holding `.hydra/overrides.yaml` (what it varied),
`metrics.json` (final numbers, written by training at its end) and the TensorBoard event files
(learning curves, sample grids and the run's flat hparams, read with tensorboard's own loader,
`autoreg.analysis.events`). The report, written to DIR (default: the sweep dir), is

- report.md: the settings all jobs share, the budget, a table of every job sorted by the swept
  keys (final and best val/nll, bits/dim, parameters, steps, training time), a mean-over-seeds
  table when `seed` is swept, and the reason each failed job gave;
- val_nll.png: best val/nll against each swept key (one line per value of the other keys);
- curves.png: training and validation NLL against steps, one line per job (the smoothing and
  the y range chosen from the data: `curves_figure`);
- samples.png: the last `samples` grid of every job, side by side;
- sample quality (autoreg.analysis.quality), where the jobs have it: `val/fid`, the classifier
  score, the label accuracy (conditional models) and the memorisation ratio as table columns, the
  held-out reference values, and the rank correlation (Spearman) of each with best val/nll across
  the jobs: does the likelihood order the settings as sample quality does? A job trained without
  the callback gets them from `python -m autoreg.analysis.quality ckpt=<job>/checkpoints/best.ckpt`
  (its checkpoints/best_quality.json).

A job without metrics.json is reported as failed, so one crashed job never hides the others.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from autoreg.analysis.events import read_events

MAX_SMOOTHING = 0.9  # curves.png: the largest EMA weight of the training NLL (TensorBoard's slider)
SMOOTHING_POINTS = 25  # curves.png: a curve of n points is smoothed over about n / 25 of them
SQUASHED = 10  # curves.png: the first steps' training NLL is cut when it spans 10x the later values...
HEAD_CLIP = 3  # ... and then the last half of every training curve fills at least 1/3 of the height
MAX_LINES = 6  # val/nll plots: more settings of the other keys than this get dots, not lines
MAX_TICKS = 12  # val/nll plots: at most this many labelled values on the x axis
MAX_COLUMNS = 8  # sample grids: settings side by side, one row per seed
# sample quality (autoreg.analysis.quality): metric, column title, format, whether higher is better
QUALITY_COLUMNS = (
    ("val/fid", "FID (classifier)", ".2f", False),
    ("val/classifier_score", "classifier score", ".2f", True),
    ("val/label_accuracy", "label accuracy", ".3f", True),
    ("val/memorisation", "memorisation", ".3f", None),
)
QUALITY_PREFIXES = ("val/", "reference/", "quality_seconds")


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.metrics

    def setting(self, key: str) -> str:
        """The job's override of `key`; '' (the config's default) where it has none."""
        return self.overrides.get(key, "")

    @cached_property
    def events(self) -> dict[str, Any]:
        return read_events(self.path)

    @property
    def failure(self) -> str:
        """The error line the job logged (`job failed: ...` in train.log), if any."""
        logs = sorted(self.path.glob("*.log"))
        found = [m.group(1) for f in logs for m in re.finditer(r"job failed: (.*)", f.read_text(errors="replace"))]
        return found[-1] if found else "no metrics.json: the job crashed or did not finish"

    def best_bpd(self) -> float | None:
        """bits/dim of the best val/nll (the same nats -> bits/dim factor as the final pair)."""
        m = self.metrics
        if "best/val/nll" in m and m.get("val/nll"):
            return m["best/val/nll"] * m["val/bpd"] / m["val/nll"]
        return None


def read_jobs(sweep_dir: Path) -> list[Job]:
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        overrides = dict(o.lstrip("+").split("=", 1) for o in yaml.safe_load(overrides_file.read_text()) or [])
        metrics_file = path / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        scored = path / "checkpoints" / "best_quality.json"  # the quality CLI's scores of best.ckpt
        if metrics and "val/fid" not in metrics and scored.is_file():
            metrics.update({k: v for k, v in json.loads(scored.read_text()).items() if k.startswith(QUALITY_PREFIXES)})
        jobs.append(Job(path, overrides, metrics))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose values differ between jobs, in a stable order (seed last)."""
    keys = sorted({k for job in jobs for k in job.overrides}, key=lambda k: (k == "seed", k))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _sort_value(value: str | None):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def sort_jobs(jobs: list[Job], keys: list[str]) -> list[Job]:
    return sorted(jobs, key=lambda j: [_sort_value(j.overrides.get(k)) for k in keys])


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(jobs: list[Job]) -> str:
    """A markdown table, one row per job, sorted by the swept keys."""
    keys = swept_keys(jobs) or sorted({k for job in jobs for k in job.overrides})[:1]
    quality = _quality_columns(jobs)
    columns = ["final val/nll", "best val/nll", "best val/bpd", *(title for _, title, _, _ in quality), "params", "steps",
               "train min (wall)"]
    lines = ["| " + " | ".join(keys + columns) + " |", "|" + "---|" * (len(keys) + len(columns))]
    for job in sort_jobs(jobs, keys):
        m = job.metrics
        cells = [job.setting(k) for k in keys]
        if job.failed:
            cells += ["FAILED"] + [""] * (len(columns) - 1)
        else:
            cells += [
                _fmt(m.get("val/nll"), ".2f"),
                _fmt(m.get("best/val/nll"), ".2f"),
                _fmt(job.best_bpd(), ".4f"),
                *(_fmt(m.get(key), spec) for key, _, spec, _ in quality),
                _fmt(m.get("params"), ",.0f"),
                _fmt(m.get("global_step"), ".0f"),
                _fmt(m["train_seconds"] / 60 if "train_seconds" in m else None, ".1f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _quality_columns(jobs: list[Job]) -> list[tuple[str, str, str, bool | None]]:
    return [c for c in QUALITY_COLUMNS if any(c[0] in j.metrics for j in jobs)]


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties get their mean rank)."""
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    rx, ry = ranks(x), ranks(y)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return math.nan
    return statistics.correlation(rx, ry)


def quality_section(jobs: list[Job]) -> str:
    """The held-out reference values and, per quality metric, its rank correlation with best
    val/nll over the finished jobs (empty when no job was scored)."""
    scored = [j for j in jobs if "val/fid" in j.metrics and "best/val/nll" in j.metrics]
    if not scored:
        return ""
    ref = scored[0].metrics
    lines = [
        "Scored on the same samples for every job (`autoreg.analysis.quality`, seed fixed). Held-out reference "
        "(validation digits scored as samples, the best reachable at this number of samples): "
        + ", ".join(f"{title} {_fmt(ref.get('reference/' + key.split('/', 1)[1]), spec)}"
                    for key, title, spec, _ in _quality_columns(scored) if "reference/" + key.split("/", 1)[1] in ref)
        + (f"; the feature classifier's test accuracy {ref['reference/classifier_test_accuracy']:.4f}"
           if "reference/classifier_test_accuracy" in ref else "")
        + (f"; scoring took {statistics.mean(j.metrics['quality_seconds'] for j in scored if 'quality_seconds' in j.metrics):.0f} s "
           "per job on average" if any("quality_seconds" in j.metrics for j in scored) else "") + ".",
    ]
    if len(scored) >= 3:
        nll = [j.metrics["best/val/nll"] for j in scored]
        rows = ["| metric | Spearman rho with best val/nll | agrees with the NLL ranking when |", "|---|---|---|"]
        for key, title, _, higher_better in _quality_columns(scored):
            values = [j.metrics.get(key) for j in scored]
            if None in values or higher_better is None:
                continue
            rho = spearman(nll, values)
            rows.append(f"| {title} | {rho:+.2f} | rho near {'-1 (higher is better)' if higher_better else '+1 (lower is better)'} |")
        lines += [f"Rank correlation over the {len(scored)} scored jobs:", "\n".join(rows)]
    return "\n\n".join(lines)


def seed_table(jobs: list[Job]) -> str:
    """Best val/nll averaged over seeds, one row per setting of the other swept keys."""
    keys = [k for k in swept_keys(jobs) if k != "seed"]
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in sort_jobs([j for j in jobs if not j.failed], keys):
        groups[tuple(job.setting(k) for k in keys)].append(job)
    columns = ["seeds", "best val/nll mean", "std", "min", "max", "best val/bpd mean"]
    lines = ["| " + " | ".join(keys + columns) + " |", "|" + "---|" * (len(keys) + len(columns))]
    for values, group in groups.items():
        nll = [j.metrics["best/val/nll"] for j in group]
        bpd = [j.best_bpd() for j in group]
        std = statistics.stdev(nll) if len(nll) > 1 else math.nan
        cells = [*values, str(len(group)), f"{statistics.mean(nll):.2f}", f"{std:.2f}", f"{min(nll):.2f}",
                 f"{max(nll):.2f}", f"{statistics.mean(bpd):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(value: str) -> str:
    """A swept value for a legend or tick: numbers to 4 significant digits."""
    return f"{float(value):.4g}" if _sort_value(value)[0] == 0 else value


def _label(job: Job, keys: list[str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_short(job.setting(k))}" for k in keys) or job.path.name


def plot_against_keys(jobs: list[Job], out: Path) -> Path | None:
    """Best val/nll against each swept key (seed aside): one line per setting of the other keys,
    through the mean over seeds, with every job as a dot. A search that varies everything at once
    (e.g. Optuna's) gets dots only: its lines would have one point each."""
    done = [j for j in jobs if not j.failed and "best/val/nll" in j.metrics]
    keys = [k for k in swept_keys(jobs) if k != "seed"]
    if not done or not keys:
        return None
    fig = Figure(figsize=(5 * len(keys), 4), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        values = sorted({j.setting(key) for j in done}, key=_sort_value)
        numeric = all(_sort_value(v)[0] == 0 for v in values)
        x_of = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
        others = [k for k in keys if k != key]
        lines: dict[str, list[Job]] = defaultdict(list)
        for job in done:
            lines[_label(job, others) if others else ""].append(job)
        if len(lines) > MAX_LINES or all(len({j.setting(key) for j in g}) == 1 for g in lines.values()):
            ax.scatter([x_of[j.setting(key)] for j in done], [j.metrics["best/val/nll"] for j in done], s=14)
        else:
            for name, group in sorted(lines.items()):
                by_value: dict[str, list[float]] = defaultdict(list)
                for job in group:
                    by_value[job.setting(key)].append(job.metrics["best/val/nll"])
                xs = sorted(by_value, key=_sort_value)
                (line,) = ax.plot([x_of[v] for v in xs], [statistics.mean(by_value[v]) for v in xs], marker="o", label=name or None)
                for v in xs:
                    ax.scatter([x_of[v]] * len(by_value[v]), by_value[v], s=12, color=line.get_color(), alpha=0.5)
            if others:
                ax.legend(fontsize=8)
        if numeric and min(x_of.values()) > 0 and max(x_of.values()) / min(x_of.values()) >= 20:
            ax.set_xscale("log")  # e.g. learning rates
        elif len(values) <= MAX_TICKS:
            ax.set_xticks([x_of[v] for v in values], [_short(v) for v in values])
        ax.set_xlabel(key)
        ax.set_ylabel("best val/nll (nats per image)")
        ax.grid(alpha=0.3)
    fig.savefig(out, dpi=110)
    return out


def smoothing_weight(points: int) -> float:
    """The EMA weight for a curve of `points` values: its time constant 1 / (1 - w) is about
    points / SMOOTHING_POINTS values, so a short curve (under 30 points) is drawn as logged and
    only long ones get TensorBoard-like weights, 0.6 from about 60 points up to MAX_SMOOTHING."""
    if points < 30:
        return 0.0
    return round(min(MAX_SMOOTHING, 1 - SMOOTHING_POINTS / points), 2)


def _ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA: the running average starts at zero and is divided by the weight
    it has accumulated (1 - w^k), so the first points are neither dragged toward zero nor held at
    the first value. Non-finite values are passed through and left out of the average."""
    out, last, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        count += 1
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**count))
    return out


def _finite(values) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def y_limits(curves: list[list[float]], clip_head: bool, below: list[float] = ()) -> tuple[float, float, float | None]:
    """(bottom, top, clipped) y limits showing every value of `curves` and, at the bottom, of
    `below` (the faint logged points behind a smoothed curve), padded by 5%. With
    `clip_head`, when the first steps' NLL (hundreds of nats) would squash the rest, i.e. the
    range of all values exceeds SQUASHED times the range of the last halves of the curves
    (counted from the lowest value), the top is lowered to HEAD_CLIP times that range:
    the last half of every curve then fills at least 1 / HEAD_CLIP of the height and only earlier
    points can be above it; `clipped` is then the highest value left out (None when none is)."""
    values = _finite(v for c in curves for v in c)
    if not values:
        return 0.0, 1.0, None
    low, high = min(values + _finite(below)), max(values)
    top = high
    if clip_head:
        tails = _finite(v for c in curves for v in c[len(c) // 2 :])
        scale = max((max(tails) if tails else high) - low, 0.02 * abs(low), 1e-9)
        if high - low > SQUASHED * scale:
            top = low + HEAD_CLIP * scale
    pad = 0.05 * (top - low) if top > low else max(0.05 * abs(low), 0.5)
    return low - pad, top + pad, high if top < high else None


def _x_limits(steps: list[int]) -> tuple[float, float]:
    first, last = min(steps), max(steps)
    pad = 0.02 * (last - first) if last > first else 1.0
    return first - pad, last + pad


def curves_figure(jobs: list[Job]) -> Figure | None:
    """Training and validation NLL against the step, one line per job, both panels on the same
    steps (x limits cover every logged step). Train: the EMA of `smoothing_weight(points)` (none
    for short curves), the logged points faint behind it when smoothed; y limits from the data
    (`y_limits`), only the first steps' NLL cut, with a note saying so. Val: every point shown."""
    keys = swept_keys(jobs)
    runs = [(j, j.events) for j in sort_jobs(jobs, keys)]
    runs = [(j, e) for j, e in runs if "train/nll" in e["scalars"] or "val/nll" in e["scalars"]]
    if not runs:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    plotted: tuple[list, list] = ([], [])  # the y values of each panel's lines
    raw_points: list[float] = []  # the logged training NLL drawn faintly behind its EMA
    steps: list[int] = []
    weights = set()
    for i, (job, events) in enumerate(runs):
        label, color = _label(job, keys), f"C{i % 10}"  # a job's colour in both panels
        if "train/nll" in events["scalars"]:
            x, y = events["steps"]["train/nll"], events["scalars"]["train/nll"]
            weight = smoothing_weight(len(y))
            weights.add(weight)
            if weight > 0:
                axes[0].plot(x, y, color=color, lw=0.8, alpha=0.25, label=f"_raw {label}")
                raw_points += y
                y = _ema(y, weight)
            axes[0].plot(x, y, color=color, marker="o" if weight == 0 else None, ms=2.5, label=label)
            plotted[0].append(y)
            steps += x
        if "val/nll" in events["scalars"]:
            x, y = events["steps"]["val/nll"], events["scalars"]["val/nll"]
            axes[1].plot(x, y, color=color, marker="o", ms=3, label=label)
            plotted[1].append(y)
            steps += x
    smoothing = ", ".join(f"{w:g}" for w in sorted(weights))
    names = (f"train/nll (EMA {smoothing})" if any(weights) else "train/nll (not smoothed)", "val/nll")
    for ax, name, curves, clip_head, below in zip(axes, names, plotted, (True, False), (raw_points, [])):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{name}, nats per image")
        ax.grid(alpha=0.3)
        ax.set_xlim(*_x_limits(steps))
        if curves:
            bottom, top, clipped = y_limits(curves, clip_head, below)
            ax.set_ylim(bottom, top)
            if clipped is not None:
                ax.text(0.98, 0.97, f"first steps above the axis (up to {clipped:.0f})", transform=ax.transAxes,
                        ha="right", va="top", fontsize=7, color="0.3")
    legend_ax = axes[1] if plotted[1] else axes[0]
    legend_ax.legend(fontsize=7, loc="upper right" if legend_ax is axes[1] else "center right")
    return fig


def plot_curves(jobs: list[Job], out: Path) -> Path | None:
    """`curves_figure`, saved to `out`."""
    fig = curves_figure(jobs)
    if fig is None:
        return None
    fig.savefig(out, dpi=110)
    return out


def plot_samples(jobs: list[Job], out: Path) -> Path | None:
    """The last `samples` grid of every job that logged one, titled by its swept values: one
    column per setting and one row per seed when seeds are swept, else rows of 6."""
    import matplotlib.image

    keys = swept_keys(jobs)
    grids = [(j, j.events["images"]["val/samples"][-1]) for j in sort_jobs(jobs, keys) if "val/samples" in j.events["images"]]
    if not grids:
        return None
    others = [k for k in keys if k != "seed"]
    settings = sorted({tuple(j.setting(k) for k in others) for j in jobs}, key=lambda t: [_sort_value(v) for v in t])
    if "seed" in keys and others and len(settings) <= MAX_COLUMNS:
        seeds = sorted({j.setting("seed") for j in jobs}, key=_sort_value)
        ncols, nrows = len(settings), len(seeds)
        cell = {id(j): seeds.index(j.setting("seed")) * ncols + settings.index(tuple(j.setting(k) for k in others)) for j, _ in grids}
    else:
        ncols = min(len(grids), 6)
        nrows = math.ceil(len(grids) / ncols)
        cell = {id(j): i for i, (j, _) in enumerate(grids)}
    fig = Figure(figsize=(2.3 * ncols, 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for job, (step, png) in grids:
        ax = axes[cell[id(job)]]
        ax.imshow(matplotlib.image.imread(io.BytesIO(png), format="png"), interpolation="nearest")
        ax.set_title(f"{_label(job, keys)}\nstep {step}", fontsize=7)
    fig.savefig(out, dpi=110)
    return out


def shared_settings(jobs: list[Job]) -> str:
    """The settings (the run's flat hparams, from its saved config) every finished job shares."""
    from omegaconf import OmegaConf

    from autoreg.hparams import flat_hparams

    settings = [
        flat_hparams(OmegaConf.load(j.path / ".hydra" / "config.yaml"), **{"data.source_used": j.events["hparams"].get("data.source_used")})
        for j in jobs
        if not j.failed and (j.path / ".hydra" / "config.yaml").is_file()
    ]
    if not settings:
        return ""
    swept = set(swept_keys(jobs))
    same = {k: v for k, v in settings[0].items() if k not in swept and all(s.get(k) == v for s in settings)}
    return ", ".join(f"{k}={v}" for k, v in sorted(same.items()))


def budget(jobs: list[Job]) -> str:
    done = [j for j in jobs if not j.failed]
    steps = sorted({int(j.metrics.get("global_step", 0)) for j in done})
    minutes = sum(j.metrics.get("train_seconds", 0) for j in done) / 60
    return f"{'/'.join(map(str, steps))} optimizer steps per job; {minutes:.1f} min of training (wall clock) in all ({len(done)} jobs)."


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise SystemExit(f"error: no jobs (*/.hydra/overrides.yaml) under {sweep_dir}; pass a multirun sweep dir")
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = [j for j in jobs if j.failed]
    keys = swept_keys(jobs)
    parts = [
        f"# Sweep report: {sweep_dir}",
        f"{len(jobs)} jobs, {len(failed)} failed. Swept: {', '.join(keys) or 'nothing'}.",
        f"Budget: {budget(jobs)}",
    ]
    settings = shared_settings(jobs)
    if settings:
        parts.append(f"Settings shared by all jobs: {settings}.")
    optuna_best = sweep_dir / "optimization_results.yaml"
    if optuna_best.is_file():
        parts.append(f"Optuna's best trial (`optimization_results.yaml`):\n```\n{optuna_best.read_text().strip()}\n```")
    parts += ["## Jobs", "Sorted by the swept keys; nats per image; bits/dim of the best val/nll.", table(jobs)]
    if "seed" in keys and len(keys) > 1 and len(failed) < len(jobs):
        parts += ["## Mean over seeds", seed_table(jobs)]
    quality = quality_section(jobs)
    if quality:
        parts += ["## Sample quality against the likelihood", quality]
    figures = [
        ("val/nll against the swept keys", plot_against_keys(jobs, out_dir / "val_nll.png")),
        ("Learning curves", plot_curves(jobs, out_dir / "curves.png")),
        ("Samples: the last grid of each job", plot_samples(jobs, out_dir / "samples.png")),
    ]
    for title, path in figures:
        if path is not None:
            parts += [f"## {title}", f"![{title}]({path.name})"]
    if failed:
        parts += ["## Failed jobs", "\n".join(f"- `{j.path.name}`: {j.failure}" for j in failed)]
    report = out_dir / "report.md"
    report.write_text("\n\n".join(parts) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, help="directory for report.md and its PNGs (default: the sweep dir)")
    args = parser.parse_args(argv)
    print(write_report(args.sweep_dir, args.out))


if __name__ == "__main__":
    main()
