"""Sampling speed: naive (a full forward pass per pixel) vs fast (cached columns, exact).

Each model draws `--batch` 28x28 binary images (Bernoulli head) from randomly initialised
weights (the time does not depend on the weights). Both samplers draw from the same seed; the
table's last column checks that they returned the same images. Fast is the median of `--repeats`
runs after one warm-up run; naive runs once, between the first and the second fast run, so that
on a shared CPU both see the same load. Naive runs in full unless `--naive-rows R` is given, in
which case it is timed on the first R rows and scaled by 28 / R (the table header then says so).

    .venv/bin/python experiments/benchmarks/sampling_speed.py
    .venv/bin/python experiments/benchmarks/sampling_speed.py --naive-rows 4 --out results.md
    .venv/bin/python experiments/benchmarks/sampling_speed.py --models row_lstm

Models (`MODELS` below, selected by key with `--models`; a new family with a fast path adds a line):
- lab: the lab's network (DESIGN `+experiment=lab`): 7x7 mask A, five 7x7 mask-B layers with
  ReLUs, 64 channels, one 1x1 output layer.
- default: the default PixelCNN: 64 channels, four residual blocks with 3x3 convolutions, a
  two-layer output head.
- row_lstm: the default PixelRNN (autoreg/families/pixelrnn.py): Row LSTM, LSTM cells, 32 channels
  (h = 16), two residual layers with k = 3, a two-layer output head.
- gated: the default Gated PixelCNN (autoreg/families/gated_pixelcnn.py): 24 channels, four gated
  layers with k = 5, a two-layer output head.
- pixelcnn_pp: the default PixelCNN++ (autoreg/families/pixelcnn_pp.py): 32 channels, two gated
  resnet blocks per resolution and stream, three resolutions (28, 14, 7).
- pixelsnail: the default PixelSNAIL (autoreg/families/pixelsnail.py): two blocks of two gated
  resnet blocks per stream (16 channels) and a causal attention block (16 key and 16 value
  features over 2 heads).
The issues' targets (2-core CPU, batch 16): lab >= 100x, default >= 30x, row_lstm >= 10x, gated >= 30x,
pixelcnn_pp >= 50x, pixelsnail >= 30x.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from autoreg.distributions import Bernoulli
from autoreg.families import build_model
from autoreg.sampling import sample

from common import Machine, write_results

SIZE = 28
MODELS = {  # key: (table label, model config)
    "lab": (
        "PixelCNN lab (7x7, 5 B layers, 64 ch)",
        {"name": "pixelcnn", "channels": 64, "depth": 5, "kernel": 7, "first_kernel": 7, "residual": False, "head_layers": 1},
    ),
    "default": (
        "PixelCNN default (3x3, 4 residual, 64 ch)",
        {"name": "pixelcnn", "channels": 64, "depth": 4, "kernel": 3, "residual": True, "head_layers": 2},
    ),
    "row_lstm": (
        "PixelRNN default (Row LSTM, lstm, k=3, 2 layers, 32 ch)",
        {"name": "pixelrnn", "arch": "row_lstm", "cell": "lstm", "depth": 2, "channels": 32, "kernel": 3, "head_layers": 2},
    ),
    "diagonal_bilstm": (
        "PixelRNN Diagonal BiLSTM (lstm, 2 layers, 32 ch)",
        {"name": "pixelrnn", "arch": "diagonal_bilstm", "cell": "lstm", "depth": 2, "channels": 32, "head_layers": 2},
    ),
    "gated": (
        "Gated PixelCNN default (k=5, 4 layers, 24 ch)",
        {"name": "gated_pixelcnn", "channels": 24, "depth": 4, "kernel": 5, "head_layers": 2},
    ),
    "pixelcnn_pp": (
        "PixelCNN++ default (nr_resnet=2, 32 ch, 3 resolutions)",
        {"name": "pixelcnn_pp", "nr_resnet": 2, "channels": 32},
    ),
    "pixelsnail": (
        "PixelSNAIL default (depth 2, nr_resnet 2, 16 ch, 2 heads)",
        {"name": "pixelsnail"},
    ),
}


def _time(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed fast runs (median)")
    parser.add_argument("--naive-rows", type=int, default=None, help="time naive on this many rows and extrapolate")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="which models to time (default: all)"
    )
    args = parser.parse_args()
    machine = Machine()

    rows = args.naive_rows or SIZE
    naive_header = "naive s" if rows == SIZE else f"naive s (timed on {rows}/{SIZE} rows, x{SIZE / rows:g})"
    lines = [
        f"| model | batch | {naive_header} | fast s | speed-up | same images |",
        "|---|---|---|---|---|---|",
    ]
    print(lines[0] + "\n" + lines[1], flush=True)
    for key in args.models:
        name, model_cfg = MODELS[key]
        torch.manual_seed(0)
        model = build_model(model_cfg, (1, SIZE, SIZE), Bernoulli())
        noise = torch.rand((args.batch, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
        sample(model, args.batch, noise=noise)  # warm-up
        fast_runs = [_time(lambda: sample(model, args.batch, noise=noise))]
        fast = fast_runs[0][1]
        if rows == SIZE:
            naive_s, naive = _time(lambda: sample(model, args.batch, method="naive", noise=noise))
            same = "yes" if torch.equal(naive, fast) else "NO"
        else:
            # Rows below `rows` are given (from the fast sample), so naive draws only the first ones.
            given = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
            given[..., rows:, :] = True
            part_s, naive = _time(
                lambda: sample(model, method="naive", noise=noise, known=fast, known_mask=given)
            )
            naive_s = part_s * SIZE / rows
            same = "yes" if torch.equal(naive, fast) else "NO"
        fast_runs += [_time(lambda: sample(model, args.batch, noise=noise)) for _ in range(args.repeats - 1)]
        fast_s = statistics.median(t for t, _ in fast_runs)
        line = f"| {name} | {args.batch} | {naive_s:.1f} | {fast_s:.3f} | {naive_s / fast_s:.0f}x | {same} |"
        lines.append(line)
        print(line, flush=True)
    setup = f"fast = median of {args.repeats} runs, " + machine.line()
    print(setup)
    write_results(args.out, "Sampling speed", [*lines, "", setup])


if __name__ == "__main__":
    main()
