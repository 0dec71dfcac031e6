"""Samplers: the fast (cached) sampler is exact against the naive one; completion; seeding."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from autoreg.distributions import Bernoulli, Categorical
from autoreg.models.pixelcnn import PixelCNN
from autoreg.sampling import FastSamplingUnsupported, has_fast_path, sample


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and two-thread ops slow down badly when other
    # processes share the two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pixelcnn(channels: int, size: int, distribution, residual: bool, dilation: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    model = PixelCNN(
        (channels, size, size), distribution, channels=12, depth=2, kernel=3, first_kernel=5,
        residual=residual, head_layers=2, dilation=dilation,
    )
    # Sharpen the output so probabilities are far from uniform and a wrong tap would show.
    with torch.no_grad():
        model.head[-1].weight.mul_(8)
    return model


FAMILIES = {
    "residual-bernoulli": (1, 8, Bernoulli(), True, 1),
    "plain-bernoulli-dilated": (1, 8, Bernoulli(), False, 2),
    "residual-cat256-dilated": (1, 6, Categorical(256), True, 2),
    "plain-cat256": (1, 6, Categorical(256), False, 1),
    "residual-cat256-rgb": (3, 5, Categorical(256), True, 1),
    "plain-cat256-rgb-dilated": (3, 5, Categorical(256), False, 2),
}


def exact_probs(model, x, temperature=1.0):
    """The model's conditionals p(x_i | x_<i) of a finished image, from one forward pass."""
    with torch.no_grad():
        return model.distribution.probs(model(x), temperature)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fast_sampler_is_exact(family):
    c, size, distribution, residual, dilation = FAMILIES[family]
    model = tiny_pixelcnn(c, size, distribution, residual, dilation)
    noise = torch.rand((3, c, size, size), generator=torch.Generator().manual_seed(1))
    temperature = 0.8 if residual else 1.0
    naive, naive_probs = sample(model, 3, method="naive", noise=noise, temperature=temperature, return_probs=True)
    fast, fast_probs = sample(model, 3, method="fast", noise=noise, temperature=temperature, return_probs=True)
    assert torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    # Both recorded the probabilities the model assigns to the finished image's pixels.
    assert torch.allclose(naive_probs, exact_probs(model, naive, temperature), atol=1e-6)
    levels = distribution.levels
    assert naive.shape == (3, c, size, size)
    assert torch.equal(naive, (naive * (levels - 1)).round() / (levels - 1))
    assert len(naive.unique()) > 1


@pytest.mark.parametrize("family", ["residual-bernoulli", "residual-cat256-rgb"])
def test_completion_keeps_given_pixels_and_agrees(family):
    c, size, distribution, residual, dilation = FAMILIES[family]
    model = tiny_pixelcnn(c, size, distribution, residual, dilation)
    levels = distribution.levels
    known = torch.randint(0, levels, (4, c, size, size), generator=torch.Generator().manual_seed(2)) / (levels - 1)
    top_half = torch.zeros(1, 1, size, size, dtype=torch.bool)
    top_half[..., : size // 2, :] = True
    naive = sample(model, method="naive", known=known, known_mask=top_half, seed=5)
    fast = sample(model, method="fast", known=known, known_mask=top_half, seed=5)
    assert torch.equal(fast, naive)
    assert torch.equal(fast[..., : size // 2, :], known[..., : size // 2, :])
    assert not torch.equal(fast, known)


def test_completion_with_scattered_given_subpixels():
    c, size, distribution, residual, dilation = FAMILIES["plain-cat256-rgb-dilated"]
    model = tiny_pixelcnn(c, size, distribution, residual, dilation)
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, 256, (3, c, size, size), generator=generator) / 255
    mask = torch.rand((3, c, size, size), generator=generator) < 0.4
    mask[:, :, 0, :2] = True  # a given prefix: the fast sampler starts from a full pass
    mask[:, :, -1, 1:] = True  # a given suffix: drawing stops before it
    noise = torch.rand((3, c, size, size), generator=generator)
    naive, naive_probs = sample(model, method="naive", known=known, known_mask=mask, noise=noise, return_probs=True)
    fast, fast_probs = sample(model, method="fast", known=known, known_mask=mask, noise=noise, return_probs=True)
    assert torch.equal(fast, naive)
    assert torch.equal(fast[mask], known[mask])
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    assert torch.allclose(fast_probs, exact_probs(model, fast), atol=1e-5)


def test_same_seed_same_images_for_any_batch_size():
    model = tiny_pixelcnn(*FAMILIES["residual-bernoulli"][:4])
    first = sample(model, 7, seed=11)
    assert torch.equal(sample(model, 7, seed=11, batch_size=3), first)
    assert torch.equal(sample(model, 7, seed=torch.Generator().manual_seed(11)), first)
    assert not torch.equal(sample(model, 7, seed=12), first)


def test_sampling_leaves_the_model_and_results_usable(capsys):
    model = tiny_pixelcnn(*FAMILIES["plain-bernoulli-dilated"][:4])
    model.train()
    images = sample(model, 2, seed=0, progress=True)
    assert model.training
    assert not images.requires_grad
    images.mul_(2)  # not an inference tensor: callers may edit it
    assert "row" in capsys.readouterr().err


class LabelOnly(nn.Module):
    """A (trivially causal) conditional model: every pixel is on iff the label is 1."""

    def __init__(self):
        super().__init__()
        self.image_shape = (1, 4, 4)
        self.distribution = Bernoulli()
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x, y=None):
        return (self.scale * (2 * y.float() - 1)).view(-1, 1, 1, 1).expand(x.shape)


def test_model_without_fast_path_fails_clearly_and_naive_passes_labels():
    model = LabelOnly()
    assert not has_fast_path(model) and has_fast_path(tiny_pixelcnn(*FAMILIES["plain-cat256"][:4]))
    with pytest.raises(FastSamplingUnsupported, match="sampling.method=naive"):
        sample(model, 2, y=torch.tensor([0, 1]))
    images = sample(model, 2, method="naive", y=torch.tensor([0, 1]), seed=0)
    assert torch.equal(images[0], torch.zeros(1, 4, 4)) and torch.equal(images[1], torch.ones(1, 4, 4))
    assert torch.equal(sample(model, 3, method="naive", y=1, seed=0), torch.ones(3, 1, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fast_sampler_is_exact_on_gpu():
    model = tiny_pixelcnn(*FAMILIES["residual-cat256-rgb"][:4]).cuda()
    noise = torch.rand((3, 3, 5, 5), generator=torch.Generator().manual_seed(1))
    naive, naive_probs = sample(model, 3, method="naive", noise=noise, return_probs=True)
    fast, fast_probs = sample(model, 3, method="fast", noise=noise, return_probs=True)
    assert fast.is_cuda and torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
