"""PixelCNN++: causality by gradients (whole pixels: no channel of the current pixel), the full
context (no blind spot) at MNIST's and CIFAR-10's sizes, shapes and learning, the naive sampler
with the mixture (probabilities, completion of whole pixels), the fast cached sampler against the
naive one (every head, greyscale and colour, conditional, completion, MNIST's and CIFAR-10's
sizes, chunked batches, `prime`), config checks, tiny training runs on 8-bit MNIST and on CIFAR-10
files with colour sample grids, and sample.py completions in colour."""
from __future__ import annotations

import io
import math

import pytest
import torch
from hydra import compose, initialize
from PIL import Image

from autoreg.config import validate

from autoreg.distributions import Bernoulli, Categorical, DiscretizedLogisticMixture
from autoreg.errors import ConfigError
from autoreg.families import build_model, family
from autoreg.families.pixelcnn_pp import PixelCNNppKeys
from autoreg.models.pixelcnn_pp import PixelCNNpp
from autoreg.sampling import FastSamplingUnsupported, has_fast_path, resolve_method, sample

from conftest import TINY, compose_train, read_events
from test_gated_pixelcnn import assert_fast_is_exact

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(shape, nr_resnet=1, channels=6, num_classes=None, head=None, seed=0):
    torch.manual_seed(seed)
    model = PixelCNNpp(shape, head or DiscretizedLogisticMixture(3), PixelCNNppKeys(nr_resnet=nr_resnet, channels=channels),
                       num_classes=num_classes)
    with torch.no_grad():
        if num_classes:
            model.label_bias.embedding.weight.normal_()
    return model.eval()


def dependencies(model, shape, pixels, y=None, repeats=2):
    """dep[n, q]: whether the params at pixel `pixels[n]` (raster index) have a nonzero gradient
    w.r.t. any channel of input pixel q. One backward pass; batch element b probes one pixel."""
    c, h, w = shape
    torch.manual_seed(1)
    x = torch.rand(repeats * len(pixels), c, h, w, requires_grad=True)
    out = model(x, None if y is None else y.repeat(repeats * len(pixels))).flatten(2)
    index = torch.tensor(pixels).repeat(repeats)
    out[torch.arange(len(index)), :, index].sum().backward()
    grad = x.grad.abs().sum(1).flatten(1).view(repeats, len(pixels), h * w)
    return (grad != 0).any(0)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("shape,nr_resnet", [((1, 6, 7), 1), ((3, 6, 7), 1), ((3, 5, 5), 2), ((1, 9, 4), 1)])
def test_causal_and_sees_every_earlier_pixel(shape, nr_resnet, conditional):
    """The params of pixel i depend on exactly the pixels before it in raster order: never on any
    channel of pixel i or later, and (small images, no blind spot) on every earlier one."""
    c, h, w = shape
    model = tiny(shape, nr_resnet, num_classes=3 if conditional else None)
    pixels = list(range(h * w))
    dep = dependencies(model, shape, pixels, torch.tensor([1]) if conditional else None)
    allowed = torch.arange(h * w)[None, :] < torch.arange(h * w)[:, None]
    assert not dep[~allowed].any(), "some params see their own pixel or a later one"
    assert torch.equal(dep, allowed), "some earlier pixel is out of reach"


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_causal_at_mnist_and_cifar_sizes(shape):
    """28 -> 14 -> 7 and 32 -> 16 -> 8: probed at the corners, the edges, the centre and pixels
    next to the resolutions' seams; nothing at or after the pixel, and the pixels up-right (the
    masked PixelCNN's blind spot), up, and left are all seen."""
    c, h, w = shape
    model = tiny(shape, nr_resnet=1, channels=4)
    points = [(0, 1), (1, 0), (1, w - 1), (h // 2, w // 2), (h // 2 + 1, w // 2 + 1), (h - 1, 0), (h - 1, w - 1),
              (7, 13), (14, 7), (h - 2, w - 3), (3, w - 2)]
    pixels = [i * w + j for i, j in points]
    dep = dependencies(model, shape, pixels, repeats=1)
    for n, (i, j) in enumerate(points):
        q = torch.arange(h * w)
        assert not dep[n][q >= i * w + j].any(), f"pixel {(i, j)} sees itself or a later pixel"
        for a, b in ((i - 1, j + 1), (i - 1, j), (i, j - 1), (i - 2, j + 3)):
            if 0 <= a and 0 <= b < w:
                assert dep[n][a * w + b], f"pixel {(i, j)} does not see {(a, b)}"


@pytest.mark.parametrize("shape,head", [
    ((3, 6, 5), DiscretizedLogisticMixture(3)), ((1, 7, 7), DiscretizedLogisticMixture(2)),
    ((1, 6, 6), Bernoulli()), ((1, 5, 6), Categorical(256)),
])
def test_forward_shapes_nll_and_every_parameter_learns(shape, head):
    torch.manual_seed(0)
    model = PixelCNNpp(shape, head, PixelCNNppKeys(nr_resnet=1, channels=6, dropout=0.1), num_classes=3)
    x = (torch.rand(2, *shape) * (head.levels - 1)).round() / (head.levels - 1)
    params = model(x, torch.tensor([0, 2]))
    assert params.shape == (2, head.num_params(shape[0]), *shape[1:])
    nll = head.nll(params, x)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    nll.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_per_channel_heads_are_refused_for_colour():
    with pytest.raises(ConfigError, match="model/likelihood=categorical cannot model 3-channel images with model=pixelcnn_pp") as err:
        build_model({"name": "pixelcnn_pp"}, (3, 8, 8), Categorical(256))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model/likelihood=categorical cannot model 3-channel images"):  # before any data is read
        validate(compose_train(["model=pixelcnn_pp", "data=cifar10", "model/likelihood=categorical"]))


def test_naive_sampling_records_the_probabilities_of_its_pixels():
    """The sampler draws whole pixels with the mixture: the probabilities it records are those
    of one forward pass over the result; the same seed gives the same images for any batch size;
    the temperature changes them."""
    shape = (3, 4, 5)
    model = tiny(shape, channels=4)
    with torch.no_grad():
        model.out.weight.mul_(4)
    images, probs = sample(model, 3, method="naive", seed=2, return_probs=True)
    assert images.shape == (3, *shape) and torch.equal(images, (images * 255).round() / 255)
    with torch.no_grad():
        assert torch.allclose(probs, model.distribution.probs(model(images), 1.0, images), atol=1e-6)
    assert torch.equal(sample(model, 3, method="naive", seed=2, batch_size=2), images)
    assert not torch.equal(sample(model, 3, method="naive", seed=2, temperature=0.5), images)
    noise = torch.rand(3, model.distribution.noise_channels(3), 4, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sample(model, 3, method="naive", noise=noise), images)


def test_completion_keeps_whole_given_pixels_and_refuses_split_ones():
    shape = (3, 6, 5)
    model = tiny(shape, channels=4)
    known = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(3)) / 255
    mask = torch.zeros(2, 1, 6, 5, dtype=torch.bool)
    mask[:, :, :3] = True
    mask[1, :, 4, 1:] = True  # image 1 also gives a run of its fifth row
    mask = mask.expand(2, 3, 6, 5)
    done, probs = sample(model, method="naive", known=known, known_mask=mask, seed=1, return_probs=True)
    assert torch.equal(done[mask], known[mask]) and not torch.equal(done, known)
    with torch.no_grad():
        assert torch.allclose(probs, model.distribution.probs(model(done), 1.0, done), atol=1e-6)
    split = mask.clone()
    split[0, 1:, 3, 0] = True  # G and B of a pixel whose R is drawn
    with pytest.raises(ValueError, match="draws whole pixels: known_mask must give all channels of a pixel or none"):
        sample(model, method="naive", known=known, known_mask=split, seed=1)


def sharp(shape, head, nr_resnet=1, num_classes=None, channels=6):
    """A tiny model with sharpened outputs, so that a wrong cached value would change the pixels."""
    model = tiny(shape, nr_resnet, channels, num_classes, head)
    with torch.no_grad():
        model.out.weight.mul_(4)
    return model


def assert_probs_of_one_pass(model, images, probs, y=None, temperature=1.0):
    with torch.no_grad():
        assert torch.allclose(probs, model.distribution.probs(model(images, y), temperature, images), atol=1e-5)


def noise_for(model, n, seed=1):
    c, h, w = model.image_shape
    return torch.rand(n, model.distribution.noise_channels(c), h, w, generator=torch.Generator().manual_seed(seed))


FAST = {  # shape, head, nr_resnet, conditional, temperature: odd sizes cross the resolutions' seams unevenly
    "bernoulli-9x7": ((1, 9, 7), Bernoulli(), 1, False, 1.0),
    "bernoulli-conditional-6x6": ((1, 6, 6), Bernoulli(), 2, True, 0.8),
    "categorical-5x6": ((1, 5, 6), Categorical(256), 1, False, 1.0),
    "categorical-conditional-7x5": ((1, 7, 5), Categorical(256), 1, True, 1.0),
    "mixture-grey-8x8": ((1, 8, 8), DiscretizedLogisticMixture(2), 2, False, 1.0),
    "mixture-rgb-6x5": ((3, 6, 5), DiscretizedLogisticMixture(3), 1, False, 0.8),
    "mixture-rgb-conditional-5x9": ((3, 5, 9), DiscretizedLogisticMixture(3), 1, True, 1.0),
}


@pytest.mark.parametrize("case", list(FAST))
def test_fast_sampler_is_exact(case):
    shape, head, nr_resnet, conditional, temperature = FAST[case]
    model = sharp(shape, head, nr_resnet, num_classes=3 if conditional else None)
    assert has_fast_path(model) and resolve_method(model, "auto") == "fast"
    y = torch.tensor([0, 2, 1]) if conditional else None
    assert_fast_is_exact(model, noise_for(model, 3), y, temperature=temperature)


@pytest.mark.parametrize("case", ["bernoulli-9x7", "mixture-rgb-conditional-5x9"])
def test_fast_completion_agrees_with_naive(case):
    shape, head, nr_resnet, conditional, _ = FAST[case]
    model = sharp(shape, head, nr_resnet, num_classes=3 if conditional else None)
    c, h, w = shape
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, head.levels, (3, *shape), generator=generator) / (head.levels - 1)
    y = torch.tensor([2, 0, 1]) if conditional else None
    top = torch.zeros(1, 1, h, w, dtype=torch.bool)
    top[..., : h // 2, :] = True
    assert_fast_is_exact(model, noise_for(model, 3), y, known, top)
    mask = (torch.rand((3, 1, h, w), generator=generator) < 0.4).expand(3, c, h, w).clone()
    mask[:, :, :1] = True  # given rows and a given prefix of the next: the caches start from a full pass
    mask[:, :, 1, :3] = True
    mask[:, :, -1, 1:] = True  # a given suffix: drawing stops before it
    assert_fast_is_exact(model, noise_for(model, 3, seed=4), y, known, mask)


@pytest.mark.parametrize("shape,head,conditional", [
    ((1, 28, 28), Bernoulli(), False), ((1, 28, 28), DiscretizedLogisticMixture(2), True),
    pytest.param((3, 32, 32), DiscretizedLogisticMixture(3), True, marks=pytest.mark.slow),
])
def test_fast_sampler_at_mnist_and_cifar_sizes(shape, head, conditional):
    """28 -> 14 -> 7 and 32 -> 16 -> 8."""
    model = sharp(shape, head, num_classes=3 if conditional else None, channels=4)
    assert_first_rows_as_naive(model, torch.tensor([1, 2]) if conditional else None)


def assert_first_rows_as_naive(model, y=None):
    """Two images at a large size: the fast sample's probabilities are those of one forward pass
    over it, and the naive sampler, given the fast sample's rows below the first two, draws the
    same first two rows (drawing them all naively would take a thousand passes), as does the fast
    one given the same."""
    noise = noise_for(model, 2)
    fast, probs = sample(model, 2, method="fast", noise=noise, y=y, return_probs=True)
    assert_probs_of_one_pass(model, fast, probs, y)
    below = torch.zeros(1, 1, *model.image_shape[1:], dtype=torch.bool)
    below[..., 2:, :] = True
    kwargs = dict(noise=noise, y=y, known=fast, known_mask=below, return_probs=True)
    naive, naive_probs = sample(model, method="naive", **kwargs)
    assert torch.equal(naive, fast) and (naive_probs - probs).abs().max() < 1e-5
    again, again_probs = sample(model, method="fast", **kwargs)
    assert torch.equal(again, fast) and (again_probs - probs).abs().max() < 1e-5
    assert len(fast.unique()) > 1


def test_chunked_batches_give_the_same_images():
    assert_chunks_give_the_same_images(sharp((3, 6, 5), DiscretizedLogisticMixture(3), num_classes=3))


def assert_chunks_give_the_same_images(model):
    """Five labelled images in one batch, in chunks of two, and naive in chunks of three."""
    y = torch.tensor([0, 1, 2, 2, 1])
    first = sample(model, 5, y=y, seed=11)
    assert torch.equal(sample(model, 5, y=y, seed=11, batch_size=2), first)
    assert torch.equal(sample(model, 5, y=y, seed=11, method="naive", batch_size=3), first)


def test_prime_is_a_full_pass_over_the_canvas():
    assert_prime_is_a_full_pass(sharp((3, 7, 6), DiscretizedLogisticMixture(3), num_classes=3))


def assert_prime_is_a_full_pass(model):
    """`prime` returns the forward pass's params over the canvas as it is (later pixels too), and
    steps after it continue from its caches (a 3-class model of 7 x 6 RGB images: the steps at
    the end of row 2 and the start of rows 3 and 4)."""
    shape = model.image_shape
    y = torch.tensor([2, 0])
    with torch.inference_mode():
        stepper = model.fast_stepper(2, "cpu", torch.float32, y)
        stepper.canvas.copy_(torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(5)) / 255)
        params = model(stepper.canvas, y)
        assert (stepper.prime() - params).abs().max() < 1e-5
        for q in (17, 18, 24):
            assert (stepper.step(q) - params[:, :, q // shape[2], q % shape[2]]).abs().max() < 1e-5


def test_family_is_found_and_built_from_the_config():
    assert family("pixelcnn_pp").network() is PixelCNNpp
    cfg = compose_train(["model=pixelcnn_pp", "data=cifar10"])
    validate(cfg)
    assert cfg.model.likelihood == {"name": "auto"}
    from autoreg.build import build_module

    module = build_module(cfg)
    assert isinstance(module.net, PixelCNNpp) and module.distribution.name == "logistic_mixture"
    assert module.distribution.nr_logistic_mix == 10 and module.net.out.out_channels == 100  # the paper's 100
    assert build_module(compose_train(["model=pixelcnn_pp"])).distribution.name == "bernoulli"  # binarized MNIST
    module = build_module(compose_train(["model=pixelcnn_pp", "data=mnist256", "model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=5"]))
    assert module.net.out.out_channels == 15
    net = build_model({"name": "pixelcnn_pp", "conditional": True}, (3, 8, 8), DiscretizedLogisticMixture(10), num_classes=10)
    assert net.num_classes == 10 and net.label_bias is not None


@pytest.mark.parametrize("overrides,named", [
    (["model.nr_resnet=0"], "model.nr_resnet=0"),
    (["model.channels=0"], "model.channels=0"),
    (["model.dropout=1.0"], "model.dropout=1.0"),
    (["model.dropout=-0.1"], "model.dropout=-0.1"),
    (["model.dropout=true"], "model.dropout=True"),
    (["model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=0", "data=mnist256"], "model.likelihood.nr_logistic_mix=0"),
    (["model/likelihood=logistic_mixture"], "model/likelihood=logistic_mixture models 8-bit data, but data.bits=1"),
    (["model.likelihood.name=softmax", "data=cifar10"], "model/likelihood=softmax is not a likelihood of model=pixelcnn_pp"),
])
def test_config_errors_are_one_line(overrides, named):
    with pytest.raises(ConfigError) as err:
        validate(compose_train(["model=pixelcnn_pp", *overrides]))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_other_families_refuse_the_mixture_in_one_line():
    with pytest.raises(ConfigError, match="model/likelihood=logistic_mixture is not a likelihood of model=pixelcnn; "
                                          "choose one of: auto, bernoulli, categorical") as err:
        validate(compose_train(["data=cifar10", "model/likelihood=logistic_mixture"]))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model.likelihood.nr_logistic_mix is not an option of the categorical likelihood"):
        validate(compose_train(["data=cifar10", "+model.likelihood.nr_logistic_mix=5"]))


def test_check_accepts_the_defaults_and_the_paper():
    PixelCNNppKeys(nr_resnet=2, channels=32, dropout=0.0).check((3, 32, 32), "logistic_mixture")
    PixelCNNppKeys(nr_resnet=5, channels=160, dropout=0.5).check((3, 32, 32), "logistic_mixture")


@pytest.fixture
def pp_cfg(tmp_path):
    """conftest's tiny training config for model=pixelcnn_pp (which has no model.depth)."""
    def make(*overrides: str):
        tiny_run = [o for o in TINY if not o.startswith("model.depth=")]
        return compose_train(["model=pixelcnn_pp", "model.nr_resnet=1", *tiny_run, *overrides], tmp_path)

    return make


def test_tiny_training_run_on_8bit_mnist(pp_cfg):
    """Four steps on the bundled digits as 8-bit images: the mixture's NLL is the metric."""
    from autoreg.cli import train

    metrics, objects = train(pp_cfg("data=mnist256", "callbacks.samples.num=0", "callbacks.samples.completions=0"))  # grids: the CIFAR-10 test
    assert isinstance(objects["module"].net, PixelCNNpp)
    assert metrics["global_step"] == 4 and math.isfinite(metrics["val/nll"]) and metrics["val/nll"] > 0
    assert metrics["val/bpd"] == pytest.approx(metrics["val/nll"] / (784 * math.log(2)), rel=1e-5)


def sample_cfg(*overrides: str):
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="sample", overrides=[*overrides, "progress=false"])


def test_pixelcnn_pp_trains_on_cifar10_files(tmp_path, monkeypatch, offline, pp_cfg):
    from autoreg.cli import train
    from test_data import write_tiny_cifar

    write_tiny_cifar(tmp_path / "data", monkeypatch)
    metrics, objects = train(pp_cfg(*cifar(tmp_path), "callbacks.samples.num=0", "callbacks.samples.completions=0", "test=true"))
    assert objects["module"].distribution.name == "logistic_mixture" and objects["module"].image_shape == (3, 32, 32)
    for key in ("val/nll", "test/nll"):
        assert 0 < metrics[key] < 3 * 32 * 32 * math.log(256) * 2
        assert metrics[key.replace("nll", "bpd")] == pytest.approx(metrics[key] / (3 * 32 * 32 * math.log(2)), rel=1e-5)


def cifar(tmp_path) -> list[str]:
    return ["data=cifar10", f"data.root={tmp_path / 'data'}", "data.source=auto", "data.batch_size=4", "data.val_size=4",
            "callbacks.samples.scale=1"]


@pytest.mark.parametrize("model", ["pixelcnn", "pixelcnn_pp"])
def test_colour_sample_grids_and_completions(model, tmp_path, monkeypatch, offline, tiny_cfg, pp_cfg):
    """Tiny CIFAR-10 files: TensorBoard's sample grid is in colour (its channels differ) and
    sample.py completes the bottom halves of colour test images (both with the fast sampler)."""
    from autoreg.cli import train
    from autoreg.sample_cli import sample as sample_py
    from test_data import write_tiny_cifar

    write_tiny_cifar(tmp_path / "data", monkeypatch)
    make = pp_cfg if model == "pixelcnn_pp" else tiny_cfg
    train(make(*cifar(tmp_path), "callbacks.samples.num=1"))
    images = read_events(tmp_path)["images"]
    grids = [images[k] for k in images if k.split("/")[-1] == "samples"]  # the grid's tag, with or without its group
    grid = Image.open(io.BytesIO(grids[0][-1][1])).convert("RGB")
    r, g, b = (torch.tensor(list(band.getdata())) for band in grid.split())
    assert not (torch.equal(r, g) and torch.equal(g, b)), "the sample grid is grey"
    out = sample_py(sample_cfg(f"ckpt={tmp_path}/checkpoints/last.ckpt", "num=1", "completions=1", "complete=true",
                               f"out={tmp_path}/c.png"))
    done = Image.open(out)
    assert done.mode == "RGB" and done.size == (3 * 32 + 4 * 2, 32 + 2 * 2)
    hidden = torch.tensor(list(done.crop((2 + 32 + 2, 2 + 16, 2 + 64 + 2, 2 + 32)).getdata()))
    assert (hidden == 128).all()  # the masked copy shows grey where the completion draws


def test_a_kernel_beyond_the_cached_border_has_no_fast_path():
    from autoreg.nn.shifted import DownShiftedConv2d

    model = tiny((1, 5, 5), channels=4)
    model.up_u[0][0].conv_in = DownShiftedConv2d(8, 4, (3, 3))
    assert not has_fast_path(model) and resolve_method(model, "auto") == "naive"
    with pytest.raises(FastSamplingUnsupported, match="beyond the cached maps' border; use sampling.method=naive"):
        sample(model, 1, method="fast", seed=0)
