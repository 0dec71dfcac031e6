"""Likelihood as an anomaly detector: the benchmark's test digits against distorted copies of them.

The shipped `paper_mnist_gated_pixelcnn` (trained on binarized MNIST, the fixed binarization of
Larochelle & Murray 2011) scores the test split and the same digits rotated, inverted, with pixels
flipped, shifted, shrunk and blanked, through `Model.score` (what score.py writes). For each
distortion: the NLL's mean and median, and the ROC AUC of the NLL alone as a detector (a higher NLL
says "distorted"; 0.5 is chance, below 0.5 the distorted digits look *more* likely than the real
ones). Nalisnick et al. 2019 ("Do Deep Generative Models Know What They Don't Know?") found
likelihood models giving simpler out-of-distribution data higher likelihood; the second AUC is
Serra et al. 2020's correction for that ("Input complexity and out-of-distribution detection with
likelihood-based generative models"): the NLL in bits minus the image's length under a generic
compressor (here a 1-bit PNG).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/density/run.py [--num 10000] [--root ../shared/data/binarized_mnist]

Writes results.md (the table and the machine), histograms.png (the NLL histograms, one panel per
distortion over the real digits') and examples.png (one digit per distortion beside its per-pixel
NLL) into experiments/density/.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

import autoreg
from autoreg.compression.images import png_bytes, split_images
from autoreg.score_cli import heatmap_figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
from common import Machine  # noqa: E402

MODEL = "paper_mnist_gated_pixelcnn"
SEED = 0


def flip(p: float):
    """Each pixel flipped with probability p (salt-and-pepper noise on binary images)."""
    def distort(x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(SEED)) < p
        return x ^ noise.to(x.dtype)
    return distort


def shift(k: int):
    """Moved k pixels right and k down, the vacated border black."""
    return lambda x: F.pad(x, (k, 0, k, 0))[:, :, :28, :28]


def half_size(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooled (strokes kept) to 14x14 and centred on a black 28x28 canvas."""
    return F.pad(F.max_pool2d(x.float(), 2), (7, 7, 7, 7)).to(x.dtype)


DISTORTIONS = {
    "rotated 90 degrees": lambda x: torch.rot90(x, 1, (2, 3)),
    "inverted (1 - x)": lambda x: 1 - x,
    "noise: 1% of pixels flipped": flip(0.01),
    "noise: 10% of pixels flipped": flip(0.10),
    "shifted 2 px right and down": shift(2),
    "shifted 6 px right and down": shift(6),
    "half size, centred": half_size,
    "blank (all black)": torch.zeros_like,
}


def png_bits(images: torch.Tensor) -> torch.Tensor:
    """Each image's length as an optimised 1-bit PNG, in bits: a generic compressor's complexity."""
    return torch.tensor([8.0 * len(png_bytes(image, 2)) for image in images], dtype=torch.float64)


def auroc(clean: torch.Tensor, distorted: torch.Tensor) -> float:
    """ROC AUC of `score` (higher: distorted) separating the distorted images from the clean ones."""
    scores = torch.cat([clean, distorted]).double()
    # into [0, 1] by a monotone map: torchmetrics reads scores outside it as logits and squashes
    # them with a sigmoid, which ties every NLL above ~40 at 1.0
    scores = (scores - scores.min()) / (scores.max() - scores.min()).clamp(min=1e-12)
    target = torch.cat([torch.zeros(len(clean)), torch.ones(len(distorted))]).long()
    return float(binary_auroc(scores, target))


def histogram_figure(nll: dict[str, torch.Tensor], aucs: dict[str, float]):
    """One panel per distortion: its NLL histogram over the real digits', on one log axis."""
    from matplotlib.figure import Figure

    clean = nll["test digits"]
    everything = torch.cat(list(nll.values()))
    bins = torch.logspace(math.log10(float(everything.min()) * 0.9), math.log10(float(everything.max()) * 1.1), 80).numpy()
    fig = Figure(figsize=(13, 6.2), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True)
    for ax, name in zip(axes.flat, DISTORTIONS):
        ax.hist(clean.numpy(), bins=bins, color="0.55", alpha=0.8, label="test digits")
        ax.hist(nll[name].numpy(), bins=bins, color="tab:red", alpha=0.6, label="distorted")
        ax.set_xscale("log")
        ax.set_title(f"{name}\nAUC {aucs[name]:.3f}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("NLL (nats per image, log scale)", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{MODEL} on {len(clean)} binarized MNIST test digits and distorted copies: "
                 "NLL histograms (ROC AUC of the NLL as the detector)", fontsize=10)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "binarized_mnist"), help="the .amat files")
    parser.add_argument("--num", type=int, default=10000, help="test digits (a random subset when fewer than 10000)")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = Machine()
    out = Path(args.out)

    model = autoreg.load(MODEL)
    images, _ = split_images(model.module, "test", None, args.root)
    if args.num < len(images):  # the split is grouped by digit: a random subset, not the first ones
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))[: args.num]]
    sets = {"test digits": images, **{name: distort(images) for name, distort in DISTORTIONS.items()}}

    cpu, wall = time.process_time(), time.perf_counter()
    scores = {name: model.score(x, batch_size=250, progress=True) for name, x in sets.items()}
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    nll = {name: s.nll.double() for name, s in scores.items()}
    # NLL in bits minus the PNG length in bits (Serra et al. 2020, eq. 5)
    corrected = {name: nll[name] / math.log(2) - png_bits(x) for name, x in sets.items()}
    clean = "test digits"
    aucs = {name: auroc(nll[clean], nll[name]) for name in DISTORTIONS}
    aucs_corrected = {name: auroc(corrected[clean], corrected[name]) for name in DISTORTIONS}

    lines = [f"`{MODEL}` on {len(images)} test digits of binarized MNIST (the fixed binarization, "
             f"{'the whole split' if len(images) == 10000 else f'a random subset, seed {SEED}'}) and distorted copies of them.",
             "", "| images | mean NLL (nats) | median NLL | bits/dim (mean) | ROC AUC, NLL | ROC AUC, NLL - PNG bits |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in sets:
        s = scores[name]
        auc = "" if name == clean else f"{aucs[name]:.3f}"
        auc_c = "" if name == clean else f"{aucs_corrected[name]:.3f}"
        lines.append(f"| {name} | {nll[name].mean():.2f} | {nll[name].median():.2f} | {s.bpd.double().mean():.4f} | {auc} | {auc_c} |")
    lines += ["", f"Scoring {sum(len(x) for x in sets.values())} images took {cpu:.0f} s of CPU ({wall:.0f} s wall): "
              f"{1000 * cpu / sum(len(x) for x in sets.values()):.2f} ms of CPU per image; {machine.line()}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    histogram_figure(nll, aucs).savefig(out / "histograms.png", dpi=110)
    example = {name: x[:1] for name, x in sets.items()}  # the first digit under every distortion
    heat = torch.cat([scores[name].pixel_nll[:1] for name in sets])
    titles = [f"{name}\n{scores[name].nll[0]:.1f} nats" for name in sets]
    heatmap_figure(torch.cat(list(example.values())).float(), heat, titles, title=MODEL).savefig(out / "examples.png", dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
