"""PixelCNN++ (discretized logistic mixture) vs PixelCNN (256-way softmax) on 8-bit MNIST, at equal CPU time.

The method of experiments/defaults/compare.py (whose helpers this script uses): each candidate's
training throughput is measured first, the candidates interleaved in one process so that they
share the machine's load, then each trains for the steps its budget buys at that rate and is
evaluated on the whole validation and test splits of the offline digits (data=mnist256,
data.source=bundled: 4050 / 450 / 500 images). Indicative: one seed, a shared CPU, minutes.

    .venv/bin/python experiments/pixelcnn_pp/compare.py --minutes 3
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "defaults"))
from compare import config, throughput  # noqa: E402  (experiments/defaults/compare.py)

from autoreg.cli import train  # noqa: E402

# fp32 for both: bf16-mixed speeds up PixelCNN's convolutions on a bf16 CPU but slows PixelCNN++'s
# (concat_elu, transposed convolutions) ~3x on this one, so one precision for all keeps it simple
DATA = ["data=mnist256", "data.source=bundled", "trainer.precision=32-true"]
CANDIDATES = {  # each pins the keys that define it (the defaults change over time)
    "PixelCNN, 256-way softmax (residual 7x7, depth 2, 64 ch)":
        ["model=pixelcnn", "model.depth=2", "model.channels=64", "model.kernel=7", "model/likelihood=categorical"],
    "PixelCNN++, mixture of 10 logistics (nr_resnet 1, 32 ch)":
        ["model=pixelcnn_pp", "model.nr_resnet=1", "model.channels=32", "model.dropout=0.0",
         "model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=10"],
    "PixelCNN++, mixture of 10 logistics (nr_resnet 2, 32 ch: the default)":
        ["model=pixelcnn_pp", "model.nr_resnet=2", "model.channels=32", "model.dropout=0.0",
         "model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=10"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU budget per candidate")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "pixelcnn_pp_compare")
    args = parser.parse_args()
    candidates = {name: overrides + DATA for name, overrides in CANDIDATES.items()}

    rates = throughput(candidates, args.windows, steps=3)
    print("measured train img/s:", {name: round(rate) for name, rate in rates.items()}, flush=True)
    rows = []
    for i, (name, overrides) in enumerate(candidates.items()):
        batch = config(overrides, args.out).data.batch_size
        steps = max(1, int(args.minutes * 60 * rates[name] / batch))
        run = [
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.check_val_every_n_epoch=100000",
            "trainer.val_check_interval=1.0", "trainer.num_sanity_val_steps=0", "callbacks.samples.num=0", "callbacks.progress_bar.refresh_rate=0",
            "~callbacks.checkpoint",
        ]
        metrics, objects = train(config(overrides + run, args.out / str(i)))
        trainer, module, dm = objects["trainer"], objects["module"], objects["datamodule"]
        val = trainer.validate(module, datamodule=dm, verbose=False)[0]
        test = trainer.test(module, datamodule=dm, verbose=False)[0]
        rows.append((name, metrics["params"], rates[name], steps, val["val/nll"], val["val/bpd"], test["test/nll"], test["test/bpd"]))
        print("done:", rows[-1], flush=True)

    print(f"\nBudget: {args.minutes:g} CPU minutes per candidate at its measured rate (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, fp32), 8-bit offline MNIST (bundled), batch 64; "
          f"bits/dim = nats / (784 ln 2), uniform = 8.\n")
    print("| candidate | params | train img/s | steps | val nll (nats) | val bits/dim | test nll (nats) | test bits/dim |")
    print("|---|---|---|---|---|---|---|---|")
    for name, params, rate, steps, vnll, vbpd, tnll, tbpd in rows:
        assert math.isclose(vbpd, vnll / (784 * math.log(2)), rel_tol=1e-6)
        print(f"| {name} | {int(params):,} | {rate:.0f} | {steps} | {vnll:.1f} | {vbpd:.3f} | {tnll:.1f} | {tbpd:.3f} |")


if __name__ == "__main__":
    main()
