"""sample.py: grids of samples and completions from a real checkpoint, and its errors."""
from __future__ import annotations

import pytest
from hydra import compose, initialize
from PIL import Image

from autoreg.cli import train
from autoreg.errors import CheckpointError
from autoreg.sample_cli import sample


def sample_cfg(*overrides: str):
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="sample", overrides=list(overrides))


@pytest.fixture
def ckpt(tiny_cfg, tmp_path):
    train(tiny_cfg())
    return tmp_path / "checkpoints" / "last.ckpt"


def test_samples_grid_is_written_and_seeded(ckpt, tmp_path):
    a = sample(sample_cfg(f"ckpt={ckpt}", "num=4", f"out={tmp_path}/a.png", "progress=false"))
    b = sample(sample_cfg(f"ckpt={ckpt}", "num=4", f"out={tmp_path}/b.png", "progress=false", "sampling.method=naive"))
    c = sample(sample_cfg(f"ckpt={ckpt}", "num=4", f"out={tmp_path}/c.png", "progress=false", "seed=1"))
    images = [Image.open(p) for p in (a, b, c)]
    assert images[0].size == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)  # a 2x2 grid, 2-pixel padding
    assert images[0].tobytes() == images[1].tobytes()  # fast and naive: the same images
    assert images[0].tobytes() != images[2].tobytes()  # another seed, other images


def test_scale_draws_each_pixel_as_a_block(ckpt, tmp_path):
    plain = Image.open(sample(sample_cfg(f"ckpt={ckpt}", "num=4", f"out={tmp_path}/a.png", "progress=false"))).convert("L")
    big = Image.open(sample(sample_cfg(f"ckpt={ckpt}", "num=4", "scale=4", f"out={tmp_path}/b.png", "progress=false"))).convert("L")
    assert big.size == (4 * plain.size[0], 4 * plain.size[1])
    assert big.tobytes() == plain.resize(big.size, Image.NEAREST).tobytes()  # nearest neighbour: the same pixels, larger


def test_completion_grid_keeps_the_top_half(ckpt, tmp_path):
    out = sample(sample_cfg(f"ckpt={ckpt}", "num=2", "complete=true", "completions=3", f"out={tmp_path}/c.png", "progress=false"))
    grid = Image.open(out).convert("L")
    assert grid.size == (5 * 28 + 6 * 2, 2 * 28 + 3 * 2)  # original, masked, 3 completions per row
    cell = lambda row, col, top: grid.crop((2 + col * 30, 2 + row * 30 + top, 2 + col * 30 + 28, 2 + row * 30 + top + 14))
    for row in range(2):
        original = cell(row, 0, 0).tobytes()
        assert all(cell(row, col, 0).tobytes() == original for col in (1, 2, 3, 4))  # given pixels kept
        assert set(cell(row, 1, 14).tobytes()) == {128}  # the hidden half is shown grey (0.5)


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as err:
        sample(sample_cfg(f"ckpt={tmp_path}/nope.ckpt"))
    assert "\n" not in str(err.value)
