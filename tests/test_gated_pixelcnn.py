"""Gated PixelCNN: causality by gradients, no blind spot, the fast sampler against the naive one,
conditioning, config checks, and a tiny training run."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autoreg.analysis.receptive_field import context_counts, gradient_map
from autoreg.config import validate
from autoreg.distributions import Bernoulli, Categorical
from autoreg.errors import ConfigError
from autoreg.families import build_model, family
from autoreg.families.gated_pixelcnn import GatedPixelCNNKeys
from autoreg.families.pixelcnn import PixelCNNKeys
from autoreg.models.gated_pixelcnn import GatedPixelCNN
from autoreg.models.pixelcnn import PixelCNN
from autoreg.sampling import has_fast_path, sample

from conftest import compose_train

REPEATS = 2  # random images per probed output

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(shape, depth=2, kernel=3, channels=None, num_classes=None):
    """A small model with sharpened outputs (a wrong tap in the fast sampler would show) and, when
    conditional, random label biases (they start at zero)."""
    torch.manual_seed(0)
    distribution = Bernoulli() if shape[0] == 1 else Categorical(256)
    keys = GatedPixelCNNKeys(channels=channels or 4 * shape[0], depth=depth, kernel=kernel)
    model = GatedPixelCNN(shape, distribution, keys, num_classes=num_classes)
    with torch.no_grad():
        model.head[-1].weight.mul_(8)
        if num_classes:
            model.label_bias.embedding.weight.normal_()
    return model


def leaky(model):
    """The head's ReLUs -> leaky ReLUs: a unit off for every probe image would hide a dependency (a
    false "unreachable"); leaky units never do, and can only reveal more leaks, never fewer."""
    for n, layer in enumerate(model.head):
        if isinstance(layer, nn.ReLU):
            model.head[n] = nn.LeakyReLU(0.1)
    return model


def dependencies(model, shape, y=None):
    """dep[i, g, c, q]: whether the params of colour g at pixel i have a nonzero gradient w.r.t.
    input channel c at pixel q (raster order). One backward pass: batch element b probes one (i, g)."""
    c, h, w = shape
    probes = h * w * c
    torch.manual_seed(1)
    x = torch.randn(REPEATS * probes, c, h, w, requires_grad=True)
    out = model(x, None if y is None else y.repeat(REPEATS * probes))
    out = out.reshape(REPEATS, probes, c, -1, h * w)  # params in C contiguous groups
    b = torch.arange(probes)
    out[:, b, b % c, :, b // c].sum().backward()
    return (x.grad.reshape(REPEATS, h * w, c, c, h * w) != 0).any(0)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("depth,kernel", [(1, 3), (2, 3), (3, 3), (1, 5), (2, 5), (2, 7)])
def test_causal(depth, kernel, colours, conditional):
    """No params see their own sub-pixel, a later pixel or (RGB) a later colour of their pixel;
    every pixel after the first sees something, and (RGB) later colours see earlier ones."""
    shape = (colours, 6, 6)
    model = leaky(tiny(shape, depth, kernel, num_classes=3 if conditional else None))
    dep = dependencies(model, shape, torch.tensor([2]) if conditional else None)
    n = 36
    i, q = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (q < i)[:, None, None, :].expand(n, colours, colours, n).clone()
    for g in range(colours):
        allowed[torch.arange(n), g, :g, torch.arange(n)] = True
    assert not dep[~allowed].any(), "some params see their own sub-pixel or the future"
    assert dep[1:].flatten(1).any(1).all(), "a pixel sees no context"
    for g in range(1, colours):
        assert dep[torch.arange(n), g, :g, torch.arange(n)].all(), f"colour {g} ignores earlier colours of its pixel"


def reach(field: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in torch.nonzero(field).tolist()}


@pytest.mark.parametrize("depth,kernel", [(2, 3), (3, 3), (2, 5), (3, 5)])
def test_no_blind_spot(depth, kernel):
    """The field of L layers (h = k // 2) at a pixel far from the edges is exactly the rows
    i-Lh-1 .. i-1 at columns j-Lh .. j+Lh and the current row at j-Lh .. j-1: every earlier pixel
    within reach, up-and-right included. A PixelCNN with as many k x k layers reaches fewer pixels
    and, like a PixelCNN with one layer more, misses a triangle up and right (its blind spot)."""
    torch.manual_seed(0)
    images = torch.randint(0, 2, (8, 1, 24, 24), generator=torch.Generator().manual_seed(0)).float()
    pixel = (14, 12)
    i, j = pixel
    r = depth * (kernel // 2)
    gated = gradient_map(leaky(tiny((1, 24, 24), depth, kernel, channels=8)), images, pixel)
    above = {(a, b) for a in range(i - r - 1, i) for b in range(j - r, j + r + 1)}
    expected = above | {(i, b) for b in range(j - r, j)}
    assert reach(gated) == expected
    counts = context_counts(gated, pixel)
    assert counts.reached == (r + 1) * (2 * r + 1) + r and counts.later == 0
    for blocks in (depth - 1, depth):  # as many k x k layers as the gated model; one more
        torch.manual_seed(0)
        pixelcnn = PixelCNN((1, 24, 24), Bernoulli(), PixelCNNKeys(channels=8, depth=blocks, kernel=kernel, first_kernel=kernel))
        field = gradient_map(pixelcnn, images, pixel)
        assert field[i - 1, j + r] == 0 and gated[i - 1, j + r] > 0  # up and right: only the gated one
        radius = (blocks + 1) * (kernel // 2)  # the PixelCNN's rows above; the gated one reaches r + 1
        blind = {(a, b) for a, b in expected - reach(field) if a >= i - radius}
        assert blind and all(b > j for _, b in blind), "within its rows, PixelCNN misses only pixels up and right"
        if blocks == depth - 1:
            assert context_counts(field, pixel).reached < counts.reached


def assert_fast_is_exact(model, noise, y=None, known=None, mask=None, temperature=1.0):
    """Fast and naive: the same pixels for the same noise, probabilities within 1e-5 of each other
    and of one forward pass over the result; given pixels kept."""
    kwargs = dict(noise=noise, y=y, known=known, known_mask=mask, temperature=temperature, return_probs=True)
    naive, naive_probs = sample(model, noise.shape[0], method="naive", **kwargs)
    fast, fast_probs = sample(model, noise.shape[0], method="fast", **kwargs)
    assert torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    with torch.no_grad():
        assert torch.allclose(fast_probs, model.distribution.probs(model(fast, y), temperature, fast), atol=1e-5)
    if known is not None:
        assert torch.equal(fast[mask.expand_as(fast)], known[mask.expand_as(known)])
    assert len(fast.unique()) > 1
    return fast


SAMPLERS = {  # shape, depth, kernel, conditional, temperature
    "bernoulli-k3": ((1, 8, 8), 2, 3, False, 1.0),
    "bernoulli-k5-deep": ((1, 7, 9), 3, 5, False, 0.8),
    "bernoulli-one-layer": ((1, 6, 6), 1, 3, False, 1.0),
    "cat256-grey": ((1, 5, 5), 2, 3, False, 1.0),
    "cat256-rgb": ((3, 5, 5), 2, 3, False, 1.0),
    "cat256-rgb-k5": ((3, 5, 6), 3, 5, False, 0.8),
    "conditional-bernoulli": ((1, 7, 7), 2, 5, True, 1.0),
    "conditional-rgb": ((3, 5, 5), 2, 3, True, 1.0),
}


@pytest.mark.parametrize("case", list(SAMPLERS))
def test_fast_sampler_is_exact(case):
    shape, depth, kernel, conditional, temperature = SAMPLERS[case]
    model = tiny(shape, depth, kernel, num_classes=4 if conditional else None)
    assert has_fast_path(model)
    noise = torch.rand((3, *shape), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 1]) if conditional else None
    assert_fast_is_exact(model, noise, y, temperature=temperature)


@pytest.mark.parametrize("case", ["bernoulli-k5-deep", "cat256-rgb", "conditional-rgb"])
def test_completion_agrees_with_naive(case):
    shape, depth, kernel, conditional, _ = SAMPLERS[case]
    model = tiny(shape, depth, kernel, num_classes=4 if conditional else None)
    c, h, w = shape
    levels = model.distribution.levels
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, levels, (3, *shape), generator=generator) / (levels - 1)
    noise = torch.rand((3, *shape), generator=generator)
    y = torch.tensor([2, 0, 1]) if conditional else None
    top = torch.zeros(1, 1, h, w, dtype=torch.bool)
    top[..., : h // 2, :] = True
    assert_fast_is_exact(model, noise, y, known, top)
    mask = torch.rand((3, c, h, w), generator=generator) < 0.4
    mask[:, :, :1] = True  # given rows and a given prefix of the next: the caches start from a full pass
    mask[:, :, 1, :3] = True
    mask[:, :, -1, 1:] = True  # a given suffix: drawing stops before it
    assert_fast_is_exact(model, noise, y, known, mask)


def test_label_changes_the_output_and_later_pixels_do_not():
    model = tiny((3, 6, 6), 2, 3, num_classes=5)
    torch.manual_seed(2)
    x = torch.rand(2, 3, 6, 6)
    y = torch.tensor([1, 4])
    q = 3 * 6 + 2  # pixel (3, 2)
    later = x.clone().flatten(2)
    later[..., q:] = torch.rand(2, 3, 36 - q)  # pixel q and every one after
    with torch.no_grad():
        params = model(x, y).flatten(2)
        assert not torch.allclose(model(x, torch.tensor([0, 2])).flatten(2), params)
        changed = model(later.view_as(x), y).flatten(2)
    assert torch.equal(params[..., :q], changed[..., :q])
    assert torch.equal(params[:, :256, q], changed[:, :256, q])  # red reads no colour of its own pixel
    assert not torch.equal(params[:, 256:, q], changed[:, 256:, q])  # green and blue read red
    assert not torch.equal(params[..., q + 1 :], changed[..., q + 1 :])


def test_family_is_found_and_built_from_the_config():
    assert family("gated_pixelcnn").network() is GatedPixelCNN
    cfg = compose_train(["model=gated_pixelcnn"])
    assert cfg.model.name == "gated_pixelcnn" and cfg.model.conditional is False
    model = build_model(cfg.model, (1, 28, 28), Bernoulli())
    assert isinstance(model, GatedPixelCNN) and model.num_classes is None
    x = torch.randint(0, 2, (2, 1, 28, 28)).float()
    assert model(x).shape == (2, 1, 28, 28)
    cfg = compose_train(["model=gated_pixelcnn", "data=cifar10", "model.conditional=true"])
    model = build_model(cfg.model, (3, 8, 8), Categorical(256), num_classes=cfg.data.num_classes)
    assert model.num_classes == cfg.data.num_classes and model.label_bias is not None


@pytest.mark.parametrize("shape,head", [((1, 8, 6), Bernoulli()), ((3, 5, 7), Categorical(256))])
@pytest.mark.parametrize("depth", [1, 3])
def test_forward_shapes_nll_and_every_parameter_learns(shape, head, depth):
    model = GatedPixelCNN(shape, head, GatedPixelCNNKeys(channels=6, depth=depth, kernel=3), num_classes=3)
    x = (torch.rand(2, *shape) * (head.levels - 1)).round() / (head.levels - 1)
    params = model(x, torch.tensor([0, 2]))
    assert params.shape == (2, shape[0] * head.params_per_channel, *shape[1:])
    nll = head.nll(params, x)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    nll.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def check(**keys):
    """The declaration's check of the default keys with `keys` changed, for MNIST and a Bernoulli head."""
    GatedPixelCNNKeys(**keys).check((1, 28, 28), "bernoulli")


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"kernel": 4}, "model.kernel=4"),
        ({"kernel": 1}, "model.kernel=1"),
        ({"kernel": "5"}, "model.kernel=5"),
        ({"depth": 0}, "model.depth=0"),
        ({"depth": 2.5}, "model.depth=2.5"),
        ({"channels": 0}, "model.channels=0"),
        ({"channels": True}, "model.channels=True"),
        ({"head_layers": 0}, "model.head_layers=0"),
    ],
)
def test_config_errors_are_one_line(overrides, named):
    with pytest.raises(ConfigError) as err:
        check(**overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_config_accepts_the_defaults_and_other_sizes():
    check()
    check(kernel=3, depth=1, channels=1, head_layers=1)


def test_channels_must_split_into_colour_groups():
    with pytest.raises(ConfigError) as err:
        build_model({"name": "gated_pixelcnn", "channels": 32}, (3, 8, 8), Categorical(256))
    assert "model.channels=32" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model.channels=32 is invalid for 3-channel images"):  # before any data is read
        validate(compose_train(["model=gated_pixelcnn", "data=cifar10", "model.channels=32"]))
    assert build_model({"name": "gated_pixelcnn"}, (3, 8, 8), Categorical(256)).image_shape == (3, 8, 8)  # the default fits RGB


def test_tiny_training_run(tiny_cfg):
    """Four steps through `autoreg.cli.train`: config check, build, fit, validation, sample grid."""
    from autoreg.cli import train

    metrics, objects = train(tiny_cfg("model=gated_pixelcnn"))
    assert isinstance(objects["module"].net, GatedPixelCNN)
    assert metrics["global_step"] == 4 and math.isfinite(metrics["val/nll"]) and metrics["val/nll"] > 0
