"""PixelCNN: causality by gradients, masks, and an exact NLL."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoreg.distributions import Bernoulli, Categorical, bits_per_dim
from autoreg.families import build_model
from autoreg.nn.masked import causal_mask


def input_gradient(model, shape, pixel, channel=0):
    """|d params[pixel, channel group] / d x|, summed over the group's params and a batch of 8
    random images (so one dead ReLU cannot hide a dependency), shape (C, H, W)."""
    torch.manual_seed(0)
    x = torch.rand(8, *shape, requires_grad=True)
    params = model(x)
    k = params.shape[1] // shape[0]
    params[:, channel * k : (channel + 1) * k, pixel[0], pixel[1]].sum().backward()
    return x.grad.abs().sum(0)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("residual", [True, False])
def test_causal_binary(kernel, depth, residual):
    torch.manual_seed(kernel * 10 + depth)
    model = build_model(
        {"name": "pixelcnn", "channels": 8, "depth": depth, "kernel": kernel, "residual": residual},
        (1, 9, 9), Bernoulli(),
    )
    for i, j in [(4, 4), (0, 3), (8, 8), (2, 0)]:
        grad = input_gradient(model, (1, 9, 9), (i, j))[0].flatten()
        pos = i * 9 + j
        assert torch.all(grad[pos:] == 0), f"pixel ({i},{j}) sees itself or the future"
        if pos > 0:
            assert grad[:pos].sum() > 0, f"pixel ({i},{j}) sees no context"


def test_causal_rgb_channel_order():
    torch.manual_seed(0)
    model = build_model({"name": "pixelcnn", "channels": 12, "depth": 2, "kernel": 3}, (3, 6, 6), Categorical(256))
    i, j = 3, 2
    pos = i * 6 + j
    for c in range(3):
        grad = input_gradient(model, (3, 6, 6), (i, j), channel=c).flatten(1)  # (C, H*W)
        assert torch.all(grad[:, pos + 1 :] == 0)
        assert torch.all(grad[c:, pos] == 0), f"channel {c} sees itself or a later channel"
        if c > 0:
            assert grad[:c, pos].sum() > 0, f"channel {c} ignores earlier channels of its pixel"


def test_blind_spot_of_pixelcnn():
    """The stacked masks miss pixels to the upper right (van den Oord et al. 2016b, fig. 1)."""
    model = build_model({"name": "pixelcnn", "channels": 8, "depth": 3, "kernel": 3, "first_kernel": 3},
                        (1, 9, 9), Bernoulli())
    grad = input_gradient(model, (1, 9, 9), (6, 4))[0]
    assert grad[5, 3] > 0 and grad[3, 4] > 0
    assert grad[5, 8] == 0  # earlier in raster order, yet outside the receptive field


def test_mask_shapes():
    a = causal_mask(1, 1, (3, 3), "A")[0, 0]
    b = causal_mask(1, 1, (3, 3), "B")[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_bernoulli_nll_by_hand():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]], [[[1.0, -2.0], [0.5, 0.0]]]])
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    sig = lambda v: 1 / (1 + math.exp(-v))
    expected = []
    for lg, xs in zip(logits.flatten(1).tolist(), x.flatten(1).tolist()):
        expected.append(-sum(math.log(sig(l)) if v else math.log(1 - sig(l)) for l, v in zip(lg, xs)))
    nll = Bernoulli().nll(logits, x)
    assert torch.allclose(nll, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(bits_per_dim(nll, 4), torch.tensor(expected) / (4 * math.log(2)))


def test_categorical_nll_by_hand():
    torch.manual_seed(0)
    params = torch.randn(2, 3 * 256, 2, 2)
    x = torch.randint(0, 256, (2, 3, 2, 2)).float() / 255
    logp = F.log_softmax(params.view(2, 3, 256, 2, 2), dim=2)
    expected = torch.zeros(2)
    for b in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    expected[b] -= logp[b, c, round(x[b, c, i, j].item() * 255), i, j]
    assert torch.allclose(Categorical(256).nll(params, x), expected, atol=1e-4)


def test_uniform_model_nll_is_d_log_levels():
    """All-zero logits give exactly D ln 2 (binary) and D ln 256 (8-bit) nats per image."""
    x = torch.zeros(3, 1, 4, 4)
    assert torch.allclose(Bernoulli().nll(torch.zeros(3, 1, 4, 4), x), torch.full((3,), 16 * math.log(2)))
    assert torch.allclose(Categorical(256).nll(torch.zeros(3, 256, 4, 4), x), torch.full((3,), 16 * math.log(256)))
