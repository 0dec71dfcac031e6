"""MaskedConv2d computes only the kernel rows its mask keeps, and equals the full masked conv."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoreg.nn.masked import MaskedConv2d

KERNELS = [1, 3, 5, 7, (1, 3), (3, 1)]
SHAPES = [(7, 9), (6, 8), (5, 4)]  # (H, W): odd, even, mixed; 5 rows < the 7x7 dilated-2 reach


def reference(conv: MaskedConv2d, x: torch.Tensor) -> torch.Tensor:
    """The full 'same' convolution with the masked kh x kw kernel (the pre-optimisation forward)."""
    kh, kw = conv.kernel_size
    d = conv.dilation
    return F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=(d[0] * (kh // 2), d[1] * (kw // 2)), dilation=d)


def make_conv(kernel, mask_type, data_channels, dilation, bias=True, seed=0):
    torch.manual_seed(seed)
    conv = MaskedConv2d(3, 6, kernel, mask_type, data_channels, dilation=dilation, bias=bias)
    with torch.no_grad():  # weights of order 1 everywhere, so a missing or extra tap shows
        conv.weight.normal_()
        if bias:
            conv.bias.normal_()
    return conv


def outputs_and_grads(fn, conv, x, upstream):
    conv.zero_grad()
    x = x.detach().requires_grad_()
    out = fn(x)
    out.backward(upstream)
    grads = [x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    return out.detach(), [g.clone() for g in grads]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("data_channels", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2])
def test_forward_and_gradients_equal_the_full_masked_conv(kernel, mask_type, data_channels, dilation):
    # Some cases without bias (dilation 2 with three data channels).
    conv = make_conv(kernel, mask_type, data_channels, dilation, bias=(dilation == 1 or data_channels == 1))
    for h, w in SHAPES:
        x = torch.randn(2, 3, h, w)
        upstream = torch.randn(2, 6, h, w)
        out, grads = outputs_and_grads(conv, conv, x, upstream)
        ref, ref_grads = outputs_and_grads(lambda x: reference(conv, x), conv, x, upstream)
        assert out.shape == ref.shape == (2, 6, h, w)
        assert (out - ref).abs().max() <= 1e-5, (h, w)
        assert ref.abs().max() > 1  # not a trivially small output
        for name, g, r in zip(["input", "weight", "bias"], grads, ref_grads):
            assert g.shape == r.shape
            assert (g - r).abs().max() <= 1e-5, (name, h, w)
        # The masked-out taps (rows below the centre included) get exactly zero gradient.
        assert torch.all(grads[1][conv.mask == 0] == 0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_only_the_kept_rows_are_computed(kernel, monkeypatch):
    """The convolution actually run has kh // 2 + 1 rows (the full kernel when kh == 1)."""
    conv = make_conv(kernel, "B", 1, 1)
    kh, kw = conv.kernel_size
    shapes = []
    conv2d = F.conv2d

    def spy(x, weight, *args, **kwargs):
        shapes.append(tuple(weight.shape))
        return conv2d(x, weight, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", spy)
    conv(torch.randn(1, 3, 6, 6))
    assert shapes == [(6, 3, kh // 2 + 1 if kh > 1 else 1, kw)]


@pytest.mark.parametrize("kernel", [1, 3, (1, 3)])
def test_state_dict_and_attributes_unchanged(kernel):
    conv = make_conv(kernel, "A", 3, 1)
    kh, kw = conv.kernel_size
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert conv.weight.shape == conv.mask.shape == (6, 3, kh, kw)
    assert "mask" in dict(conv.named_buffers()) and "mask" not in conv.state_dict()
    assert set(make_conv(kernel, "A", 3, 1, bias=False).state_dict()) == {"weight"}
    # An old checkpoint (full kh x kw weight) loads strictly and gives the same outputs.
    other = MaskedConv2d(3, 6, kernel, "A", 3)
    other.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(other(x), conv(x))


def test_weight_is_never_masked_in_place():
    conv = make_conv(5, "B", 1, 1)
    before = conv.weight.detach().clone()
    conv(torch.randn(2, 3, 6, 6)).sum().backward()
    assert torch.equal(conv.weight.detach(), before)
    assert (before[conv.mask == 0] != 0).all()  # the masked taps still hold their raw values


def test_bf16_autocast_matches_the_full_masked_conv():
    conv = make_conv(7, "B", 1, 1)
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = conv(x), reference(conv, x)
    assert out.dtype == ref.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa; outputs are of order 10.
    assert (out.float() - ref.float()).abs().max() <= 0.1 * ref.float().abs().max()
