"""score.py's task: the exact likelihood of images under a trained model, per image and per pixel.

    python score.py ckpt=<.ckpt or shipped name> input=<PNG or dir of PNGs>
    python score.py ckpt=<.ckpt or shipped name> split=test num=1000 [data_root=<dir>]

An autoregressive model gives log p(x) = sum_i log p(x_i | x_<i) exactly (van den Oord et al. 2016,
"Pixel Recurrent Neural Networks", eq. 1), so each image gets its NLL in nats and bits/dim and each
pixel its share, -log p(x_i | x_<i): the pixels the model found surprising. Per-image likelihoods
are what likelihood-based anomaly and out-of-distribution detection score with (Nalisnick et al.
2019, "Do Deep Generative Models Know What They Don't Know?", shows where that fails;
experiments/density measures it here). A class-conditional model also gives log p(x) = logsumexp_y
[log p(x | y) + log p(y)], a uniform prior p(y), and the most likely class.

Writes a CSV (one row per image) and a PNG grid of images beside their per-pixel NLL maps, and logs
a summary. The numbers come from `autoreg.api.Model.score`, the same function Python users call.
Every bad value or input is one line, before anything is written.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import textwrap
from pathlib import Path

from omegaconf import DictConfig

from autoreg.checks import check_choice, check_int, require_int
from autoreg.config import SPLITS
from autoreg.errors import ConfigError, DataError, OutputError, UserError, exit_with_one_line

log = logging.getLogger("autoreg")

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
GRID_COLUMNS = 4  # image/heatmap pairs per row of the PNG
HEATMAP = "inferno"


def check_config(cfg: DictConfig) -> None:
    """The keys that need no model, torch-free: answered before torch is imported."""
    if not cfg.ckpt:
        raise ConfigError("ckpt= is required: a checkpoint (e.g. outputs/runs/<run>/checkpoints/best.ckpt) or a shipped model's name")
    if (cfg.input is None) == (cfg.split is None):
        raise ConfigError("say what to score: input=<PNG file or directory> or split=<train|val|test> [num=N]")
    if cfg.split is not None:
        check_choice(cfg, "split", SPLITS)
        if cfg.label is not None:
            raise ConfigError("label= is for input= PNGs; images of split= keep their own labels")
    if cfg.num is not None:
        if cfg.split is None:
            raise ConfigError("num= takes the first num images of split=; input= scores every PNG it names")
        check_int(cfg, "num")
    if cfg.label is not None:
        require_int("label", cfg.label, minimum=0)
    check_int(cfg, "grid", minimum=0)
    check_int(cfg, "batch_size")
    check_choice(cfg, "device", ("auto", "cpu", "cuda"))
    if cfg.out is not None and not str(cfg.out).endswith(".csv"):
        raise ConfigError(f"out={cfg.out} is invalid: it must be a .csv path (the grid goes beside it as .png)")


def score(cfg: DictConfig) -> tuple[Path, Path | None]:
    """Score `cfg.input` or a split with `cfg.ckpt`; write the CSV and the grid; return their paths."""
    import torch

    from autoreg.api import Model
    from autoreg.compression.images import input_paths, read_pngs, split_images
    from autoreg.module import AutoregressiveModule
    from autoreg.sample_cli import resolve_device

    check_config(cfg)
    device = resolve_device(cfg)
    model = Model(AutoregressiveModule.from_checkpoint(cfg.ckpt, map_location=device, key="ckpt")).to(device)
    classes = model.num_classes
    if cfg.label is not None and not classes:
        raise ConfigError(f"label={cfg.label} needs a class-conditional model; this checkpoint's model is unconditional")
    if cfg.label is not None and cfg.label >= classes:
        raise ConfigError(f"label={cfg.label} is invalid: it must be a class in 0..{classes - 1}")
    if cfg.split is not None:
        try:
            images, labels = split_images(model.module, cfg.split, cfg.num, cfg.data_root)
        except DataError as err:  # it names the data config's key; here the directory is data_root=
            raise DataError(f"{err} (score.py: data_root=<dir>)") from None
        names, what = [str(i) for i in range(len(images))], f"{cfg.split} split"
    else:
        paths = input_paths(str(cfg.input))
        images = read_pngs(paths, model.image_shape, model.distribution.levels)
        labels = torch.full((len(images),), cfg.label) if cfg.label is not None else None
        names, what = [str(p) for p in paths], str(cfg.input)
    if classes and labels is None:
        log.info("no labels: nll, bits/dim and the heatmaps of each image are given its most likely class")
    scores = model.score(images, labels, batch_size=cfg.batch_size, progress=cfg.progress)

    ckpt = Path(cfg.ckpt)
    out = Path(cfg.out) if cfg.out else ckpt.with_name(f"{ckpt.stem}_scores_{_stem(cfg)}.csv")
    grid = out.with_suffix(".png") if cfg.grid else None
    files = {out: csv_text(names, scores, "index" if cfg.split is not None else "file").encode()}
    if grid is not None:
        shown = slice(0, cfg.grid)
        figure = heatmap_figure(images[shown].float() / (model.distribution.levels - 1), scores.pixel_nll[shown],
                                _titles(names[shown], scores, shown), title=f"{cfg.ckpt}: {what}")
        files[grid] = _png_bytes(figure)
    _write_all(files)
    for line in summary(scores, what, classes, bool(classes) and labels is not None):
        log.info(line)
    log.info("wrote %s (one row per image)%s", out, f" and {grid} ({_count(min(cfg.grid, len(images)))}, each "
             "beside its per-pixel NLL)" if grid else "")
    return out, grid


def _stem(cfg: DictConfig) -> str:
    return cfg.split if cfg.split is not None else (Path(str(cfg.input)).stem or "input")


def csv_text(names: list[str], scores, first: str) -> str:
    """One row per image: its file (or index), NLL in nats and bits/dim; a conditional model's
    label (the one the NLL is given), log p(x) over the classes and the most likely class."""
    conditional = scores.labels is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([first, *(["label"] if conditional else []), "nll_nats", "bits_per_dim",
                     *(["log_px_nats", "most_likely_class"] if conditional else [])])
    for i, name in enumerate(names):
        row = [name, f"{scores.nll[i]:.5f}", f"{scores.bpd[i]:.6f}"]
        if conditional:
            row[1:1] = [int(scores.labels[i])]
            row += [f"{scores.log_px[i]:.5f}", int(scores.most_likely[i])]
        writer.writerow(row)
    return buffer.getvalue()


def summary(scores, what: str, classes: int | None, labelled: bool) -> list[str]:
    """Count, mean and quantiles of the NLL (and, conditional, of -log p(x) and the classes' agreement)."""
    import torch

    q = torch.tensor(QUANTILES, dtype=torch.float64)

    def spread(values) -> str:
        cuts = torch.quantile(values.double(), q).tolist()
        return "  ".join(f"{name} {value:.2f}" for name, value in zip(("min", "5%", "25%", "median", "75%", "95%", "max"), cuts))

    lines = [f"scored {_count(len(scores.nll))} ({what}): NLL mean {scores.nll.double().mean():.3f} nats per image, "
             f"{scores.bpd.double().mean():.5f} bits/dim" + (" (given each image's label)" if labelled else ""),
             f"  NLL quantiles (nats): {spread(scores.nll)}"]
    if classes:
        lines.append(f"  -log p(x) over the {classes} classes (uniform prior): mean {-scores.log_px.double().mean():.3f} nats; "
                     f"quantiles {spread(-scores.log_px)}")
        if labelled:
            agree = (scores.most_likely == scores.labels).double().mean()
            lines.append(f"  most likely class = label for {100 * agree:.1f}% of the images")
    return lines


def _count(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


def _titles(names: list[str], scores, shown: slice) -> list[str]:
    titles = []
    for i, name in enumerate(names, start=shown.start):
        label = f", y={int(scores.labels[i])}" if scores.labels is not None else ""
        titles.append(f"{Path(name).name}{label}\n{scores.nll[i]:.1f} nats ({scores.bpd[i]:.3f} bpd)")
    return titles


def heatmap_figure(images, maps, titles: list[str], title: str = ""):
    """Each image (N, C, H, W) in [0, 1] beside its per-pixel NLL map (N, H, W), on one colour
    scale for all maps (0 to the largest value; square-root, so that the many small values stay
    visible beside a few large ones), with its colour bar and a legend."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(n, GRID_COLUMNS)
    rows = -(-n // cols)
    width = 2.6 * cols + 1.2
    fig = Figure(figsize=(width, 1.55 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    norm = PowerNorm(0.5, 0.0, max(float(maps.max()), 1e-6))
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        row, (col, heat) = k // (2 * cols), divmod(k % (2 * cols), 2)
        i = row * cols + col
        if i >= n:
            continue
        if heat:
            ax.imshow(maps[i].numpy(), cmap=HEATMAP, norm=norm, interpolation="nearest")
        else:
            picture = images[i].permute(1, 2, 0).numpy()
            ax.imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(titles[i], fontsize=7, loc="left")
    fig.colorbar(ScalarMappable(norm, HEATMAP), ax=axes, shrink=0.8, label="NLL per pixel (nats)")
    formula = "-log p(x_i | x_<i)".replace(" ", "\u00a0")  # wrapped as one word
    legend = f"each image (left) beside its per-pixel NLL {formula} (right; square-root colour scale), which sums to the image's NLL"
    fig.suptitle("\n".join([title, *textwrap.wrap(legend, int(15 * width))]), fontsize=8)
    return fig


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _write_all(files: dict[Path, bytes]) -> None:
    """Every file or none: each is written to a temporary beside it, then all are renamed into place."""
    temporary = {path: path.with_name(f".{path.name}.tmp") for path in files}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary[path].write_bytes(data)
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    except OSError as err:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
        raise OutputError(f"out={next(iter(files))} cannot be written ({err.strerror or err}); pick another path") from None


def score_main(cfg: DictConfig) -> None:
    """score.py's task: the config's own checks first, without torch, then `score` with one-line errors."""
    try:
        check_config(cfg)
    except UserError as err:
        exit_with_one_line(err)
    from autoreg.cli import run

    run(score, cfg)
