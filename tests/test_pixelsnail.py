"""PixelSNAIL: causality by gradients for every output sub-pixel, the attention included (odd
sizes, 28x28, 32x32), every earlier pixel in the field from the first attention block on, the
attention mask itself, the NLL exact (normalised over every binary image, the sum of the per-pixel
terms), naive samples drawn from the distribution the NLL measures (chi-square), completion and
compression, the fast cached sampler against the naive one (every head, greyscale and colour, odd
sizes, conditional, without the u stream, completion, MNIST's and CIFAR-10's sizes, chunked
batches, `prime`, compression on the fast path), conditioning, config checks and a tiny training
run through train()."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from autoreg.config import validate
from autoreg.distributions import Bernoulli, Categorical, DiscretizedLogisticMixture
from autoreg.errors import ConfigError
from autoreg.families import build_model, family
from autoreg.families.pixelsnail import PixelSNAILKeys
from autoreg.models.pixelsnail import PixelSNAIL, earlier_pixels
from autoreg.sampling import has_fast_path, resolve_method, sample

from conftest import TINY, compose_train
from test_gated_pixelcnn import assert_fast_is_exact
from test_pixelcnn_pp import (
    assert_chunks_give_the_same_images,
    assert_first_rows_as_naive,
    assert_prime_is_a_full_pass,
    noise_for,
)
from test_sampling import exact_probs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_KEYS = dict(depth=1, nr_resnet=1, channels=4, key_channels=4, value_channels=4, heads=2)


def tiny(shape, head=None, num_classes=None, seed=0, **keys):
    """A tiny PixelSNAIL in eval mode; label biases random (they start at zero), outputs sharpened."""
    torch.manual_seed(seed)
    model = PixelSNAIL(shape, head or Bernoulli(), PixelSNAILKeys(**{**TINY_KEYS, **keys}), num_classes=num_classes)
    with torch.no_grad():
        model.out.weight.mul_(4)
        if num_classes:
            model.label_bias.embedding.weight.normal_()
    return model.eval()


def support(model, shape, probes, y=None, repeats=2):
    """support[n, q]: whether output channel `probes[n][1]` at raster pixel `probes[n][0]` has a
    nonzero gradient w.r.t. any channel of input pixel q, for any of `repeats` random images (one
    image can cancel a path by chance). One backward pass: batch element r * len(probes) + n
    probes (pixel, channel) n on image r."""
    c, h, w = shape
    torch.manual_seed(1)
    x = torch.rand(repeats * len(probes), c, h, w, requires_grad=True)
    out = model(x, None if y is None else y.expand(len(x))).flatten(2)
    pixel, channel = (torch.tensor(p).repeat(repeats) for p in zip(*probes))
    out[torch.arange(len(x)), channel, pixel].sum().backward()
    return (x.grad != 0).any(1).flatten(1).view(repeats, len(probes), h * w).any(0)


def every_sub_pixel(model, shape, pixels=None):
    """(pixel, output channel) for every output channel of `pixels` (default: all pixels)."""
    pixels = range(shape[1] * shape[2]) if pixels is None else pixels
    return [(p, k) for p in pixels for k in range(model.out.out_channels)]


def earlier(probes, n_pixels):
    """The exact field causality allows (and attention reaches): every pixel before the probe's."""
    return torch.tensor([p for p, _ in probes])[:, None] > torch.arange(n_pixels)[None, :]


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("shape,head,keys", [
    ((1, 7, 5), Bernoulli(), {}),
    ((1, 3, 5), Categorical(256), {}),
    ((1, 9, 4), Bernoulli(), {"depth": 2}),
    ((3, 5, 5), DiscretizedLogisticMixture(2), {"nr_resnet": 2}),
    ((1, 1, 6), Bernoulli(), {}),  # one row: only the left context
    ((1, 6, 7), Bernoulli(), {"u_stream": False, "depth": 2}),  # ul alone: the attention brings the rows above right
])
def test_causal_and_sees_every_earlier_pixel_at_odd_sizes(shape, head, keys, conditional):
    """Every output sub-pixel of every pixel depends on exactly the pixels before it in raster
    order: none of the pixel's own channels, nothing later, every earlier pixel."""
    model = tiny(shape, head, num_classes=3 if conditional else None, **keys)
    probes = every_sub_pixel(model, shape)
    seen = support(model, shape, probes, torch.tensor([2]) if conditional else None)
    allowed = earlier(probes, shape[1] * shape[2])
    assert not seen[~allowed].any(), "an output sees its own pixel or a later one"
    assert torch.equal(seen, allowed), "an earlier pixel is out of reach"


@pytest.mark.parametrize("shape,head", [((1, 28, 28), Bernoulli()), ((3, 32, 32), DiscretizedLogisticMixture(1))])
def test_causal_at_mnist_and_cifar_sizes(shape, head):
    """Corners, edges, the centre and far-apart pixels, every output channel: after one attention
    block an interior pixel's field is the whole past (the convolutions alone reach a few rows)."""
    c, h, w = shape
    model = tiny(shape, head)
    points = [(0, 0), (0, 1), (1, 0), (1, w - 1), (h // 2, w // 2), (h - 1, 0), (h - 1, w - 1), (7, 13), (h - 2, w - 3)]
    probes = every_sub_pixel(model, shape, [i * w + j for i, j in points])
    seen = support(model, shape, probes)
    assert torch.equal(seen, earlier(probes, h * w))


def test_the_field_is_the_whole_past_from_the_first_attention_block_on():
    """At an interior pixel of a 28x28 image, two blocks: the ul stream entering the first attention
    reads a neighbourhood only (each 2-row kernel adds a row above); the first block's output after
    the attention, every earlier pixel."""
    shape, (i, j) = (1, 28, 28), (14, 14)
    model = tiny(shape, depth=2)
    maps = {}  # the hooks return None (update's result): they read, never replace, the outputs
    model.attention[0].register_forward_hook(lambda module, inputs, output: maps.update(before=inputs[1]))
    model.mix[0].register_forward_hook(lambda module, inputs, output: maps.update(after=output))
    x = torch.rand(1, *shape, requires_grad=True)
    model(x)
    seen = {}
    for name in ("before", "after"):
        (grad,) = torch.autograd.grad(maps[name][0, :, i, j].sum(), x, retain_graph=True)
        seen[name] = (grad[0, 0] != 0).flatten()
        assert not seen[name][i * 28 + j :].any(), name
    assert seen["after"][: i * 28 + j].all()
    rows, cols = seen["before"].view(28, 28).nonzero().T
    assert len(rows) and rows.min() >= i - 6 and (cols - j).abs().max() <= 6  # here: 5 rows up, 4 columns each side


@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 32])
def test_causal_for_every_pixel_at_mnist_and_cifar_sizes(size):
    """As above, for every pixel (in chunks of probes), two blocks; the channels of RGB pixels are
    probed at the pixels above and at every pixel of the odd sizes."""
    shape = (1, size, size)
    model = tiny(shape, Bernoulli(), depth=2)
    probes = every_sub_pixel(model, shape)
    for start in range(0, len(probes), 128):
        chunk = probes[start : start + 128]
        assert torch.equal(support(model, shape, chunk), earlier(chunk, shape[1] * shape[2]))


def test_attention_mask_is_strictly_earlier_pixels():
    mask, has_past = earlier_pixels(5, torch.device("cpu"))
    assert torch.equal(mask[1:], torch.ones(5, 5, dtype=torch.bool).tril(-1)[1:])  # j < i, never j = i
    assert mask[0].sum() == 1 and has_past.flatten().tolist() == [False, True, True, True, True]


def test_first_pixel_reads_no_key():
    """The first pixel's attention output is exactly zero: its params are the same for every image."""
    model = tiny((1, 4, 4))
    x = torch.rand(3, 1, 4, 4).round()
    with torch.no_grad():
        params = model(x)
    assert torch.equal(params[:, :, 0, 0], params[:1, :, 0, 0].expand(3, -1))


@pytest.mark.parametrize("conditional", [False, True])
def test_nll_is_normalised_over_every_binary_image(conditional):
    """sum over all 2^(H W) images of exp(-nll) = 1: the per-pixel conditionals form one distribution."""
    shape = (1, 3, 3)
    model = tiny(shape, num_classes=4 if conditional else None, depth=2)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9))).view(-1, *shape)
    y = torch.full((len(images),), 3) if conditional else None
    with torch.no_grad():
        total = torch.exp(-model.distribution.nll(model(images, y), images).double()).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shape,head", [((1, 5, 6), Categorical(256)), ((3, 4, 5), DiscretizedLogisticMixture(3))])
def test_nll_is_the_sum_of_the_per_pixel_terms(shape, head):
    """The NLL in nats per image is -sum of log p(x_i | x_<i) over every sub-pixel, those
    probabilities read from the head's per-sub-pixel tables of the same forward pass."""
    model = tiny(shape, head)
    x = torch.randint(0, 256, (3, *shape), generator=torch.Generator().manual_seed(2)) / 255
    with torch.no_grad():
        params = model(x)
        tables = head.probs(params, 1.0, x)  # (B, C, 256, H, W)
    levels = (x * 255).round().long().unsqueeze(2)
    by_hand = -tables.gather(2, levels).log().flatten(1).sum(1)
    assert torch.allclose(head.nll(params, x), by_hand, rtol=1e-4)


def test_naive_samples_follow_the_nll():
    """20000 naive draws of 2x2 binary images against exp(-nll) of each of the 16 images (chi-square)."""
    shape = (1, 2, 2)
    model = tiny(shape, depth=2)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(-1, *shape)
    with torch.no_grad():
        expected = torch.exp(-model.distribution.nll(model(images), images).double())
    n = 20000
    drawn = sample(model, n, method="naive", seed=0)
    index = (drawn.flatten(1) * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()
    counts = torch.bincount(index, minlength=16).double()
    chi2 = ((counts - n * expected) ** 2 / (n * expected)).sum().item()
    assert chi2 < 37.7  # the 99.9% quantile of chi-square with 15 degrees of freedom


@pytest.mark.parametrize("shape,head", [((1, 5, 5), Bernoulli()), ((3, 4, 4), DiscretizedLogisticMixture(2))])
def test_naive_sampling_records_the_probabilities_of_its_pixels(shape, head):
    """What the sampler recorded is what one forward pass over its result gives; same seed, same
    images for any batch size; completion keeps the given pixels."""
    model = tiny(shape, head)
    images, probs = sample(model, 3, method="naive", seed=2, return_probs=True)
    assert torch.allclose(probs, exact_probs(model, images) if head.name == "bernoulli"
                          else head.probs(model(images).detach(), 1.0, images), atol=1e-6)
    assert torch.equal(sample(model, 3, method="naive", seed=2, batch_size=2), images)
    mask = torch.zeros(1, 1, *shape[1:], dtype=torch.bool)
    mask[..., : shape[1] // 2, :] = True
    done = sample(model, method="naive", known=images, known_mask=mask, seed=5)
    assert torch.equal(done[mask.expand_as(done)], images[mask.expand_as(images)])


@pytest.mark.parametrize("shape,bits,overrides,classes", [
    ((1, 5, 4), 1, [], None),
    ((3, 3, 3), 8, ["model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=2"], None),
    ((1, 5, 6), 1, ["model.conditional=true", "model.u_stream=false"], 10),
])
def test_compression_round_trips(shape, bits, overrides, classes):
    """compress.py codes on the cached sampler by default (`method=auto`) and on the naive path;
    decoding gives the images back, at the same size to a few bytes (the same probabilities to
    float rounding) and at the NLL's bits."""
    from test_compress import assert_fast_and_naive_files_round_trip, random_images, tiny_module

    keys = (f"model.{k}={v}" for k, v in TINY_KEYS.items())
    module = tiny_module(shape, bits, "model=pixelsnail", *keys, *overrides, classes=classes)
    assert resolve_method(module.net, "auto") == "fast"
    images = random_images(3, shape, 2**bits)
    labels = torch.tensor([3, 0, 9]) if classes else None
    stats = assert_fast_and_naive_files_round_trip(module, images, labels)
    with torch.no_grad():
        nll_bits = float(module.nll(images.float() / (2**bits - 1), labels).sum()) / math.log(2)
    nll_bits += len(images) * math.log2(classes) if classes else 0  # the labels, coded uniformly
    assert stats.nll_bits == pytest.approx(nll_bits, rel=1e-4)


FAST = {  # shape, head, keys, conditional, temperature
    "bernoulli-7x5": ((1, 7, 5), Bernoulli(), {}, False, 1.0),
    "bernoulli-conditional-6x6-deep": ((1, 6, 6), Bernoulli(), {"depth": 2, "nr_resnet": 2}, True, 0.8),
    "bernoulli-one-row-1x6": ((1, 1, 6), Bernoulli(), {}, False, 1.0),
    "bernoulli-one-head-dropout-5x5": ((1, 5, 5), Bernoulli(), {"heads": 1, "value_channels": 6, "dropout": 0.5}, False, 1.0),
    "categorical-5x6": ((1, 5, 6), Categorical(256), {}, False, 1.0),
    "categorical-conditional-no-u-7x5": ((1, 7, 5), Categorical(256), {"u_stream": False, "depth": 2}, True, 1.0),
    "mixture-grey-6x6": ((1, 6, 6), DiscretizedLogisticMixture(2), {"depth": 2}, False, 1.0),
    "mixture-rgb-5x4": ((3, 5, 4), DiscretizedLogisticMixture(3), {}, False, 0.8),
    "mixture-rgb-conditional-no-u-4x7": ((3, 4, 7), DiscretizedLogisticMixture(2), {"u_stream": False}, True, 1.0),
}


def fast_case(case):
    shape, head, keys, conditional, temperature = FAST[case]
    model = tiny(shape, head, num_classes=3 if conditional else None, **keys)
    return model, (torch.tensor([0, 2, 1]) if conditional else None), temperature


@pytest.mark.parametrize("case", list(FAST))
def test_fast_sampler_is_exact(case):
    """The same pixels as the naive sampler for the same noise, probabilities within 1e-5."""
    model, y, temperature = fast_case(case)
    assert has_fast_path(model) and resolve_method(model, "auto") == "fast"
    assert_fast_is_exact(model, noise_for(model, 3), y, temperature=temperature)


@pytest.mark.parametrize("case", ["bernoulli-conditional-6x6-deep", "categorical-conditional-no-u-7x5",
                                  "mixture-rgb-conditional-no-u-4x7"])
def test_fast_completion_agrees_with_naive(case):
    """Given top halves; then given pixels scattered, a given prefix (the caches start from a full
    pass) and a given suffix (drawing stops before it, its probabilities from a full pass)."""
    model, y, _ = fast_case(case)
    c, h, w = model.image_shape
    levels = model.distribution.levels
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, levels, (3, c, h, w), generator=generator) / (levels - 1)
    top = torch.zeros(1, 1, h, w, dtype=torch.bool)
    top[..., : h // 2, :] = True
    assert_fast_is_exact(model, noise_for(model, 3), y, known, top)
    mask = (torch.rand((3, 1, h, w), generator=generator) < 0.4).expand(3, c, h, w).clone()
    mask[:, :, :1] = True
    mask[:, :, 1, :3] = True
    mask[:, :, -1, 1:] = True
    assert_fast_is_exact(model, noise_for(model, 3, seed=4), y, known, mask)


@pytest.mark.parametrize("shape,head,conditional", [
    ((1, 28, 28), Bernoulli(), False),
    pytest.param((1, 28, 28), DiscretizedLogisticMixture(2), True, marks=pytest.mark.slow),
    pytest.param((3, 32, 32), DiscretizedLogisticMixture(3), True, marks=pytest.mark.slow),
])
def test_fast_sampler_at_mnist_and_cifar_sizes(shape, head, conditional):
    """Two blocks at 28x28 and 32x32: every key cache holds up to 1023 positions."""
    model = tiny(shape, head, num_classes=3 if conditional else None, depth=2)
    assert_first_rows_as_naive(model, torch.tensor([1, 2]) if conditional else None)


def test_chunked_batches_give_the_same_images():
    assert_chunks_give_the_same_images(tiny((3, 6, 5), DiscretizedLogisticMixture(3), num_classes=3, depth=2))


@pytest.mark.parametrize("u_stream", [True, False])
def test_prime_is_a_full_pass_over_the_canvas(u_stream):
    """As for PixelCNN++; the steps after `prime` read its keys and values of the earlier positions."""
    assert_prime_is_a_full_pass(tiny((3, 7, 6), DiscretizedLogisticMixture(3), num_classes=3, depth=2, u_stream=u_stream))


def test_family_is_found_and_built_from_the_config():
    assert family("pixelsnail").network() is PixelSNAIL
    from autoreg.build import build_module

    mnist = build_module(compose_train(["model=pixelsnail"]))
    assert isinstance(mnist.net, PixelSNAIL) and mnist.distribution.name == "bernoulli"
    assert 20_000 < sum(p.numel() for p in mnist.net.parameters()) < 150_000  # the CPU default
    cifar = build_module(compose_train(["model=pixelsnail", "data=cifar10"]))
    assert cifar.distribution.name == "logistic_mixture" and cifar.net.out.out_channels == 100
    net = build_model({"name": "pixelsnail", "conditional": True}, (1, 8, 8), Bernoulli(), num_classes=10)
    assert net.label_bias.layers == 2 * (2 * 2 + 1)  # depth x (2 nr_resnet stream blocks + the one after attention)
    net = build_model({"name": "pixelsnail", "conditional": True, "u_stream": False}, (1, 8, 8), Bernoulli(), num_classes=10)
    assert net.label_bias.layers == 2 * (2 + 1) and net.u_first is None


def test_dropout_is_active_in_training_only():
    model = tiny((1, 5, 5), dropout=0.5)
    x = torch.rand(2, 1, 5, 5).round()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("overrides,named", [
    (["model.depth=0"], "model.depth=0 is invalid"),
    (["model.nr_resnet=0"], "model.nr_resnet=0 is invalid"),
    (["model.channels=-1"], "model.channels=-1 is invalid"),
    (["model.heads=0"], "model.heads=0 is invalid"),
    (["model.key_channels=6", "model.heads=4"], "model.key_channels=6 is invalid with model.heads=4: it must be a multiple"),
    (["model.value_channels=5"], "model.value_channels=5 is invalid with model.heads=2"),
    (["model.dropout=1.0"], "model.dropout=1.0 is invalid"),
    (["model.dropout=true"], "model.dropout=True is invalid"),
    (["model.u_stream=maybe"], "model.u_stream=maybe is invalid: it must be true or false"),
    (["data=cifar10", "model/likelihood=categorical"], "model/likelihood=categorical cannot model 3-channel images with model=pixelsnail"),
    (["model/likelihood=logistic_mixture"], "model/likelihood=logistic_mixture models 8-bit data, but data.bits=1"),
    (["+model.kernel=3"], "model.kernel is not an option of model=pixelsnail"),
])
def test_config_errors_are_one_line(overrides, named):
    with pytest.raises(ConfigError) as err:
        validate(compose_train(["model=pixelsnail", *overrides]))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_check_accepts_the_defaults_and_the_paper():
    PixelSNAILKeys().check((1, 28, 28), "bernoulli")
    PixelSNAILKeys(depth=12, nr_resnet=4, channels=256, key_channels=16, value_channels=128, heads=1,
                   dropout=0.5, u_stream=False).check((3, 32, 32), "logistic_mixture")


def test_tiny_training_run(tmp_path):
    """Four steps on the bundled digits through train(): the NLL and bits/dim are logged."""
    from autoreg.cli import train

    tiny_run = [o for o in TINY if not o.startswith(("model.depth=", "model.channels=", "callbacks.samples.num="))]
    keys = [f"model.{k}={v}" for k, v in TINY_KEYS.items()]
    metrics, objects = train(compose_train(["model=pixelsnail", *keys, *tiny_run, "callbacks.samples.num=0",
                                            "callbacks.samples.completions=0"], tmp_path))
    assert isinstance(objects["module"].net, PixelSNAIL)
    assert metrics["global_step"] == 4 and math.isfinite(metrics["val/nll"]) and metrics["val/nll"] > 0
    assert metrics["val/bpd"] == pytest.approx(metrics["val/nll"] / (784 * math.log(2)), rel=1e-5)
