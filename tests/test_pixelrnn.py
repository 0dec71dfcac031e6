"""PixelRNN: causality and receptive fields by gradients, the cells' equations, skew/unskew, shapes,
config errors."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoreg.distributions import Bernoulli, Categorical
from autoreg.errors import ConfigError
from autoreg.families import build_model
from autoreg.families.pixelrnn import PixelRNNKeys
from autoreg.models.pixelrnn import FIRST_KERNEL, PixelRNN
from autoreg.nn.recurrent import CELLS, DiagonalBiLSTM, RowLSTM, diagonal_order
from autoreg.nn.skew import skew, unskew

from conftest import torch_threads

H = W = 8
REPEATS = 2  # random images per probed output


pytestmark = pytest.mark.usefixtures("one_thread")


def dependencies(net, shape, out_groups):
    """dep[i, g, c, q]: whether output group g at pixel i has a nonzero gradient w.r.t. input channel
    c at pixel q (pixels in raster order). One backward pass: batch element b probes one (i, g)."""
    c, h, w = shape
    probes = h * w * out_groups
    torch.manual_seed(0)
    x = torch.randn(REPEATS * probes, c, h, w, requires_grad=True)
    out = net(x)
    out = out.reshape(REPEATS, probes, out_groups, -1, h * w)  # params per group, contiguous groups
    b = torch.arange(probes)
    out[:, b, b % out_groups, :, b // out_groups].sum().backward()
    grad = x.grad.reshape(REPEATS, h * w, out_groups, c, h * w)
    return (grad != 0).any(0)


def earlier(h, w, c):
    """allowed[i, g, c, q]: q before i in raster order, or q = i and channel c before group g."""
    n = h * w
    i, q = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (q < i)[:, None, None, :].expand(n, c, c, n).clone()
    for g in range(c):
        allowed[torch.arange(n), g, :g, torch.arange(n)] = True
    return allowed


def leaky(model: nn.Module) -> nn.Module:
    """ReLU -> leaky ReLU: a unit that is off for every probe image would hide a dependency (a
    false "unreachable"); leaky units never do, and can only reveal more leaks, never fewer."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.LeakyReLU(0.1))
    return model


def tiny(shape, arch, cell, kernel=3, depth=1):
    torch.manual_seed(depth * 100 + kernel)
    head = Bernoulli() if shape[0] == 1 else Categorical(4)
    return leaky(PixelRNN(shape, head, PixelRNNKeys(arch=arch, cell=cell, depth=depth, channels=4 * shape[0], kernel=kernel)))


CASES = [("row_lstm", k) for k in (3, 5, 7)] + [("diagonal_bilstm", 3)]


@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("arch,kernel", CASES)
def test_causal(arch, kernel, cell, depth, colours):
    """No output sees its own pixel, a later pixel, or (RGB) a later channel of its pixel; every
    output after the first pixel sees something, and (RGB) later channels see earlier ones."""
    shape = (colours, H, W)
    dep = dependencies(tiny(shape, arch, cell, kernel, depth), shape, colours)
    allowed = earlier(H, W, colours)
    leaks = (dep & ~allowed).nonzero().tolist()
    assert not leaks, f"(pixel, group, channel, input pixel) that see the future: {leaks[:5]}"
    assert dep.flatten(2).any(-1)[1:].all()
    pixels = torch.arange(H * W)
    for g in range(1, colours):
        assert dep[pixels, g, :g, pixels].all(), f"group {g} misses an earlier channel of its own pixel"


@pytest.mark.parametrize("kernel", [5, 7])
def test_diagonal_bilstm_rejects_other_kernels(kernel):
    with pytest.raises(ConfigError, match="model.arch=diagonal_bilstm"):
        build_model({"name": "pixelrnn", "arch": "diagonal_bilstm", "kernel": kernel}, (1, H, W), Bernoulli())


@pytest.mark.parametrize("height,width", [(H, W), (5, 9), (9, 4), (1, 6), (6, 1)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_diagonal_bilstm_layer_sees_whole_context(cell, height, width):
    """The layer alone (mask-B input): output (r, j) depends on exactly the inputs at (r, j) and
    before, the paper's full context: above-left from one direction, above-right from the other."""
    torch.manual_seed(0)
    layer = DiagonalBiLSTM(1, 4, cell)
    dep = dependencies(layer, (1, height, width), 1)[:, 0, 0]
    n = height * width
    assert torch.equal(dep, torch.arange(n)[None, :] <= torch.arange(n)[:, None])


def test_diagonal_order_walks_the_skewed_columns():
    order, rank, lengths = diagonal_order(2, 3)  # pixels 0 1 2 / 3 4 5; diagonals 0 | 1 3 | 2 4 | 5
    assert order.tolist() == [0, 1, 3, 2, 4, 5] and lengths == [1, 2, 2, 1]
    assert torch.equal(order[rank], torch.arange(6))


@pytest.mark.parametrize("colours,depth", [(1, 1), (1, 2), (3, 1)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_diagonal_bilstm_model_sees_every_earlier_pixel(cell, depth, colours):
    """The whole model sees every earlier sub-pixel but one that no causal stack on the paper's 7x7
    mask-A first layer can see: the last sub-pixel of row r-1 (pixel (r-1, W-1), last channel) from
    (r, j) with j < W-4. Later layers read the first layer only at positions <= (r, j); none of
    their windows reaches column W-1 of row r-1, and (r-1, W-1) itself holds only its earlier
    channels (mask A)."""
    shape = (colours, H, W)
    dep = dependencies(tiny(shape, "diagonal_bilstm", cell, depth=depth), shape, colours)
    expected = earlier(H, W, colours)
    for r in range(1, H):
        for j in range(W - 1 - FIRST_KERNEL // 2):
            expected[r * W + j, :, colours - 1, (r - 1) * W + W - 1] = False
    assert torch.equal(dep, expected)


@pytest.mark.parametrize("kernel", [3, 5])
def test_row_lstm_layer_sees_a_triangle(kernel):
    """The layer alone: row r - d contributes columns j - (d+1)k' .. j + d k' (k' = k // 2); the
    current row only up to j (mask B)."""
    torch.manual_seed(0)
    layer = RowLSTM(1, 4, kernel)
    dep = dependencies(layer, (1, H, W), 1)[:, 0, 0].view(H, W, H, W)
    half = kernel // 2
    for r in range(H):
        for j in range(W):
            expected = torch.zeros(H, W, dtype=torch.bool)
            for d in range(r + 1):
                right = j if d == 0 else j + d * half
                expected[r - d, max(0, j - (d + 1) * half) : min(W, right + 1)] = True
            assert torch.equal(dep[r, j], expected), (r, j)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_row_lstm_model_misses_some_earlier_pixels(cell):
    dep = dependencies(tiny((1, H, W), "row_lstm", cell, depth=2), (1, H, W), 1)[:, 0, 0].view(H, W, H, W)
    seen = dep[H - 1, 0]  # the first pixel of the last row
    assert seen[H - 2, 0] and seen[0, W - 1]  # just above; far up, where the triangle is wide
    assert not seen[H - 2, W - 1]  # earlier in raster order, yet outside the triangle


def test_cells_match_torch_reference():
    """Our gate layouts against torch.nn.LSTMCell / GRUCell: catches a sigmoid on the candidate or a
    reset gate in the wrong place."""
    torch.manual_seed(0)
    n, d, h = 5, 3, 4
    inp, prev_h, prev_c = torch.randn(n, d), torch.randn(n, h), torch.randn(n, h)

    ref = torch.nn.LSTMCell(d, h)
    i, f, g, o = (ref.weight_ih @ inp.T).T.add(ref.bias_ih).chunk(4, 1)
    si, sf, sg, so = (ref.weight_hh @ prev_h.T).T.add(ref.bias_hh).chunk(4, 1)
    x, s = torch.stack([o, f, i, g], 1), torch.stack([so, sf, si, sg], 1)  # ours: (n, [o, f, i, g], h)
    ours = CELLS["lstm"].step(x, s, (prev_h, prev_c))
    want = ref(inp, (prev_h, prev_c))
    assert torch.allclose(ours[0], want[0], atol=1e-6) and torch.allclose(ours[1], want[1], atol=1e-6)

    ref = torch.nn.GRUCell(d, h)
    r, z, m = (ref.weight_ih @ inp.T).T.add(ref.bias_ih).chunk(3, 1)
    sr, sz, sm = (ref.weight_hh @ prev_h.T).T.add(ref.bias_hh).chunk(3, 1)
    ours = CELLS["gru"].step(torch.stack([z, r, m], 1), torch.stack([sz, sr, sm], 1), (prev_h,))
    assert torch.allclose(ours[0], ref(inp, prev_h), atol=1e-6)


def reference_row_lstm(layer, x):
    """The Row LSTM written plainly: a masked conv over the image, a conv1d along each row."""
    conv, g, h, k = layer.input_to_state, layer.cell.gates, layer.hidden, layer.kernel
    xg = F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=(0, k // 2))
    xg = xg.permute(0, 2, 3, 1).unflatten(-1, (g, h))  # (B, H, W, G, h)
    w_ss = layer.state_to_state.t().reshape(g * h, h, k)  # back to a conv1d weight
    b, _, height, width = x.shape
    state = [s.expand(b, width, h) for s in layer.initial_state]
    rows = []
    for r in range(height):
        s = F.conv1d(state[0].transpose(1, 2), w_ss, padding=k // 2).transpose(1, 2)
        state = layer.cell.step(xg[:, r], s.unflatten(-1, (g, h)), state)
        rows.append(state[0])
    return torch.stack(rows, 1).permute(0, 3, 1, 2)


def reference_diagonal_bilstm(layer, x):
    """The Diagonal BiLSTM written plainly, pixel by pixel in raster order (which visits the
    above and left neighbours first), for each direction on its own."""
    conv, g, h = layer.input_to_state, layer.cell.gates, layer.hidden
    b, _, height, width = x.shape
    w = (conv.weight * conv.mask)[:, :, 0, 0].view(2, g * h, -1)
    out = []
    for d, image in enumerate([x, x.flip(-1)]):
        xg = torch.einsum("oc,bchw->bhwo", w[d], image) + conv.bias.view(2, -1)[d]
        init = [s[d, 0, 0].expand(b, h) for s in layer.initial_state]
        states = {}
        for r in range(height):
            for j in range(width):
                above = states[r - 1, j][0] if r > 0 else init[0]
                left = states[r, j - 1] if j > 0 else init
                s = torch.cat([above, left[0]], -1) @ layer.state_to_state[d]
                states[r, j] = layer.cell.step(xg[:, r, j].view(b, g, h), s.view(b, g, h), left)
        out.append(torch.stack([torch.stack([states[r, j][0] for j in range(width)], -1) for r in range(height)], -2))
    rtl = torch.zeros_like(out[1])
    rtl[:, :, 1:] = out[1].flip(-1)[:, :, :-1]  # mirrored back, shifted down one row
    return out[0] + rtl


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layers_match_plain_references(cell):
    """The vectorised layers (row/column blocks, gathered diagonals, matrices for convolutions)
    against plain loops; learned initial states and biases perturbed so that they count."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4)
    for layer, reference in [(RowLSTM(3, 4, 3, cell), reference_row_lstm), (DiagonalBiLSTM(3, 4, cell), reference_diagonal_bilstm)]:
        with torch.no_grad():
            layer.initial_state.normal_()
        assert torch.allclose(layer(x), reference(layer, x), atol=1e-5), type(layer).__name__


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_diagonal_bilstm_in_batch_chunks_is_the_same_layer(cell, threads, monkeypatch):
    """On a CPU a large batch runs in chunks of images (cache-sized, in parallel threads when torch
    has several); outputs and gradients must not change. A tiny chunk budget makes a batch of 5 run
    as chunks of at most 2."""
    import autoreg.nn.recurrent as recurrent

    torch.manual_seed(0)
    layer = DiagonalBiLSTM(3, 4, cell)
    with torch.no_grad():
        layer.initial_state.normal_()
    x = torch.randn(5, 3, 4, 6, requires_grad=True)
    outputs, grads = [], []
    for budget in (recurrent.CPU_CHUNK_BYTES, 2 * (2 * 4 * layer.cell.gates * 4 * 4)):
        monkeypatch.setattr(recurrent, "CPU_CHUNK_BYTES", budget)
        with torch_threads(threads):
            out = layer(x)
            weights = torch.linspace(-1, 1, out.numel()).view_as(out)
            grads.append(torch.autograd.grad((out * weights).sum(), [x, *layer.parameters()]))
        outputs.append(out.detach())
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_derivatives_are_exact(cell):
    """The cells' written-out backward against finite differences (float64), on strided gate
    views as the layers pass them, with gradients flowing into every input and state."""
    torch.manual_seed(0)
    g, h = CELLS[cell].gates, 3
    x = torch.randn(h, 4, g, dtype=torch.float64).transpose(0, 2).requires_grad_()  # (g, 4, h) strided
    s = torch.randn(4, g, h, dtype=torch.float64, requires_grad=True)
    state = [torch.randn(4, h, dtype=torch.float64, requires_grad=True) for _ in range(CELLS[cell].states)]
    assert torch.autograd.gradcheck(lambda x, s, *state: CELLS[cell].step(x.transpose(0, 1), s, state), (x, s, *state))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layer", ["row_lstm", "diagonal_bilstm"])
def test_layer_gradients_are_exact(layer, cell):
    """Each layer's gradients (input, convolutions, learned initial states) against finite
    differences in float64: the cells' hand-written backward inside the real recurrences."""
    torch.manual_seed(0)
    net = (RowLSTM(2, 2, 3, cell) if layer == "row_lstm" else DiagonalBiLSTM(2, 2, cell)).double()
    with torch.no_grad():
        net.initial_state.normal_()
    names = [name for name, _ in net.named_parameters()]
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *params):
        return torch.func.functional_call(net, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(run, (x, *net.parameters()))


def test_skew_shifts_row_r_by_r():
    x = torch.arange(1.0, 10.0).view(3, 3)
    assert skew(x).tolist() == [[1, 2, 3, 0, 0], [0, 4, 5, 6, 0], [0, 0, 7, 8, 9]]


@pytest.mark.parametrize("shape,dim", [((2, 3, 5, 7), -2), ((2, 7, 5, 3), -2), ((4, 6, 2, 3), 1), ((1, 1, 1), -2)])
def test_skew_unskew_round_trip(shape, dim):
    x = torch.randn(shape)
    y = skew(x, dim)
    d = dim % x.dim()
    h, w = shape[d], shape[d + 1]
    assert y.shape[d + 1] == w + h - 1
    assert torch.equal(unskew(y, dim), x)
    for r in range(h):  # row r holds the input row at columns r .. r + w - 1, zeros elsewhere
        row = y.select(d, r)
        assert torch.equal(row.narrow(d, r, w), x.select(d, r))
        assert torch.count_nonzero(row) == torch.count_nonzero(x.select(d, r))


@pytest.mark.parametrize("arch", ["row_lstm", "diagonal_bilstm"])
@pytest.mark.parametrize("shape,head", [((1, 8, 6), Bernoulli()), ((3, 5, 7), Categorical(256))])
def test_forward_shapes_and_nll(arch, shape, head):
    model = build_model({"name": "pixelrnn", "arch": arch, "channels": 12}, shape, head)
    x = (torch.rand(2, *shape) * (head.levels - 1)).round() / (head.levels - 1)
    params = model(x)
    assert params.shape == (2, shape[0] * head.params_per_channel, *shape[1:])
    nll = head.nll(params, x)
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    nll.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def check(**keys):
    """The declaration's check of the default keys with `keys` changed, for MNIST and a Bernoulli head."""
    PixelRNNKeys(**keys).check((1, 28, 28), "bernoulli")


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"arch": "pixel"}, "model.arch=pixel"),
        ({"cell": "rnn"}, "model.cell=rnn"),
        ({"kernel": 4}, "model.kernel=4"),
        ({"kernel": 0}, "model.kernel=0"),
        ({"depth": 0}, "model.depth=0"),
        ({"channels": 7}, "model.channels=7"),
        ({"channels": 0}, "model.channels=0"),
        ({"head_layers": 0}, "model.head_layers=0"),
        ({"arch": "diagonal_bilstm", "kernel": 5}, "model.kernel=5"),
    ],
)
def test_config_errors_are_one_line(overrides, named):
    with pytest.raises(ConfigError) as err:
        check(**overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides", [{}, {"arch": "diagonal_bilstm"}, {"cell": "gru", "kernel": 7}, {"arch": "diagonal_bilstm", "cell": "gru"}]
)
def test_config_accepts(overrides):
    check(**overrides)
