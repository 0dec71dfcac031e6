"""Samplers: the fast (cached) sampler is exact against the naive one; completion; seeding."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from autoreg.distributions import Bernoulli, Categorical
from autoreg.families.pixelcnn import PixelCNNKeys
from autoreg.families.pixelrnn import PixelRNNKeys
from autoreg.models.pixelcnn import PixelCNN
from autoreg.models.pixelrnn import PixelRNN
from autoreg.sampling import FastSamplingUnsupported, has_fast_path, sample


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pixelcnn(channels: int, size: int, distribution, residual: bool, dilation: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    keys = PixelCNNKeys(channels=12, depth=2, kernel=3, first_kernel=5, residual=residual, head_layers=2, dilation=dilation)
    model = PixelCNN((channels, size, size), distribution, keys)
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


def assert_completion_agrees(model, known, mask, noise):
    """Fast and naive completions: same pixels, given ones kept, probabilities within 1e-5 of
    each other and of one forward pass over the result."""
    naive, naive_probs = sample(model, method="naive", known=known, known_mask=mask, noise=noise, return_probs=True)
    fast, fast_probs = sample(model, method="fast", known=known, known_mask=mask, noise=noise, return_probs=True)
    assert torch.equal(fast, naive)
    assert torch.equal(fast[mask], known[mask])
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    assert torch.allclose(fast_probs, exact_probs(model, fast), atol=1e-5)


def test_completion_with_scattered_given_subpixels():
    c, size, distribution, residual, dilation = FAMILIES["plain-cat256-rgb-dilated"]
    model = tiny_pixelcnn(c, size, distribution, residual, dilation)
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, 256, (3, c, size, size), generator=generator) / 255
    mask = torch.rand((3, c, size, size), generator=generator) < 0.4
    mask[:, :, 0, :2] = True  # a given prefix: the fast sampler starts from a full pass
    mask[:, :, -1, 1:] = True  # a given suffix: drawing stops before it
    noise = torch.rand((3, c, size, size), generator=generator)
    assert_completion_agrees(model, known, mask, noise)


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


def tiny_row_lstm(channels: int, size: int, distribution, cell: str, kernel: int, depth: int, seed: int = 0):
    torch.manual_seed(seed)
    keys = PixelRNNKeys(arch="row_lstm", cell=cell, depth=depth, channels=4 * channels, kernel=kernel, head_layers=2)
    model = PixelRNN((channels, size, size), distribution, keys)
    with torch.no_grad():
        for block in model.layers:
            block.layer.initial_state.normal_()  # learned initial states: row -1 is not zero
        model.head[-1].weight.mul_(8)
    return model


ROW_LSTMS = {  # channels, size, distribution, cell, kernel, depth
    "lstm-k3-bernoulli": (1, 8, Bernoulli(), "lstm", 3, 2),
    "lstm-k5-bernoulli": (1, 7, Bernoulli(), "lstm", 5, 1),
    "gru-k3-bernoulli": (1, 8, Bernoulli(), "gru", 3, 1),
    "gru-k5-bernoulli": (1, 7, Bernoulli(), "gru", 5, 2),
    "lstm-k3-cat256-rgb": (3, 6, Categorical(256), "lstm", 3, 1),
    "lstm-k5-cat256-rgb": (3, 6, Categorical(256), "lstm", 5, 2),
    "gru-k3-cat256-rgb": (3, 6, Categorical(256), "gru", 3, 2),
    "gru-k5-cat256-rgb": (3, 6, Categorical(256), "gru", 5, 1),
}


@pytest.mark.parametrize("family", list(ROW_LSTMS))
def test_fast_sampler_is_exact_for_row_lstm(family):
    model = tiny_row_lstm(*ROW_LSTMS[family])
    c, size = ROW_LSTMS[family][:2]
    assert has_fast_path(model)
    noise = torch.rand((3, c, size, size), generator=torch.Generator().manual_seed(1))
    naive, naive_probs = sample(model, 3, method="naive", noise=noise, return_probs=True)
    fast, fast_probs = sample(model, 3, method="fast", noise=noise, return_probs=True)
    assert torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    assert torch.allclose(fast_probs, exact_probs(model, fast), atol=1e-5)
    assert len(naive.unique()) > 1


@pytest.mark.parametrize("family", ["lstm-k5-cat256-rgb", "gru-k3-cat256-rgb", "lstm-k3-bernoulli"])
def test_row_lstm_completion_agrees_with_naive(family):
    assert_recurrent_completion_agrees(tiny_row_lstm(*ROW_LSTMS[family]), *ROW_LSTMS[family][:3])


def assert_recurrent_completion_agrees(model, c: int, size: int, distribution):
    """Given rows, a given prefix of the next row, scattered given sub-pixels and a given suffix."""
    levels = distribution.levels
    generator = torch.Generator().manual_seed(3)
    known = torch.randint(0, levels, (3, c, size, size), generator=generator) / (levels - 1)
    mask = torch.rand((3, c, size, size), generator=generator) < 0.4
    mask[:, :, :2] = True  # given rows and a given prefix of the next: the caches start from a full pass
    mask[:, :, 2, :3] = True
    mask[:, :, -1, 1:] = True  # a given suffix: drawing stops before it
    noise = torch.rand((3, c, size, size), generator=generator)
    assert_completion_agrees(model, known, mask, noise)


def tiny_diagonal_bilstm(channels: int, size: int, distribution, cell: str, depth: int, conditional: bool = False):
    torch.manual_seed(0)
    keys = PixelRNNKeys(arch="diagonal_bilstm", cell=cell, depth=depth, channels=4 * channels, head_layers=2)
    model = PixelRNN((channels, size, size), distribution, keys, num_classes=3 if conditional else None)
    with torch.no_grad():
        for block in model.layers:
            block.layer.initial_state.normal_()  # learned initial states: outside the image is not zero
        model.head[-1].weight.mul_(8)
        if conditional:
            model.label_bias.embedding.weight.normal_()
    return model


DIAGONAL_BILSTMS = {  # channels, size, distribution, cell, depth, conditional
    "lstm-bernoulli": (1, 7, Bernoulli(), "lstm", 2, False),
    "gru-bernoulli-conditional": (1, 6, Bernoulli(), "gru", 2, True),
    "lstm-cat256-rgb": (3, 5, Categorical(256), "lstm", 1, False),
    "gru-cat256-rgb": (3, 5, Categorical(256), "gru", 2, False),
}


@pytest.mark.parametrize("family", list(DIAGONAL_BILSTMS))
def test_fast_sampler_is_exact_for_diagonal_bilstm(family):
    model = tiny_diagonal_bilstm(*DIAGONAL_BILSTMS[family])
    c, size, *_, conditional = DIAGONAL_BILSTMS[family]
    assert has_fast_path(model)
    y = torch.tensor([0, 2, 1]) if conditional else None
    noise = torch.rand((3, c, size, size), generator=torch.Generator().manual_seed(1))
    naive, naive_probs = sample(model, 3, y=y, method="naive", noise=noise, return_probs=True)
    fast, fast_probs = sample(model, 3, y=y, method="fast", noise=noise, return_probs=True)
    assert torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
    with torch.no_grad():
        assert torch.allclose(fast_probs, model.distribution.probs(model(fast, y)), atol=1e-5)
    assert len(naive.unique()) > 1


@pytest.mark.parametrize("family", ["lstm-bernoulli", "gru-cat256-rgb"])
def test_diagonal_bilstm_completion_agrees_with_naive(family):
    assert_recurrent_completion_agrees(tiny_diagonal_bilstm(*DIAGONAL_BILSTMS[family]), *DIAGONAL_BILSTMS[family][:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("family", ["pixelcnn", "row_lstm", "diagonal_bilstm"])
def test_fast_sampler_is_exact_on_gpu(family):
    if family == "pixelcnn":
        model = tiny_pixelcnn(*FAMILIES["residual-cat256-rgb"][:4]).cuda()
    elif family == "diagonal_bilstm":
        model = tiny_diagonal_bilstm(*DIAGONAL_BILSTMS["gru-cat256-rgb"]).cuda()
    else:
        model = tiny_row_lstm(3, 5, Categorical(256), "lstm", 3, 2).cuda()
    noise = torch.rand((3, 3, 5, 5), generator=torch.Generator().manual_seed(1))
    naive, naive_probs = sample(model, 3, method="naive", noise=noise, return_probs=True)
    fast, fast_probs = sample(model, 3, method="fast", noise=noise, return_probs=True)
    assert fast.is_cuda and torch.equal(fast, naive)
    assert (fast_probs - naive_probs).abs().max() < 1e-5
