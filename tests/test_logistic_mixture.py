"""The discretized logistic mixture (PixelCNN++'s likelihood): exact normalisation, the edge levels,
finite values for extreme parameters (also under bf16 autocast), per-channel probabilities that
factorise the joint, and samples distributed as exp(-nll)."""
from __future__ import annotations

import math

import pytest
import torch

from autoreg.distributions import DiscretizedLogisticMixture
from autoreg.errors import ConfigError
from autoreg.likelihoods import as_node, choose, distribution_for

pytestmark = pytest.mark.usefixtures("one_thread")


def random_params(head, channels, batch=4, h=2, w=3, seed=0, spread=1.0):
    """Random params: logits ~ N(0, 2), means ~ U(-1.2, 1.2) (some beyond the edges), log-scales
    in [-6, 0] (from a tenth of a level to the whole range), coupling of either sign."""
    g = torch.Generator().manual_seed(seed)
    k = head.nr_logistic_mix
    logits = torch.randn(batch, k, h, w, generator=g) * 2
    means = (torch.rand(batch, channels * k, h, w, generator=g) * 2.4 - 1.2) * spread
    log_scales = torch.rand(batch, channels * k, h, w, generator=g) * -6
    coeffs = torch.randn(batch, channels * (channels - 1) // 2 * k, h, w, generator=g) * 2
    return torch.cat([logits, means, log_scales, coeffs], 1)


def pixel_params(head, channels, logits, means, log_scales, coeffs=()):
    """Params (1, P, 1, 1) of one pixel from per-component lists (means, log_scales: per channel)."""
    flat = [*logits, *[m for c in means for m in c], *[s for c in log_scales for s in c], *[a for c in coeffs for a in c]]
    return torch.tensor(flat, dtype=torch.float32).view(1, -1, 1, 1)


def test_layout_and_noise():
    head = DiscretizedLogisticMixture(10)
    assert head.num_params(3) == 100 and head.num_params(1) == 30  # the paper's 100 outputs for RGB
    assert head.noise_channels(3) == 13 and head.joint and head.levels == 256


@pytest.mark.parametrize("seed", range(3))
def test_greyscale_probabilities_sum_to_one_exhaustively(seed):
    """C = 1: exp(-nll) summed over all 256 values of a pixel is 1, for 24 random pixels at once
    (in fp32; the sum is taken in float64)."""
    head = DiscretizedLogisticMixture(5)
    params = random_params(head, 1, seed=seed)
    b, _, h, w = params.shape
    values = torch.arange(256, dtype=torch.float32) / 255
    total = torch.zeros(b, h, w, dtype=torch.float64)
    for v in values:
        x = v.expand(b, 1, h, w)
        # nll sums over the pixels: one pixel at a time, through a 1x1 image per pixel
        per_pixel = head.nll(params.permute(0, 2, 3, 1).reshape(-1, params.shape[1], 1, 1), x.reshape(-1, 1, 1, 1))
        total += per_pixel.view(b, h, w).neg().exp().double()
    assert (total - 1).abs().max() < 1e-4, (total - 1).abs().max()


def test_colour_slice_sums_to_the_red_marginal():
    """C = 3, the factorisation argument: in each component the channels factorise as
    P(r) P(g | r) P(b | r, g), each a normalised distribution over 256 levels (the greyscale test
    shows one is), so summing p(r, g, b) over g and b leaves sum_k pi_k P_k(r): the greyscale
    mixture of the red parameters. Checked exhaustively over the 65536 values of (g, b) for
    several r, with the coupling coefficients on (G and B depend on r)."""
    head = DiscretizedLogisticMixture(4)
    params = random_params(head, 3, batch=1, h=1, w=1, seed=7)
    k = 4
    red = torch.cat([params[:, :k], params[:, k : 2 * k], params[:, 4 * k : 5 * k]], 1)  # logits, R means, R log-scales
    grid = torch.arange(256, dtype=torch.float32) / 255
    g, b = torch.meshgrid(grid, grid, indexing="ij")
    for r in (0, 1, 77, 128, 254, 255):
        x = torch.stack([torch.full_like(g, r / 255), g, b]).reshape(3, -1).t().reshape(-1, 3, 1, 1)
        joint = head.nll(params.expand(len(x), -1, -1, -1), x).neg().exp().double().sum()
        marginal = head.nll(red, torch.full((1, 1, 1, 1), r / 255)).neg().exp().double()
        assert abs(joint - marginal) < 1e-4 * max(marginal.item(), 1e-3), (r, joint, marginal)


@pytest.mark.slow
def test_colour_probabilities_sum_to_one_exhaustively():
    """C = 3: exp(-nll) over all 256^3 values of one pixel sums to 1 (16.7M evaluations)."""
    head = DiscretizedLogisticMixture(3)
    params = random_params(head, 3, batch=1, h=1, w=1, seed=3)
    grid = torch.arange(256, dtype=torch.float32) / 255
    g, b = torch.meshgrid(grid, grid, indexing="ij")
    total = 0.0
    for r in range(256):
        x = torch.stack([torch.full_like(g, r / 255), g, b]).reshape(3, -1).t().reshape(-1, 3, 1, 1)
        total += head.nll(params.expand(len(x), -1, -1, -1), x).neg().exp().double().sum().item()
    assert abs(total - 1) < 1e-4


@pytest.mark.parametrize("channels", [1, 3])
def test_per_channel_probabilities_factorise_the_joint(channels):
    """probs(params, x)[c] is p(x_c | x_<c): each sums to 1 over the levels, and the product of the
    probabilities of x's own levels is exp(-nll(x)) (x drawn from the mixture, so that no
    probability underflows fp32)."""
    head = DiscretizedLogisticMixture(4)
    params = random_params(head, channels, seed=1)
    u = torch.rand(params.shape[0], head.noise_channels(channels), *params.shape[2:], generator=torch.Generator().manual_seed(2))
    x = head.sample(params, u)
    probs = head.probs(params, 1.0, x)
    assert probs.shape == (params.shape[0], channels, 256, *params.shape[2:])
    assert torch.allclose(probs.sum(2), torch.ones(()), atol=1e-5)
    own = probs.gather(2, (x * 255).round().long().unsqueeze(2)).squeeze(2)
    assert torch.allclose(own.log().flatten(1).sum(1), -head.nll(params, x), rtol=1e-4, atol=1e-3)


def test_a_channels_probabilities_do_not_read_its_own_value():
    """probs(params, x)[c] may depend on x_<c only: changing x_c and later channels leaves channel
    c's table unchanged bit for bit (a compressor's decoder computes it before it knows x_c). Sharp
    components (log-scales near -7) make log P(x_c) large, where a sum that adds and then subtracts
    it would not round back exactly."""
    head = DiscretizedLogisticMixture(5)
    params = random_params(head, 3, seed=3)
    k = head.nr_logistic_mix
    params[:, k + 3 * k : k + 6 * k] = -6.5  # log-scales
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (params.shape[0], 3, *params.shape[2:]), generator=g) / 255
    for c in range(3):
        other = x.clone()
        other[:, c:] = torch.randint(0, 256, other[:, c:].shape, generator=g) / 255
        assert torch.equal(head.probs(params, 1.0, x)[:, c], head.probs(params, 1.0, other)[:, c]), c


def reference_log_prob(mean, log_scale, level):
    """log P(level) in float64, the textbook way: CDF differences, open bins at 0 and 255."""
    mean, scale = mean.double(), log_scale.double().clamp(-7, 7).exp()
    x = level.double() * 2 / 255 - 1
    upper = torch.where(level == 255, torch.ones_like(x), torch.sigmoid((x + 1 / 255 - mean) / scale))
    lower = torch.where(level == 0, torch.zeros_like(x), torch.sigmoid((x - 1 / 255 - mean) / scale))
    return (upper - lower).log()


def test_nll_matches_the_textbook_formula_in_float64():
    head = DiscretizedLogisticMixture(1)
    g = torch.Generator().manual_seed(4)
    n = 4096
    level = torch.randint(0, 256, (n,), generator=g).float()
    level[:8], level[8:16] = 0, 255
    mean = torch.rand(n, generator=g) * 2.2 - 1.1
    log_scale = torch.rand(n, generator=g) * -5 - 1
    expected = reference_log_prob(mean, log_scale, level)
    keep = expected > -30  # where float64 differences of sigmoids are still exact
    params = torch.stack([torch.zeros(n), mean, log_scale], 1).view(n, 3, 1, 1)
    got = -head.nll(params, (level / 255).view(n, 1, 1, 1))
    assert keep.sum() > n // 2
    assert torch.allclose(got[keep].double(), expected[keep], rtol=1e-4, atol=1e-4)


def test_edge_levels_take_the_open_tails():
    """Level 0 holds all mass below its upper edge, 255 all mass above its lower edge: a logistic
    centred far outside [-1, 1] puts (almost) everything there."""
    head = DiscretizedLogisticMixture(1)
    for mean, level in ((-3.0, 0), (3.0, 255)):
        params = pixel_params(head, 1, [0.0], [[mean]], [[-3.0]])
        assert head.nll(params, torch.full((1, 1, 1, 1), level / 255)).item() < 1e-6
    # centred on level 0 itself: half its mass lies below -1 and still counts for level 0
    params = pixel_params(head, 1, [0.0], [[-1.0]], [[-2.0]])
    p0 = math.exp(-head.nll(params, torch.zeros(1, 1, 1, 1)).item())
    assert p0 == pytest.approx(torch.sigmoid(torch.tensor(1 / 255 / math.exp(-2.0))).item(), rel=1e-5)


EXTREMES = [1e6, -1e6, 1e4, -1e4, 0.0, 1.0, -1.0, 1e30, -1e30]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("level", [0, 255, 128])
def test_extreme_parameters_give_finite_nll_and_gradients(channels, level):
    """Means, log-scales, logits and coupling raw values at +-1e4, +-1e6 and +-1e30, on all-0,
    all-255 and mid-grey images: never NaN or inf, in the NLL or its gradient."""
    head = DiscretizedLogisticMixture(2)
    p = head.num_params(channels)
    values = torch.tensor(EXTREMES)
    params = values[torch.randint(0, len(values), (64, p, 2, 2), generator=torch.Generator().manual_seed(level))]
    params.requires_grad_(True)
    x = torch.full((64, channels, 2, 2), level / 255)
    nll = head.nll(params, x)
    assert torch.isfinite(nll).all() and (nll >= -1e-4).all()
    nll.sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_bf16_autocast_keeps_the_nll_finite_and_close(channels):
    """A network's bf16 output under CPU autocast: the head computes in fp32, finite everywhere,
    and equal to the NLL of the same (bf16-rounded) params in fp32."""
    head = DiscretizedLogisticMixture(3)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, head.num_params(channels), 1)
    with torch.no_grad():
        conv.weight.mul_(50)  # large outputs, so that bf16 rounding matters
    for level in (0, 255, None):
        x = torch.full((4, channels, 3, 3), level / 255) if level is not None else torch.rand(4, channels, 3, 3)
        x = (x * 255).round() / 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            params = conv(x)
            nll = head.nll(params, x)
        assert params.dtype == torch.bfloat16 and nll.dtype == torch.float32
        assert torch.isfinite(nll).all()
        assert torch.allclose(nll, head.nll(params.float(), x), rtol=1e-6)


def chi_square_z(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's chi-square over cells with expected counts >= 5 (the rest pooled), as a z-score
    ((X^2 - df) / sqrt(2 df)); |z| < 5 for samples from the right distribution."""
    big = expected >= 5
    cells_c = torch.cat([counts[big], counts[~big].sum().view(1)])
    cells_e = torch.cat([expected[big], expected[~big].sum().view(1)])
    if cells_e[-1] < 5:
        cells_c, cells_e = cells_c[:-1], cells_e[:-1]
    x2 = ((cells_c - cells_e) ** 2 / cells_e).sum().item()
    df = len(cells_e) - 1
    return (x2 - df) / math.sqrt(2 * df)


def test_greyscale_samples_follow_exp_minus_nll():
    """400k draws of one pixel (Gumbel-max over 3 components, inverse CDF, clamp, rounding): the
    histogram over the 256 levels matches exp(-nll) per level, at temperature 1 and 0.7 (the
    tempered distribution is the one `probs` gives)."""
    head = DiscretizedLogisticMixture(3)
    params = pixel_params(head, 1, [0.5, -0.3, 1.0], [[-0.98, 0.1, 0.995]], [[-4.0, -2.5, -5.0]])
    levels = torch.arange(256) / 255
    exact = head.nll(params.expand(256, -1, -1, -1), levels.view(256, 1, 1, 1)).neg().exp().double()
    assert abs(exact.sum() - 1) < 1e-5
    n = 400_000
    for temperature, want in ((1.0, exact), (0.7, None)):
        u = torch.rand(n, head.noise_channels(1), 1, 1, generator=torch.Generator().manual_seed(5))
        drawn = head.sample(params.expand(n, -1, -1, -1), u, temperature)
        assert torch.equal(drawn, (drawn * 255).round() / 255)
        counts = torch.bincount((drawn * 255).round().long().flatten(), minlength=256).double()
        if want is None:
            want = head.probs(params, temperature, torch.zeros(1, 1, 1, 1))[0, 0, :, 0, 0].double()
        assert counts[0] > 0 and counts[255] > 0  # both edge levels drawn
        assert abs(chi_square_z(counts, n * want)) < 5


def test_colour_samples_follow_exp_minus_nll():
    """300k draws of an RGB pixel with strong coupling (G and B move with R): the histogram of
    (r, g, b) triples matches exp(-nll) of each triple. Drawing G's mean from the unrounded R (as
    the reference sampler does) shifts G by up to half a level and fails this."""
    head = DiscretizedLogisticMixture(2)
    params = pixel_params(
        head, 3, [0.3, -0.2],
        means=[[0.0, 0.03], [0.02, -0.01], [-0.01, 0.0]],
        log_scales=[[-4.5, -5.0], [-6.0, -5.5], [-5.8, -6.0]],
        coeffs=[[3.0, -3.0], [2.0, 1.0], [-2.0, 3.0]],  # tanh -> G<-R, B<-R, B<-G per component
    )
    n = 300_000
    u = torch.rand(n, head.noise_channels(3), 1, 1, generator=torch.Generator().manual_seed(6))
    drawn = (head.sample(params.expand(n, -1, -1, -1), u) * 255).round().long().view(n, 3)
    triples, counts = torch.unique(drawn, dim=0, return_counts=True)
    lo, hi = drawn.min(0).values - 3, drawn.max(0).values + 4
    box = torch.stack(torch.meshgrid(*[torch.arange(a, b).clamp(0, 255) for a, b in zip(lo, hi)], indexing="ij"), -1)
    box = torch.unique(box.view(-1, 3), dim=0)
    exact = head.nll(params.expand(len(box), -1, -1, -1), (box.float() / 255).view(-1, 3, 1, 1)).neg().exp().double()
    assert exact.sum() > 1 - 1e-3  # the box holds (nearly) all the mass
    index = {tuple(t): i for i, t in enumerate(box.tolist())}
    observed = torch.zeros(len(box), dtype=torch.float64)
    for t, c in zip(triples.tolist(), counts.tolist()):
        observed[index[tuple(t)]] = c
    assert abs(chi_square_z(observed, n * exact)) < 5


def test_samples_are_finite_for_extreme_noise_and_parameters():
    head = DiscretizedLogisticMixture(2)
    params = torch.tensor(EXTREMES)[torch.randint(0, len(EXTREMES), (256, head.num_params(3), 1, 1))]
    u = torch.rand(256, head.noise_channels(3), 1, 1)
    u[:64] = 0.0  # the edge of [0, 1): -inf before the clamp
    drawn = head.sample(params, u)
    assert torch.isfinite(drawn).all() and drawn.min() >= 0 and drawn.max() <= 1


def test_likelihood_choice_is_checked_against_family_and_bits():
    heads = ("logistic_mixture", "bernoulli", "categorical")
    mix = {"name": "logistic_mixture", "nr_logistic_mix": 5}
    assert choose({"likelihood": mix}, "m", heads, 8) == ("logistic_mixture", {"nr_logistic_mix": 5})
    assert choose({"likelihood": {"name": "auto", "nr_logistic_mix": 5}}, "m", heads, 8) == ("logistic_mixture", {"nr_logistic_mix": 5})
    assert choose({"likelihood": {"name": "auto"}}, "m", heads, 1) == ("bernoulli", {})
    assert choose({}, "m", heads, 1) == ("bernoulli", {})
    for cfg, heads_, bits, message in [
        ({"likelihood": {"name": "logistic_mixture"}}, heads, 1, "model/likelihood=logistic_mixture models 8-bit data, but data.bits=1"),
        ({"likelihood": {"name": "logistic_mixture"}}, ("bernoulli", "categorical"), 8,
         "model/likelihood=logistic_mixture is not a likelihood of model=m; choose one of: auto, bernoulli, categorical"),
        ({"likelihood": {"name": "softmax"}}, heads, 8, "model/likelihood=softmax is not a likelihood of model=m"),
        ({}, ("logistic_mixture",), 1, "model=m cannot model 1-bit data"),
        ({"likelihood": {"name": "categorical", "nr_logistic_mix": 5}}, heads, 8,
         r"model.likelihood.nr_logistic_mix is not an option of the categorical likelihood \(its options: none\)"),
        ({"likelihood": {"name": "auto", "nr_logistic_mix": 5}}, heads, 1, "model.likelihood.nr_logistic_mix is not an option of the bernoulli"),
        ({"likelihood": {**mix, "nr_logistic_mix": 0}}, heads, 8, "model.likelihood.nr_logistic_mix=0 is invalid"),
        ({"likelihood": "bernoulli"}, heads, 1, "model.likelihood=bernoulli: the head is chosen as a config group; write model/likelihood=bernoulli"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            choose(cfg, "m", heads_, bits)
        assert "\n" not in str(err.value)


def test_a_config_of_an_older_release_reads_with_the_head_as_its_node():
    """Checkpoints and shipped models written when `model.likelihood` was a head's name, its
    options flat model keys, read as composing the config gives it now (so they resume and load)."""
    heads = ("logistic_mixture", "bernoulli", "categorical")
    old = {"name": "m", "depth": 2, "likelihood": "bernoulli", "nr_logistic_mix": 10}
    assert as_node(old, heads, 1) == {"name": "m", "depth": 2, "likelihood": {"name": "bernoulli"}}
    assert as_node({**old, "likelihood": "logistic_mixture", "nr_logistic_mix": 3}, heads, 8)["likelihood"] == {
        "name": "logistic_mixture", "nr_logistic_mix": 3}
    assert as_node({**old, "likelihood": "logistic_mixture"}, heads, 8)["likelihood"] == {"name": "logistic_mixture", "nr_logistic_mix": 10}
    assert as_node({**old, "likelihood": "auto"}, heads, 8)["likelihood"] == {"name": "auto"}  # the default: as auto composes
    assert as_node({**old, "likelihood": "auto", "nr_logistic_mix": 3}, heads, 8)["likelihood"] == {"name": "auto", "nr_logistic_mix": 3}
    assert as_node({**old, "likelihood": "auto", "nr_logistic_mix": 3}, heads, 1)["likelihood"] == {"name": "auto"}  # unused on 1-bit data
    current = {"name": "m", "likelihood": {"name": "categorical"}}
    assert as_node(current, heads, 8) == current


def test_distribution_for_keeps_the_defaults():
    assert distribution_for(1).name == "bernoulli" and distribution_for(8).name == "categorical"
    assert distribution_for(8, "logistic_mixture", nr_logistic_mix=4).num_params(3) == 40
    with pytest.raises(ValueError, match="models 8-bit data, not 1-bit"):
        distribution_for(1, "logistic_mixture")
