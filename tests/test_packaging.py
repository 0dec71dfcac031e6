"""Every command runs from a non-editable install: the wheel carries the config tree (autoreg.conf)
and the pretrained models, and the commands find them without the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

KEEP_OUT = (".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", "experiments", "tests")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of the checkout and installed into a plain directory."""
    base = tmp_path_factory.mktemp("install")
    source, target = base / "source", base / "target"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*KEEP_OUT))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("autoreg-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    return target


def command(installed: Path, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """`name args` as an installed command: the installed package first on the path, run from a
    directory without conf/."""
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(installed / "bin" / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_carries_the_config_tree_and_the_pretrained_models(installed):
    conf = installed / "autoreg" / "conf"
    assert {p.relative_to(conf) for p in conf.rglob("*.yaml")} == {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert {p.name for p in (installed / "autoreg" / "pretrained").glob("*.pt")} == {p.name for p in (ROOT / "src/autoreg/pretrained").glob("*.pt")}


def test_every_command_runs_from_the_installed_package(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import autoreg.apps, autoreg.conf; print(autoreg.apps.__file__, autoreg.conf.__file__)"],
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, check=True)
    assert all(path.startswith(str(installed)) for path in probe.stdout.split()), probe.stdout
    classifiers = os.environ["AUTOREG_TEST_CLASSIFIERS"]
    run = tmp_path / "run"
    proc = command(installed, tmp_path, "autoreg-train", "model.channels=8", "model.depth=1", "data.source=bundled",
                   "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                   "callbacks.samples.num=2", "callbacks.sample_quality.num=2", f"callbacks.sample_quality.classifier_dir={classifiers}",
                   f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and (run / "train.log").is_file() and (run / ".hydra" / "config.yaml").is_file()

    steps = [
        ("autoreg-sample", [f"ckpt={ckpt}", "num=2", "progress=false"], ckpt.with_name("best_samples.png")),
        ("autoreg-compress", [f"ckpt={ckpt}", "split=test", "num=2", f"out={tmp_path / 'x.arz'}", "progress=false"], tmp_path / "x.arz"),
        ("autoreg-score", [f"ckpt={ckpt}", "split=test", "num=2", f"out={tmp_path / 's.csv'}", "progress=false"], tmp_path / "s.csv"),
        ("autoreg-quality", [f"ckpt={ckpt}", "num=2", f"classifier_dir={classifiers}"], ckpt.with_name("best_quality.json")),
        ("autoreg-classifier", ["data.source=bundled", "epochs=1", f"out={tmp_path / 'c.pt'}"], tmp_path / "c.pt"),
        ("autoreg-receptive-field", ["model.depth=1", "model.channels=4", f"out={tmp_path / 'rf.png'}"], tmp_path / "rf.png"),
    ]
    for name, args, written in steps:
        proc = command(installed, tmp_path, name, *args)
        assert proc.returncode == 0 and written.is_file(), (name, proc.stderr[-2000:])
    assert command(installed, tmp_path, "autoreg-report", "--help").returncode == 0
    assert not (tmp_path / "outputs").exists()  # every output went where it was asked to


def test_a_command_without_its_required_key_says_so_in_one_line(installed, tmp_path):
    proc = command(installed, tmp_path, "autoreg-sample", "num=2")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: ckpt= is missing: it has no default (conf/sample.yaml); give it on the command line"
