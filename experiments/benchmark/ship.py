"""Ship a benchmark run's best weights as a trained model of autoreg (src/autoreg/pretrained/).

    .venv/bin/python experiments/benchmark/ship.py <run> [--name NAME]

Measures the test NLL of best.ckpt's evaluated weights on the whole binarized-MNIST test split
and on its first 200 images (what tests/test_pretrained.py checks), then writes the weights-only
fp32 file and its manifest entry with the run's steps, CPU-hours (segments.csv) and the commit.
"""
from __future__ import annotations

import argparse
import csv
import math
import subprocess
from pathlib import Path

import torch

from autoreg.build import build_datamodule
from autoreg.checkpoint import export_pretrained
from autoreg.module import AutoregressiveModule

HERE = Path(__file__).resolve().parent
DATA_ROOT = str(HERE.parents[1].parent / "shared" / "data" / "binarized_mnist")
FIRST = 200


@torch.no_grad()
def mean_nll(module: AutoregressiveModule, images: torch.Tensor, batch: int = 500) -> float:
    nll = [module.nll(images[s : s + batch].float()).double() for s in range(0, len(images), batch)]
    return float(torch.cat(nll).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--name", help="the shipped name (default: the run's)")
    args = parser.parse_args()
    run_dir = HERE / "runs" / args.run
    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    module = AutoregressiveModule.from_checkpoint(str(best)).eval()
    data = {**module.hparams.data, "root": DATA_ROOT}
    datamodule = build_datamodule(data)
    datamodule.setup("test")
    test = datamodule.splits["test"].images
    nll, first = mean_nll(module, test), mean_nll(module, test[:FIRST])
    with (HERE / "segments.csv").open() as f:
        cpu_s = sum(int(r["cpu_s"]) for r in csv.DictReader(f) if r["run"] == args.run)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    hp = dict(ckpt["hyper_parameters"])
    hp["data"] = {**hp["data"], "root": "data/binarized_mnist"}  # where a user's copy goes (downloaded when missing)
    record = {"test_nll": nll, "test_bpd": nll / (784 * math.log(2)), f"test_nll_first{FIRST}": first, "steps": ckpt["global_step"],
              "epochs": round(ckpt["global_step"] * hp["data"]["batch_size"] / len(datamodule.splits["train"]), 2),
              "cpu_hours_to_last_segment": round(cpu_s / 3600, 2), "commit": commit, "run": f"experiments/benchmark/runs/{args.run}",
              "binarization": "fixed (data=binarized_mnist, Larochelle & Murray 2011)",
              "weights": "EMA average" if "current_model_state" in ckpt else "trained"}
    path = export_pretrained({**ckpt, "hyper_parameters": hp}, args.name or args.run, record)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB): test NLL {nll:.2f} nats ({record['test_bpd']:.4f} bits/dim), "
          f"first {FIRST}: {first:.2f}, step {record['steps']}")


if __name__ == "__main__":
    main()
