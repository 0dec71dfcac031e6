"""Likelihood heads: turn a model's raw outputs (`params`) into an exact NLL and samples.

Every head works on images `x` scaled to [0, 1] (binary pixels are 0/1, 8-bit pixels are k/255)
and returns the NLL per image in nats: the sum over pixels and channels of -log p(x_i | x_<i)
(`nll` sums `pixel_nll`, the same per pixel, which is what a head implements). A C-channel image
needs `num_params(C)` channels of params and `noise_channels(C)` uniforms per pixel to draw it.
Two kinds of head:

- per channel (`joint = False`: Bernoulli, Categorical): `params` has `params_per_channel * C`
  channels in C contiguous groups (the order of `autoreg.nn.masked.channel_groups`), so group c may
  depend on colour channels < c of the same pixel; the samplers ask the model once per channel
  and draw each sub-pixel by inverse CDF from one uniform;
- per pixel (`joint = True`: DiscretizedLogisticMixture): the params of pixel i depend on earlier
  pixels only, and the head couples the channels itself; the samplers ask the model once per
  pixel and `sample` draws the whole pixel from its own `noise_channels(C)` uniforms.

Sampling draws from the same distribution the NLL measures, from given uniform noise `u`: the
same noise gives the same image, which lets two samplers be compared exactly. `temperature`
divides the logits (1.0 is the model itself; the mixture also multiplies its scales by it).
Every head subclasses `Likelihood`; autoreg.likelihoods.HEADS is the registry by name
(`model.likelihood`): its bits, whether it is joint, its options.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from autoreg.likelihoods import HEADS


def bits_per_dim(nll: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Nats per image -> bits per dimension (sub-pixel)."""
    return nll / (num_dims * math.log(2))


class Likelihood:
    """The interface of every head (module docstring). `name` is its key in
    autoreg.likelihoods.HEADS; the defaults here are a per-channel head's."""

    name: str
    levels: int  # values a sub-pixel takes
    params_per_channel: int  # per-channel heads: params per sub-pixel

    @property
    def joint(self) -> bool:
        """Draws whole pixels from params that depend on earlier pixels only (autoreg.likelihoods)."""
        return HEADS[self.name].joint

    def num_params(self, channels: int) -> int:
        """Channels of params a C-channel image needs."""
        return self.params_per_channel * channels

    def noise_channels(self, channels: int) -> int:
        """Uniforms per pixel that `sample` draws a C-channel pixel from."""
        return channels

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x) per image in nats, (B,): the sum of `pixel_nll`."""
        return self.pixel_nll(params, x).flatten(1).sum(1)

    def pixel_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x_i | x_<i) per pixel in nats (a pixel's channels summed), (B, H, W)."""
        raise NotImplementedError

    def probs(self, params: torch.Tensor, temperature: float = 1.0, x: torch.Tensor | None = None) -> torch.Tensor:
        """The probabilities the head draws with (a joint head's given the pixels' earlier channels in `x`)."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] drawn from params with the uniforms `u`."""
        raise NotImplementedError

    def table(self, params: torch.Tensor, channel: int, pixel: torch.Tensor) -> torch.Tensor:
        """(B, levels) probabilities of sub-pixel `channel` of a pixel, from the params there (B, P)
        and the pixel's values so far (B, C; channels < `channel` final): what a range coder codes
        with (autoreg.compression). A per-channel head reads its channel's params group; a binary
        head's p(x = 1) becomes the table (1 - p, p)."""
        b, k = params.shape[0], self.params_per_channel
        probs = self.probs(params[:, channel * k : (channel + 1) * k].reshape(b, k, 1, 1)).reshape(b, -1)
        return torch.cat([1 - probs, probs], 1) if probs.shape[1] == 1 else probs


class Bernoulli(Likelihood):
    """p(x_i = 1 | x_<i) = sigmoid(logit_i): binarized images (PixelCNN on binarized MNIST)."""

    name = "bernoulli"
    params_per_channel = 1
    levels = 2

    def pixel_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(params.float(), x.float(), reduction="none").sum(1)

    def probs(self, params: torch.Tensor, temperature: float = 1.0, x: torch.Tensor | None = None) -> torch.Tensor:
        """p(x = 1) per sub-pixel, shape (B, C, H, W)."""
        return torch.sigmoid(params.float() / temperature)

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return (u < self.probs(params, temperature)).float()


class Categorical(Likelihood):
    """A 256-way softmax per sub-pixel (PixelRNN paper, sec. 5.3): 8-bit images, any number of
    channels, channel-autoregressive within a pixel through the masks."""

    name = "categorical"

    def __init__(self, levels: int = 256):
        self.levels = levels
        self.params_per_channel = levels

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        b, _, h, w = params.shape
        return params.float().view(b, -1, self.levels, h, w)  # (B, C, K, H, W)

    def pixel_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        target = (x * (self.levels - 1)).round().long()
        return F.cross_entropy(self._logits(params).transpose(1, 2), target, reduction="none").sum(1)

    def probs(self, params: torch.Tensor, temperature: float = 1.0, x: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities of every level, shape (B, C, K, H, W)."""
        return torch.softmax(self._logits(params) / temperature, dim=2)

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        cdf = self.probs(params, temperature).cumsum(dim=2)
        level = (cdf < u.unsqueeze(2)).sum(dim=2).clamp(max=self.levels - 1)
        return level.float() / (self.levels - 1)


class DiscretizedLogisticMixture(Likelihood):
    """PixelCNN++'s likelihood (Salimans et al. 2017, arXiv 1701.05517, sec. 2.1-2.2; reference code
    openai/pixel-cnn, `discretized_mix_logistic_loss`): each pixel is a mixture of K components
    shared by its channels; in component k, channel c is a logistic of scale s_kc around

        mu_kc + sum_{c' < c} tanh(alpha_kcc') * x_c'      (G's mean depends on R, B's on R and G)

    in the [-1, 1] scale, discretized to the 256 levels: level v gets the logistic's mass on the
    bin [x_v - 1/255, x_v + 1/255] (x_v = 2v/255 - 1), level 0 all mass below its upper edge and
    level 255 all mass above its lower edge, so the 256 probabilities sum to exactly 1:

        p(pixel) = sum_k pi_k prod_c P_kc(x_c | x_<c)

    params (B, K (1 + 2C + C(C-1)/2), H, W): K mixture logits, C x K means, C x K log-scales, then
    C(C-1)/2 x K coupling coefficients (G<-R, B<-R, B<-G for RGB). 10K for RGB (the paper's 100 for
    K = 10), 3K for greyscale.

    Sampling is exact (`sample`): the component by Gumbel-max over the logits (K uniforms per
    pixel), then each channel in order by the logistic's inverse CDF (one uniform each), clamped to
    [-1, 1] and rounded to its level, the next channels' means computed from the drawn *level*.
    NOTE: the reference sampler feeds the unrounded draw of R into G's mean, which is not the
    distribution its loss measures; here it is.
    NOTE: temperature T divides the mixture logits and multiplies the scales (T = 1: the model).
    """

    name = "logistic_mixture"
    levels = 256
    # log-scale bounds (NOTE: the reference clamps below at -7 only). Below -7 the scale is ~1/9 of
    # a bin (the distribution is then one level, no sharper one is needed); above 7 the logistic
    # spreads over ~1000x the data range ([-1, 1]), flat in it, and beyond that its bins' mass
    # 2/255 / s underflows fp32. Inside the bounds every term below stays finite.
    LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0

    def __init__(self, nr_logistic_mix: int):
        self.nr_logistic_mix = nr_logistic_mix

    def num_params(self, channels: int) -> int:
        return self.nr_logistic_mix * (1 + 2 * channels + channels * (channels - 1) // 2)

    def noise_channels(self, channels: int) -> int:
        return self.nr_logistic_mix + channels

    def _channels(self, num_params: int) -> int:
        for c in range(1, 5):
            if self.num_params(c) == num_params:
                return c
        raise ValueError(f"{num_params} params per pixel fit no number of channels for a mixture of {self.nr_logistic_mix}")

    def _unpack(self, params: torch.Tensor, temperature: float = 1.0):
        """(logits (B, K, H, W), means (B, C, K, H, W), log-scales (B, C, K, H, W), coupling
        coefficients (B, C(C-1)/2, K, H, W)) in fp32."""
        k = self.nr_logistic_mix
        p = params.float()
        c = self._channels(p.shape[1])
        logits = p[:, :k]
        means = p[:, k : k + c * k].unflatten(1, (c, k))
        log_scales = p[:, k + c * k : k + 2 * c * k].unflatten(1, (c, k)).clamp(self.LOG_SCALE_MIN, self.LOG_SCALE_MAX)
        coeffs = torch.tanh(p[:, k + 2 * c * k :].unflatten(1, (c * (c - 1) // 2, k)))
        if temperature != 1.0:
            logits, log_scales = logits / temperature, log_scales + math.log(temperature)
        return logits, means, log_scales, coeffs

    @staticmethod
    def _coupled_means(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per channel c, mu_c + sum_{c' < c} alpha_cc' x_c' (B, C, K, H, W), from x (B, C, H, W) in [-1, 1]."""
        out, n = [means[:, 0]], 0
        for c in range(1, means.shape[1]):
            mean = means[:, c]
            for earlier in range(c):
                mean = mean + coeffs[:, n] * x[:, earlier : earlier + 1]
                n += 1
            out.append(mean)
        return torch.stack(out, 1)

    @staticmethod
    def _log_prob(mean: torch.Tensor, log_scale: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """log P(level) under a logistic(mean, exp(log_scale)) discretized to 256 levels, exactly.

        With the bin's edges a (upper) and b (lower) in units of the scale, P = sigmoid(a) -
        sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)): three terms with stable logs for any
        a, b (the reference takes log(cdf_delta) and, where that difference underflows (< 1e-5),
        falls back on the density at the bin's centre times its width, an approximation that is
        not normalised; the product form needs neither). At the edges the bin is open: level 0 is
        log sigmoid(a), level 255 log sigmoid(-b). b - a = -(2/255) / scale is at most -7e-6
        within the scale bounds, so the last log never sees 0.
        """
        inv_scale = torch.exp(-log_scale)
        centred = level * (2 / 255) - 1 - mean
        upper = inv_scale * (centred + 1 / 255)
        lower = inv_scale * (centred - 1 / 255)
        log_below_upper = F.logsigmoid(upper)  # log P(X < upper edge): level 0's whole bin
        log_above_lower = F.logsigmoid(-lower)  # log P(X > lower edge): level 255's whole bin
        log_bin = log_below_upper + log_above_lower + torch.log(-torch.expm1(-inv_scale * (2 / 255)))
        # every branch is finite, so torch.where's gradient never multiplies an inf by 0
        return torch.where(level == 0, log_below_upper, torch.where(level == 255, log_above_lower, log_bin))

    @staticmethod
    def _levels(x: torch.Tensor) -> torch.Tensor:
        return (x.float() * 255).round()

    def _log_components(self, params: torch.Tensor, x: torch.Tensor, temperature: float = 1.0):
        """(log pi (B, K, H, W), log P_kc(x_c | x_<c) (B, C, K, H, W), and the unpacked params)."""
        logits, means, log_scales, coeffs = self._unpack(params, temperature)
        level = self._levels(x)
        mean = self._coupled_means(means, coeffs, level * (2 / 255) - 1)
        return torch.log_softmax(logits, 1), self._log_prob(mean, log_scales, level.unsqueeze(2)), (mean, log_scales)

    def pixel_nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_pi, log_p, _ = self._log_components(params, x)
        return -torch.logsumexp(log_pi + log_p.sum(1), dim=1)  # (B, H, W): -log sum_k pi_k prod_c P_kc

    def probs(self, params: torch.Tensor, temperature: float = 1.0, x: torch.Tensor | None = None) -> torch.Tensor:
        """p(x_c = v | x_<c of the pixel, earlier pixels) for every level v, (B, C, 256, H, W), given
        the image `x` (B, C, H, W) whose earlier channels condition the later ones (only channels
        < c of x are read for channel c). The mixture's weights for channel c are the posterior of
        the components given x_<c: pi_k prod_{c' < c} P_kc'(x_c'), normalised."""
        if x is None:
            raise ValueError("a logistic mixture's per-channel probabilities depend on the pixel's earlier channels: pass x")
        log_pi, log_p, (mean, log_scales) = self._log_components(params, x, temperature)
        # log prod_{c' < c} P_kc'(x_c'), an exclusive sum (cumsum - log_p would carry x_c's rounding into channel c)
        before = torch.cat([torch.zeros_like(log_p[:, :1]), log_p[:, :-1].cumsum(1)], 1)
        log_w = torch.log_softmax(log_pi.unsqueeze(1) + before, dim=2)  # (B, C, K, H, W)
        grid = torch.arange(256, device=params.device, dtype=torch.float32).view(1, 1, 1, 256, 1, 1)
        log_all = self._log_prob(mean.unsqueeze(3), log_scales.unsqueeze(3), grid)  # (B, C, K, 256, H, W)
        return torch.logsumexp(log_w.unsqueeze(3) + log_all, dim=2).exp()

    def table(self, params: torch.Tensor, channel: int, pixel: torch.Tensor) -> torch.Tensor:
        b = params.shape[0]
        return self.probs(params.reshape(b, -1, 1, 1), x=pixel.reshape(b, -1, 1, 1))[:, channel, :, 0, 0]

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Whole pixels (B, C, H, W) in [0, 1] from params (B, num_params(C), H, W) and uniforms u
        (B, K + C, H, W) in [0, 1): u[:, :K] choose the component, u[:, K + c] draws channel c."""
        k = self.nr_logistic_mix
        logits, means, log_scales, coeffs = self._unpack(params, temperature)
        u = u.float()
        gumbel = -torch.log(-torch.log(u[:, :k]))  # u = 0 gives -inf: never chosen, probability 0
        choice = (logits + gumbel).argmax(1, keepdim=True)  # (B, 1, H, W)

        def pick(t: torch.Tensor) -> torch.Tensor:  # (B, N, K, H, W) -> component `choice`, (B, N, H, W)
            return t.gather(2, choice.unsqueeze(1).expand(-1, t.shape[1], -1, -1, -1)).squeeze(2)

        mean, log_scale, coeff = pick(means), pick(log_scales), pick(coeffs)
        logistic = torch.log(u[:, k:]) - torch.log1p(-u[:, k:])  # the logistic's inverse CDF
        drawn, n = [], 0
        for c in range(mean.shape[1]):
            mu = mean[:, c]
            for earlier in range(c):
                mu = mu + coeff[:, n] * (drawn[earlier] * (2 / 255) - 1)
                n += 1
            z = mu + torch.exp(log_scale[:, c]) * logistic[:, c]
            # clamp in the [-1, 1] scale first: +-inf (u = 0) then lands on the edge levels
            drawn.append(((z.clamp(-1, 1) + 1) * 127.5).round())
        return torch.stack(drawn, 1) / 255
