"""Images in and out of the coder: PNG files (or a split of the checkpoint's own dataset) as
levels, and levels back as PNG bytes."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from autoreg.build import build_datamodule
from autoreg.errors import DataError

if TYPE_CHECKING:
    from autoreg.module import AutoregressiveModule


def read_pngs(paths: Sequence[Path], image_shape: tuple[int, int, int], levels: int) -> Tensor:
    """PNG files as levels (N, C, H, W) uint8: grey (or 1-bit) for one channel, RGB for three;
    a binary model's files must be black and white (0/255)."""
    c, h, w = image_shape
    mode = "L" if c == 1 else "RGB"
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode not in (("1", "L") if c == 1 else ("RGB",)):
                    raise DataError(f"input {path} is a {image.mode} image; this model codes "
                                    f"{'greyscale' if c == 1 else 'RGB'} images ({'modes 1, L' if c == 1 else 'mode RGB'})")
                if image.size != (w, h):
                    raise DataError(f"input {path} is {image.size[0]}x{image.size[1]}; this model codes {w}x{h} images")
                array = np.asarray(image.convert(mode))
        except OSError as err:
            raise DataError(f"input {path} cannot be read as a PNG ({err})") from None
        if levels == 2:
            if not np.isin(array, (0, 255)).all():
                raise DataError(f"input {path} has grey levels; this model codes black and white (0/255) pixels: binarize it first")
            array = array // 255
        arrays.append(torch.from_numpy(array.reshape(h, w, c).copy()).permute(2, 0, 1))
    return torch.stack(arrays).to(torch.uint8)


def png_bytes(image: Tensor, levels: int) -> bytes:
    """One image (C, H, W) of levels as PNG bytes: 1-bit for binary images."""
    array = image.permute(1, 2, 0).numpy()
    if levels == 2:
        picture = Image.fromarray(array[:, :, 0].astype(bool))
    else:
        picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def input_paths(spec: str) -> list[Path]:
    """`input=`: one PNG file, or a directory of them (sorted by name)."""
    path = Path(spec)
    if path.is_dir():
        paths = sorted(path.glob("*.png"))
        if not paths:
            raise DataError(f"input={spec} holds no .png files; pass a PNG file or a directory of PNGs")
        return paths
    if not path.is_file():
        raise DataError(f"input={spec} does not exist; pass a PNG file or a directory of PNGs")
    return [path]


def split_images(module: AutoregressiveModule, split: str, num: int | None, root: str | None = None) -> tuple[Tensor, Tensor]:
    """The first `num` images (all: None) of a split of the checkpoint's own dataset (under `root`,
    default its own data.root), as levels."""
    datamodule = build_datamodule({**module.hparams.data, **({"root": root} if root else {})})
    datamodule.setup("test")
    data = datamodule.splits[split]
    count = len(data) if num is None else min(num, len(data))
    return data.images[:count].to(torch.uint8), data.labels[:count]
