"""PixelCNN's model keys (van den Oord et al. 2016, arXiv 1601.06759): a mask-A first layer,
`depth` mask-B blocks, a 1x1 head. The network: autoreg.models.pixelcnn."""
from __future__ import annotations

from dataclasses import dataclass

from autoreg.checks import require_bool, require_int
from autoreg.errors import ConfigError
from autoreg.families import Family


@dataclass(frozen=True)
class PixelCNNKeys(Family):
    NAME = "pixelcnn"
    NETWORK = "autoreg.models.pixelcnn:PixelCNN"

    channels: int = 64      # features between blocks (2h in the paper's residual block)
    depth: int = 2          # number of mask-B blocks (experiments/defaults: best val NLL per CPU-minute)
    kernel: int = 7         # the blocks' mask-B kernel (odd; experiments/defaults)
    first_kernel: int = 7   # the mask-A first layer's kernel (odd, >= 3)
    residual: bool = True   # the paper's residual blocks (2h -> h -> k x k -> 2h); false: plain ReLU + conv stack
    head_layers: int = 2    # ReLU + 1x1 mask-B layers in the output head (the last maps to the likelihood)
    dilation: int = 1       # dilation of the blocks' k x k convolutions

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        for key in ("depth", "head_layers", "dilation"):
            require_int(f"model.{key}", getattr(self, key))
        require_int("model.kernel", self.kernel, odd=True)
        require_int("model.first_kernel", self.first_kernel, odd=True)
        if self.first_kernel == 1:  # only the centre tap, and mask A drops it: no spatial context
            raise ConfigError("model.first_kernel=1 leaves the mask-A first layer no earlier pixel to see (a model without "
                              "context); use an odd kernel >= 3")
        require_bool("model.residual", self.residual)
        require_int("model.channels", self.channels, minimum=2 if self.residual else 1)
        if self.residual and self.channels % 2:
            raise ConfigError(
                f"model.channels={self.channels} is invalid with model.residual=true: "
                "it must be even (2h features, halved inside each residual block)"
            )

    def field_theory(self) -> tuple[int, int, int] | None:
        """The blind spot's closed form (dilation 1 only; derived in autoreg.analysis.receptive_field)."""
        if self.dilation != 1:
            return None
        return (self.first_kernel // 2 + self.depth * (self.kernel // 2), *pixelcnn_reach(self.first_kernel, self.kernel, self.depth))


def pixelcnn_reach(first_kernel: int, kernel: int, depth: int) -> tuple[int, int]:
    """(earlier pixels reached, blind spot size) of a dilation-1 PixelCNN at a pixel at least
    R = first_kernel // 2 + depth * (kernel // 2) pixels from the top, left and right edges."""
    h1, h = first_kernel // 2, kernel // 2
    radius = h1 + depth * h
    blind = sum(radius - ((t - 1) * h + max(h1, h - 1)) for t in range(1, depth + 1))
    return radius + radius * (2 * radius + 1) - blind, blind
