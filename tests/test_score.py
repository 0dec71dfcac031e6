"""score.py and Model.score: per-image NLLs that are the module's, per-pixel maps that sum to them,
log p(x) of a conditional model over its classes, and one-line refusals that write nothing."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize
from PIL import Image

import autoreg
from autoreg.api import Model
from autoreg.cli import train
from autoreg.score_cli import score, score_main
from conftest import ROOT, TINY, compose_train
from test_compress import FAMILIES, random_images, tiny_module

pytestmark = pytest.mark.usefixtures("one_thread")


def score_cfg(*overrides: str):
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="score", overrides=["progress=false", *overrides])


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny PixelCNN trained on the bundled digits, with test/nll over the whole test split."""
    out = tmp_path_factory.mktemp("run")
    metrics, _ = train(compose_train([*TINY, "trainer.max_steps=3", "callbacks.sample_quality.num=0", "callbacks.samples.num=0",
                                      "test=true", "trainer.limit_test_batches=1.0"], out))
    return out / "checkpoints" / "best.ckpt", metrics


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Three black-and-white 28x28 PNGs."""
    folder = tmp_path_factory.mktemp("digits")
    for n, image in enumerate(random_images(3, (28, 28), 2)):
        Image.fromarray(image.numpy() * 255).save(folder / f"{n}.png")
    return folder


def test_per_image_nlls_average_to_the_test_nll_the_module_reports(run, tmp_path):
    ckpt, metrics = run
    out, grid = score(score_cfg(f"ckpt={ckpt}", "split=test", f"out={tmp_path}/test.csv", "batch_size=64"))
    rows = read_csv(out)
    assert len(rows) == 500 and [r["index"] for r in rows[:3]] == ["0", "1", "2"]  # the bundled test split
    nll = torch.tensor([float(r["nll_nats"]) for r in rows], dtype=torch.float64)
    assert float(nll.mean()) == pytest.approx(metrics["test/nll"], abs=1e-4)
    bpd = torch.tensor([float(r["bits_per_dim"]) for r in rows], dtype=torch.float64)
    assert torch.allclose(bpd, nll / (784 * math.log(2)), atol=1e-5)
    assert grid == out.with_suffix(".png") and Image.open(grid).size[0] > 600


@pytest.mark.parametrize("head", ["bernoulli", "categorical", "logistic_mixture"])
def test_a_heatmap_sums_to_its_images_nll(head):
    shape, bits, family = ((1, 5, 4), 1, FAMILIES["pixelcnn"]) if head == "bernoulli" else ((3, 4, 4), 8, FAMILIES["pixelcnn"])
    if head == "logistic_mixture":
        family = ["model=pixelcnn_pp", "model.nr_resnet=1", "model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=2"]
    model = Model(tiny_module(shape, bits, *family, "model.channels=6"))
    images = random_images(5, shape, 2**bits)
    heat = model.nll_map(images, batch_size=2)
    assert heat.shape == (5, *shape[1:]) and bool((heat >= 0).all())
    assert torch.allclose(heat.flatten(1).sum(1), -model.log_prob(images), rtol=1e-5)
    scores = model.score(images, batch_size=3)
    assert torch.allclose(scores.pixel_nll, heat) and torch.allclose(scores.nll, -model.log_prob(images))
    assert scores.log_px is None and scores.labels is None


def conditional_model() -> Model:
    module = tiny_module((1, 4, 4), 1, *FAMILIES["pixelcnn"], "model.conditional=true", classes=10)
    with torch.no_grad():  # make the label matter: class biases are zero at initialisation
        for name, p in module.named_parameters():
            if "label_bias" in name:
                p.normal_()
    return Model(module)


def test_a_conditional_models_log_px_is_the_logsumexp_of_its_per_class_values():
    model = conditional_model()
    images = random_images(6, (1, 4, 4), 2)
    scores = model.score(images, batch_size=4)
    per_class = torch.stack([model.log_prob(images, torch.full((6,), y)) for y in range(10)], 1)
    assert torch.allclose(scores.class_log_probs, per_class, atol=1e-5)
    assert torch.allclose(scores.log_px, torch.logsumexp(per_class, 1) - math.log(10), atol=1e-5)  # uniform prior
    assert torch.equal(scores.most_likely, per_class.argmax(1)) and torch.equal(scores.labels, scores.most_likely)
    assert torch.allclose(scores.pixel_nll.flatten(1).sum(1), scores.nll, atol=1e-5)  # the most likely class's map
    labels = torch.tensor([3, 3, 0, 9, 1, 2])
    given = model.score(images, labels)
    assert torch.allclose(given.nll, -model.log_prob(images, labels), atol=1e-5) and torch.equal(given.labels, labels)
    assert torch.allclose(given.pixel_nll, model.nll_map(images, labels), atol=1e-6)
    prior = torch.tensor([0.91] + [0.01] * 9)
    assert torch.allclose(model.score(images, prior=prior).log_px, torch.logsumexp(per_class + prior.log(), 1), atol=1e-5)


def test_a_conditional_checkpoint_writes_its_classes(tmp_path):
    model = conditional_model()
    torch.save({"state_dict": model.module.state_dict(), "hyper_parameters": dict(model.module.hparams)}, tmp_path / "c.ckpt")
    (tmp_path / "in").mkdir()
    images = random_images(2, (1, 4, 4), 2)
    for n, image in enumerate(images):
        Image.fromarray(image[0].numpy() * 255).save(tmp_path / "in" / f"{n}.png")
    out, grid = score(score_cfg(f"ckpt={tmp_path}/c.ckpt", f"input={tmp_path}/in", "label=7"))
    rows = read_csv(out)
    assert out == tmp_path / "c_scores_in.csv"  # beside the checkpoint, named by it and the input
    assert list(rows[0]) == ["file", "label", "nll_nats", "bits_per_dim", "log_px_nats", "most_likely_class"]
    assert [r["label"] for r in rows] == ["7", "7"] and grid.is_file()
    out, grid = score(score_cfg(f"ckpt={tmp_path}/c.ckpt", f"input={tmp_path}/in", "grid=0", f"out={tmp_path}/s.csv"))
    most_likely = model.score(images).most_likely
    assert [r["label"] for r in read_csv(out)] == [str(int(y)) for y in most_likely]  # no label=: the most likely class
    assert grid is None and not (tmp_path / "s.png").exists()


def one_line_error(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        score_main(score_cfg(*overrides))
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_each_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, offline):
    ckpt, _ = run
    bad = tmp_path / "bad"
    bad.mkdir()
    out = f"out={tmp_path}/out/s.csv"
    cases = {
        "this model codes 28x28 images": Image.new("1", (32, 32)),
        "is a RGB image; this model codes greyscale": Image.new("RGB", (28, 28)),
        "binarize it first": Image.new("L", (28, 28), 128),
    }
    for expected, image in cases.items():
        image.save(bad / "x.png")
        assert expected in one_line_error(capsys, f"ckpt={ckpt}", f"input={bad}", out)
    (bad / "x.png").write_text("not a picture")
    assert "cannot be read as a PNG" in one_line_error(capsys, f"ckpt={ckpt}", f"input={bad / 'x.png'}", out)
    assert "does not exist" in one_line_error(capsys, f"ckpt={ckpt}", f"input={tmp_path}/none.png", out)
    assert "label=3 needs a class-conditional model" in one_line_error(capsys, f"ckpt={ckpt}", f"input={bad}", "label=3", out)
    assert "input=<PNG file or directory> or split=" in one_line_error(capsys, f"ckpt={ckpt}", out)
    assert "split=tset is not allowed" in one_line_error(capsys, f"ckpt={ckpt}", "split=tset", out)
    assert "must be a .csv path" in one_line_error(capsys, f"ckpt={ckpt}", "split=test", f"out={tmp_path}/s.png")
    assert "is not a checkpoint at all" in one_line_error(capsys, f"ckpt={bad / 'x.png'}", "split=test", out)
    assert "(score.py: data_root=<dir>)" in one_line_error(capsys, "ckpt=paper_mnist_pixelcnn", "split=test", f"data_root={bad}", out)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("*.png"))


def test_score_py_with_the_defaults_as_users_run_it(run, digits, tmp_path):
    ckpt, _ = run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "score.py"), f"ckpt={ckpt}", f"input={digits}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scored 3 images" in proc.stdout and "NLL quantiles (nats): min" in proc.stdout
    out = ckpt.with_name(f"best_scores_{digits.name}.csv")  # beside the checkpoint, as sample.py's grids
    rows = read_csv(out)
    assert [r["file"] for r in rows] == [str(digits / f"{n}.png") for n in range(3)]
    expected = -autoreg.load(ckpt).log_prob(random_images(3, (1, 28, 28), 2))  # the PNGs' pixels
    assert [float(r["nll_nats"]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-4)
    assert out.with_suffix(".png").is_file()


def test_a_bad_value_is_answered_before_torch_is_imported(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "score.py"), "ckpt=x", "split=tset"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1] == "error: split=tset is not allowed; choose one of: train, val, test"
    assert "torch" not in {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}


def test_the_readmes_python_example_runs():
    """README "From Python" as written, with a shipped model: the maps sum to the NLL it prints."""
    text = (ROOT / "README.md").read_text().split("### From Python", 1)[1]
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    names: dict = {}
    exec(code, names)
    assert torch.allclose(names["heat"].flatten(1).sum(1), names["nats"], rtol=1e-5)
    assert torch.equal(names["filled"][:, :, :14], names["images"][:, :, :14])
