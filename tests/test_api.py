"""autoreg.load and its model: the exact likelihood and the samplers the CLIs use, from Python."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize
from PIL import Image
from torchvision.utils import save_image

import autoreg
from autoreg.module import AutoregressiveModule
from autoreg.sampling.grids import grid_image

from conftest import TINY, compose_train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from autoreg.cli import train

    out = tmp_path_factory.mktemp("run")
    train(compose_train([*TINY, "trainer.max_steps=3", "callbacks.sample_quality.num=0"], out))
    return out / "checkpoints" / "best.ckpt"


def test_load_gives_an_eval_module_whose_log_prob_is_the_modules_nll(ckpt):
    model = autoreg.load(ckpt)
    assert isinstance(model, torch.nn.Module) and not model.training and model.image_shape == (1, 28, 28)
    module = AutoregressiveModule.from_checkpoint(str(ckpt))
    x = (torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with torch.no_grad():
        expected = -module.eval().nll(x)
    assert torch.allclose(model.log_prob(x, batch_size=2), expected)  # batched, exact
    assert torch.allclose(model.log_prob(x.to(torch.uint8)), expected)  # levels as the datasets store them
    with pytest.raises(ValueError, match=r"this model takes \(N, 1, 28, 28\)"):
        model.log_prob(torch.zeros(2, 1, 32, 32))


def test_sample_equals_sample_py_and_complete_keeps_the_given_pixels(ckpt, tmp_path):
    from autoreg.sample_cli import sample as sample_py

    model = autoreg.load(ckpt)
    drawn = model.sample(4, seed=3)
    assert drawn.shape == (4, 1, 28, 28) and set(drawn.unique().tolist()) <= {0.0, 1.0}
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose(config_name="sample", overrides=[f"ckpt={ckpt}", "num=4", "seed=3", f"out={tmp_path}/s.png", "progress=false"])
    sample_py(cfg)
    save_image(grid_image(drawn, 2, cfg.scale), tmp_path / "api.png")
    assert list(Image.open(tmp_path / "s.png").getdata()) == list(Image.open(tmp_path / "api.png").getdata())
    mask = torch.zeros(4, 1, 28, 28, dtype=torch.bool)
    mask[:, :, :14] = True
    filled = model.complete(drawn, mask, seed=5)
    assert torch.equal(filled[:, :, :14], drawn[:, :, :14]) and filled.shape == drawn.shape


def test_a_shipped_model_loads_by_name_and_autoreg_imports_without_torch():
    model = autoreg.load("paper_mnist_pixelcnn")
    assert model.net.num_classes is None and model.sample(1, seed=0).shape == (1, 1, 28, 28)
    proc = subprocess.run([sys.executable, "-c", "import sys, autoreg; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr  # load() imports torch when called
