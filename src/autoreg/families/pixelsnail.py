"""PixelSNAIL's model keys (Chen, Mishra, Rohaninejad & Abbeel 2018, arXiv 1712.09763): PixelCNN++'s
gated resnet blocks of shifted convolutions interleaved with causal self-attention over all earlier
pixels. Sized for a CPU; the paper's CIFAR-10 network is depth=12, nr_resnet=4, channels=256,
key_channels=16, value_channels=128, one head, dropout=0.5, no u stream
(+experiment=paper_cifar10_pixelsnail).
The network: autoreg.models.pixelsnail."""
from __future__ import annotations

from dataclasses import dataclass

from autoreg.checks import require_bool, require_int
from autoreg.errors import ConfigError
from autoreg.families import Family
from autoreg.families.pixelcnn_pp import require_dropout, require_whole_pixel_head


@dataclass(frozen=True)
class PixelSNAILKeys(Family):
    NAME = "pixelsnail"
    NETWORK = "autoreg.models.pixelsnail:PixelSNAIL"
    LIKELIHOODS = ("logistic_mixture", "bernoulli", "categorical")  # auto: the mixture for 8-bit data, Bernoulli for 1-bit

    depth: int = 2            # blocks, each nr_resnet gated resnet blocks per stream and one attention block
    nr_resnet: int = 2        # gated resnet blocks per stream in a block
    channels: int = 16        # features of both streams (the paper's nr_filters)
    key_channels: int = 16    # query and key features of an attention block, over all heads
    value_channels: int = 16  # value features of an attention block, over all heads
    heads: int = 2            # attention heads; key_channels and value_channels split evenly among them
    dropout: float = 0.0      # dropout inside every gated resnet block, in [0, 1) (the paper: 0.5)
    u_stream: bool = True     # PixelCNN++'s u stream (rows above) beside ul; false: ul alone, as the paper's CIFAR-10 network

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        for key in ("depth", "nr_resnet", "channels", "key_channels", "value_channels", "heads"):
            require_int(f"model.{key}", getattr(self, key))
        for key in ("key_channels", "value_channels"):
            if getattr(self, key) % self.heads:
                raise ConfigError(
                    f"model.{key}={getattr(self, key)} is invalid with model.heads={self.heads}: "
                    "it must be a multiple of the heads (each head takes an equal share)"
                )
        require_bool("model.u_stream", self.u_stream)
        require_dropout(self.dropout)
        require_whole_pixel_head(self.NAME, image_shape, likelihood)
