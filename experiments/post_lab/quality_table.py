"""The sample-quality table of experiments/post_lab/report.md, from the re-run sweeps (quality.sh):
one row per setting with best val/nll and the scores of its best.ckpt (best_quality.json, written by
`python -m autoreg.analysis.quality`), the Spearman correlation of each score with val/nll per sweep,
and samples.png: the first 16 scored samples of every setting, side by side.

    .venv/bin/python experiments/post_lab/quality_table.py > experiments/post_lab/quality/table.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.image
from matplotlib.figure import Figure

from autoreg.analysis.report import read_jobs, spearman

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "quality"
# sweep -> (its dir under outputs/multirun for training seed 0; seed 1's adds "_seed1", the swept key)
SWEEPS = {
    "depth": ("quality_depth_sweep", "model.depth"),
    "kernel": ("quality_kernel_sweep", "model.kernel"),
    "Row LSTM": ("quality_rnn_cell_sweep", "model.cell"),
    "Diagonal BiLSTM": ("quality_dbilstm_sweep", "model.cell"),
}
LAB_RUNS = ROOT / "outputs/runs"  # python train.py +experiment=lab: the lab's network after its default training
SCORES = (("val/fid", "FID", ".1f"), ("val/classifier_score", "classifier score", ".2f"),
          ("val/memorisation", "memorisation", ".3f"))


def scored(sweep_dir: Path, key: str) -> dict[str, tuple[dict, Path]]:
    """Setting value -> (metrics.json merged with best_quality.json, the scored samples' PNG)."""
    out = {}
    for job in read_jobs(sweep_dir):
        path = job.path / "checkpoints" / "best_quality.json"
        if job.metrics and path.is_file():
            out[job.overrides[key]] = ({**job.metrics, **json.loads(path.read_text())}, path.with_suffix(".png"))
    return out


def lab_reference() -> tuple[dict, Path] | None:
    """The newest scored `+experiment=lab` run (its metrics.json merged with best_quality.json), if any."""
    for run in sorted(LAB_RUNS.glob("*_+experiment=lab"), reverse=True):
        path, metrics = run / "checkpoints" / "best_quality.json", run / "metrics.json"
        if path.is_file() and metrics.is_file():
            return {**json.loads(metrics.read_text()), **json.loads(path.read_text())}, path.with_suffix(".png")
    return None


def rows(suffix: str = "") -> list[tuple[str, str, dict, Path]]:
    """(sweep, setting, scores, samples PNG) of every scored job of the sweeps `SWEEPS` names, with
    `suffix` on their dirs ("_seed1": training seed 1)."""
    found = {sweep: scored(ROOT / "outputs/multirun" / f"{name}{suffix}", key) for sweep, (name, key) in SWEEPS.items()}
    if "4" in found["depth"]:  # kernel=3 at 4 blocks is the depth sweep's depth=4 job (the same configuration)
        found["kernel"]["3"] = found["depth"]["4"]
    return [(sweep, f"{key.split('.')[-1]}={value}", *found[sweep][value])
            for sweep, (_, key) in SWEEPS.items()
            for value in sorted(found[sweep], key=lambda v: (len(v), v))]  # 2 < 12; gru < lstm


def table_row(sweep: str, setting: str, m: dict) -> str:
    return (f"| {sweep} | {setting} | {m['params']:,.0f} | {m['best/val/nll']:.2f} | "
            + " | ".join(format(m[k], f) for k, _, f in SCORES) + " |")


def sampling_spread(table: list[tuple[str, str, dict, Path]]) -> None:
    """Each checkpoint scored with sampling seeds 0 (the table), 1 and 2 (best_quality_seed<k>.json)."""
    lines = []
    for sweep, setting, m, png in table:
        seeds = [m] + [json.loads(p.read_text()) for k in (1, 2) if (p := png.with_name(f"best_quality_seed{k}.json")).is_file()]
        if len(seeds) == 3:
            lines.append(f"| {sweep}, {setting} | " + " | ".join(" / ".join(format(s[k], f) for s in seeds) for k, _, f in SCORES[:2]) + " |")
    if lines:
        print()
        print("Sampling spread: the same checkpoints scored with sampling seeds 0 (above), 1 and 2:")
        print()
        print("| setting | FID, seeds 0 / 1 / 2 | classifier score, seeds 0 / 1 / 2 |")
        print("|---|---|---|")
        print("\n".join(lines))


def seed_table(table: list[tuple[str, str, dict, Path]]) -> None:
    """Training seed 0 (the main table) beside training seed 1, for the sweeps re-run with seed=1."""
    lines, means = [], {}
    second = {(sweep, setting): m for sweep, setting, m, _ in rows("_seed1")}
    for sweep, setting, m, _ in table:
        if (sweep, setting) in second:
            m1 = second[sweep, setting]
            means.setdefault(sweep, []).append([(m[k] + m1[k]) / 2 for k in ("best/val/nll", "val/fid", "val/classifier_score")])
            lines.append(f"| {sweep} | {setting} | {m['best/val/nll']:.2f} / {m1['best/val/nll']:.2f} | "
                         + " | ".join(f"{format(m[k], f)} / {format(m1[k], f)}" for k, _, f in SCORES[:2]) + " |")
    if lines:
        print()
        print("| sweep | setting | best val/nll, training seeds 0 / 1 | FID, seeds 0 / 1 | classifier score, seeds 0 / 1 |")
        print("|---|---|---|---|---|")
        print("\n".join(lines))
        print()
        print("| sweep (mean of the two training seeds) | settings | Spearman rho (val/nll, FID) | (val/nll, classifier score) |")
        print("|---|---|---|---|")
        for sweep, part in means.items():
            nll, fid, score = zip(*part)
            if len(part) > 1:
                print(f"| {sweep} | {len(part)} | {spearman(nll, fid):+.2f} | {spearman(nll, score):+.2f} |")


def samples_figure(table: list[tuple[str, str, dict, Path]], out: Path) -> None:
    """The top-left 4x4 samples of each setting's scored grid (64 samples, 8 per row, pixels 2x2),
    7 settings per row."""
    cols = min(7, len(table))
    rows = -(-len(table) // cols)
    fig = Figure(figsize=(1.6 * cols, 2.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes[len(table):]:
        ax.axis("off")
    for ax, (sweep, setting, _, png) in zip(axes, table):
        grid = matplotlib.image.imread(png)
        cell = (grid.shape[0] - 2 * 2) // 8  # make_grid: 2-pixel padding, then scaled by 2
        ax.imshow(grid[: 4 * cell + 4, : 4 * cell + 4], cmap="gray", interpolation="nearest")
        ax.set_title(f"{sweep}\n{setting}", fontsize=8)
        ax.axis("off")
    fig.savefig(out, dpi=110)


def main() -> None:
    table = rows()
    if not table:
        sys.exit("error: no scored jobs: run experiments/post_lab/quality.sh first")
    ref = table[0][2]
    print("| sweep | setting | params | best val/nll | " + " | ".join(t for _, t, _ in SCORES) + " |")
    print("|---|---|---|---|" + "---|" * len(SCORES))
    print("| reference | 400 held-out digits | | | " + " | ".join(format(ref["reference/" + k.split("/")[1]], f) for k, _, f in SCORES) + " |")
    lab = lab_reference()
    lab_rows = [("lab network", "default training", *lab)] if lab else []
    if lab:
        print(table_row("reference", "the lab's network, default training", lab[0]))
    for sweep, setting, m, _ in table:
        print(table_row(sweep, setting, m))
    print()
    print("| sweep | settings | Spearman rho (val/nll, FID) | (val/nll, classifier score) |")
    print("|---|---|---|---|")
    distinct = {m["params"]: m for _, _, m, _ in table}  # kernel=3 is depth=4: counted once
    for sweep, part in [*((s, [m for t, _, m, _ in table if t == s]) for s in SWEEPS),
                        ("all distinct settings", list(distinct.values()))]:
        nll = [m["best/val/nll"] for m in part]
        if len(part) < 2:
            continue
        print(f"| {sweep} | {len(part)} | {spearman(nll, [m['val/fid'] for m in part]):+.2f} | "
              f"{spearman(nll, [m['val/classifier_score'] for m in part]):+.2f} |")
    print()
    print(f"Classifier test accuracy {ref['reference/classifier_test_accuracy']:.4f}; scoring took "
          f"{min(m['quality_seconds'] for *_, m, _ in table):.1f}-{max(m['quality_seconds'] for *_, m, _ in table):.1f} s per checkpoint.")
    sampling_spread(lab_rows + table)
    seed_table(table)
    OUT.mkdir(parents=True, exist_ok=True)
    samples_figure(table + lab_rows, OUT / "samples.png")


if __name__ == "__main__":
    main()
