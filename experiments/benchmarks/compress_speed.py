"""Compression time per image: PixelCNN++ on its fast path against the Gated PixelCNN at about
equal parameters (autoreg.compression, as compress.py codes).

Both models are randomly initialised (the time does not depend on the weights) and code the same
`--num` binary 28x28 images (pixels on with probability 0.15, about a digit's ink) in batches of
`--batch` (compress.py's default, 100), then decode them; the round trip is checked. The models
run interleaved, `--repeats` times each, so that on a shared CPU both see the same load; the table
gives the medians.

    .venv/bin/python experiments/benchmarks/compress_speed.py --out experiments/benchmarks/compress_speed.md

Models:
- gated: the benchmark's Gated PixelCNN (`+experiment=paper_mnist_gated_pixelcnn`, the shipped
  `paper_mnist_gated_pixelcnn`): 15 layers, 16 features per stack, k = 5.
- pixelcnn_pp: PixelCNN++ with nr_resnet = 2 (the default) and 13 channels, sized to the above.
- pixelcnn_pp_default: the default PixelCNN++ (32 channels), for scale.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from autoreg.compression import compress, decompress
from autoreg.module import AutoregressiveModule

from common import Machine, write_results

SHAPE = (1, 28, 28)
MODELS = {  # key: (table label, model config)
    "gated": ("Gated PixelCNN (15 layers, 16 features, k=5)", {"name": "gated_pixelcnn", "channels": 16, "depth": 15,
                                                             "kernel": 5, "head_layers": 2}),
    "pixelcnn_pp": ("PixelCNN++ (nr_resnet=2, 13 ch)", {"name": "pixelcnn_pp", "nr_resnet": 2, "channels": 13}),
    "pixelcnn_pp_default": ("PixelCNN++ default (nr_resnet=2, 32 ch)", {"name": "pixelcnn_pp", "nr_resnet": 2, "channels": 32}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    machine = Machine()
    images = (torch.rand(args.num, *SHAPE, generator=torch.Generator().manual_seed(0)) < 0.15).to(torch.uint8)
    modules = {}
    for key in args.models:
        torch.manual_seed(0)
        modules[key] = AutoregressiveModule(model=MODELS[key][1], image_shape=SHAPE, bits=1, optim={"lr": 1e-3})
    times = {key: ([], []) for key in modules}
    for _ in range(args.repeats):
        for key, module in modules.items():
            data, stats = compress(module, images, batch_size=args.batch)
            decoded, _, back = decompress(module, data)
            assert torch.equal(decoded, images), f"{key}: the round trip changed the images"
            times[key][0].append(stats.seconds)
            times[key][1].append(back.seconds)
    lines = ["| model | params | encode ms/image | decode ms/image | encode vs Gated PixelCNN |", "|---|---:|---:|---:|---:|"]
    base = statistics.median(times["gated"][0]) if "gated" in times else None
    for key, module in modules.items():
        encode, decode = (1000 * statistics.median(t) / args.num for t in times[key])
        ratio = f"{1000 * statistics.median(times[key][0]) / args.num / (1000 * base / args.num):.2f}x" if base else ""
        params = sum(p.numel() for p in module.net.parameters())
        lines.append(f"| {MODELS[key][0]} | {params:,} | {encode:.1f} | {decode:.1f} | {ratio} |")
        print(lines[-1], flush=True)
    setup = f"{args.num} binary 28x28 images, batch {args.batch}, median of {args.repeats}, " + machine.line()
    print("\n".join(lines) + "\n\n" + setup)
    write_results(args.out, "Compression time per image", [*lines, "", setup])


if __name__ == "__main__":
    main()
