"""Lossless compression of test images with trained models, against their NLL and general-purpose
compressors (autoreg.compression; `python compress.py`).

For each checkpoint: its dataset's first `--num` test images (binarized MNIST: the static
binarization `val/nll` and `test/nll` use) are compressed and decompressed through
autoreg.compression, exactly as compress.py does; the round trip is checked; the file's size is
set against the model's NLL on the same images (a full forward pass, as `test/nll`). For the first
checkpoint the same images are also stored as PNG (one optimised file per image, 1-bit for binary
images) and as one array compressed by gzip, bzip2 and xz (each of one byte per pixel and of
8 pixels per byte, the smaller shown).

    PIXELCNN=outputs/compression/pixelcnn/checkpoints/best.ckpt
    .venv/bin/python experiments/compression/measure.py \\
        --ckpt $PIXELCNN --num 500 --method auto \\
        --ckpt $PIXELCNN --num 5 --method fast --ckpt $PIXELCNN --num 5 --method naive \\
        --ckpt outputs/compression/diagonal_bilstm/checkpoints/best.ckpt --num 5 --method auto \\
        --out experiments/compression/results.md

(the same PixelCNN on 5 images by both paths, to say what the naive path costs; the Diagonal
BiLSTM has only that one).

Times are wall-clock on whatever machine runs it, with `--threads` torch threads; the line under
the tables says what and under how much load.
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autoreg.compression import HEADER_BYTES, compress, decompress, png_bytes, split_images
from autoreg.module import AutoregressiveModule
from autoreg.sampling import resolve_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import Machine  # noqa: E402

DESCRIBE = ("arch", "cell", "depth", "kernel", "channels")  # the model keys a table row names


def general_purpose(images: torch.Tensor, levels: int) -> list[tuple[str, int]]:
    """(name, bytes) of the images stored by PNG, gzip, bzip2 and xz."""
    array = images.numpy()
    layouts = {"one byte per pixel": array.tobytes()}
    if levels == 2:
        layouts["8 pixels per byte"] = np.packbits(array).tobytes()
    rows = [(f"raw ({math.log2(levels):.0f} bit/sub-pixel)", math.ceil(array.size * math.log2(levels) / 8)),
            ("PNG (one optimised file per image{})".format(", 1-bit" if levels == 2 else ""),
             sum(len(png_bytes(image, levels)) for image in images))]
    for name, squeeze in (("gzip -9", lambda b: gzip.compress(b, 9)), ("bzip2 -9", lambda b: bz2.compress(b, 9)),
                          ("xz -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))):
        sizes = {layout: len(squeeze(data)) for layout, data in layouts.items()}
        best = min(sizes, key=sizes.get)
        rows.append((f"{name} of all images ({best})", sizes[best]))
    return rows


def measure(ckpt: str, num: int, method: str, batch_size: int) -> dict:
    module = AutoregressiveModule.from_checkpoint(ckpt)
    net = module.net
    images, labels = split_images(module, "test", num)
    labels = labels if net.num_classes else None
    levels = net.distribution.levels
    with torch.no_grad():
        x = images.float() / (levels - 1)
        nll_bits = float(module.eval().nll(x, labels).sum()) / math.log(2)
    method = resolve_method(net, method)
    data, encoding = compress(module, images, labels, method=method, batch_size=batch_size)
    decoded, decoded_labels, decoding = decompress(module, data)
    exact = torch.equal(decoded, images) and (labels is None or torch.equal(decoded_labels.long(), labels.long()))
    hp = module.hparams.model
    return {
        "model": f"{hp['name']} ({', '.join(f'{k} {hp[k]}' for k in DESCRIBE if k in hp)}{', conditional' if hp.get('conditional') else ''})",
        "method": method, "num": len(images), "dims": math.prod(net.image_shape), "levels": levels,
        "images": images, "nll_bits": nll_bits, "label_bits": len(images) * math.log2(net.num_classes) if labels is not None else 0.0,
        "bytes": len(data), "encode_s": encoding.seconds, "decode_s": decoding.seconds, "exact": exact,
        "step": torch.load(ckpt, map_location="cpu", weights_only=True).get("global_step"),
    }


def size_table(first: dict) -> list[str]:
    n, dims = first["num"], first["dims"]
    bound_bits = first["nll_bits"] + first["label_bits"]
    rows = general_purpose(first["images"], first["levels"])
    lines = ["| how | bytes | bits/image | bits/dim | vs the model's NLL |", "|---|---|---|---|---|"]
    for name, size in rows:
        lines.append(f"| {name} | {size:,} | {8 * size / n:.1f} | {8 * size / (n * dims):.4f} | {8 * size / bound_bits:.2f}x |")
    lines.append(f"| the model's NLL, -log2 p(x) (a full forward pass, as `test/nll`) | {bound_bits / 8:,.1f} | "
                 f"{bound_bits / n:.2f} | {bound_bits / (n * dims):.4f} | 1 |")
    payload = first["bytes"] - HEADER_BYTES
    lines.append(f"| **compress.py** (payload + {HEADER_BYTES}-byte header) | **{first['bytes']:,}** | {8 * first['bytes'] / n:.2f} | "
                 f"{8 * first['bytes'] / (n * dims):.4f} | payload {100 * (8 * payload / bound_bits - 1):+.3f}%, "
                 f"file {100 * (8 * first['bytes'] / bound_bits - 1):+.3f}% |")
    return lines


def results_table(results: list[dict]) -> list[str]:
    lines = ["| model (checkpoint step) | path | images | NLL bits/image | file bytes | file - NLL, bytes (header + coder) "
             "| coder's overhead | encode ms/image | decode ms/image | decode(encode(x)) == x |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        bound = r["nll_bits"] + r["label_bits"]
        coder = r["bytes"] - HEADER_BYTES - bound / 8  # the coder's last words and its 24-bit quantisation
        lines.append(
            f"| {r['model']} ({r['step']}) | {r['method']} | {r['num']} | {bound / r['num']:.2f} | {r['bytes']:,} | "
            f"{r['bytes'] - bound / 8:.1f} ({HEADER_BYTES} + {coder:.1f}) | {100 * coder * 8 / bound:+.3f}% | "
            f"{1000 * r['encode_s'] / r['num']:.1f} | {1000 * r['decode_s'] / r['num']:.1f} | {'yes' if r['exact'] else '**NO**'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, help="a checkpoint (repeat for more models)")
    parser.add_argument("--num", action="append", type=int, help="test images per --ckpt, in the same order (default 100)")
    parser.add_argument("--method", action="append", choices=("auto", "fast", "naive"),
                        help="the path per --ckpt, in the same order (default auto: fast where the model has it)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = Machine()
    nums = (args.num or []) + [100] * (len(args.ckpt) - len(args.num or []))
    methods = (args.method or []) + ["auto"] * (len(args.ckpt) - len(args.method or []))
    results = []
    for ckpt, num, method in zip(args.ckpt, nums, methods):
        start = time.perf_counter()
        results.append(measure(ckpt, num, method, args.batch_size))
        print(f"{ckpt}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    first = results[0]
    text = "\n".join([
        f"Sizes: the first {first['num']} test images of {first['model']}'s data, {first['dims']} sub-pixels of "
        f"{first['levels']} levels each.", "", *size_table(first), "",
        f"Per model (batches of up to {args.batch_size} images; times are wall-clock, indicative only):", "", *results_table(results), "",
        machine.line(args.threads), "",
    ])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
