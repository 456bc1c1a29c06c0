"""Image parameterizations. Each holds one image per batch item and returns RGB in [0, 1].

Every batch item draws its initial values from its own ``torch.Generator``, so an image does not
depend on which other units share its batch. Images are square (``size``) or rectangular
(``(height, width)``); ``BoxedImage`` pastes one into a constant grey canvas.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

Size = Union[int, tuple[int, int]]  # a square side, or (height, width)
GREY = 0.5  # the canvas outside a box (the same grey as the transforms' padding)

# Lucid's square root of the ImageNet colour covariance (its SVD), applied to decorrelated colour.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _per_item_normal(shape: Sequence[int], generators: Sequence[torch.Generator], std: float) -> torch.Tensor:
    return torch.stack([torch.randn(*shape, generator=g) * std for g in generators])


class FFTImage(nn.Module):
    """Fourier parameterization: the spectrum is optimized, scaled by 1/f^decay_power (Olah et al. 2017).

    Args:
        size: image side in pixels, or ``(height, width)`` for a rectangle.
        generators: one CPU generator per batch item (its initial spectrum).
        decay_power: spectrum fall-off; 1.0 as in Lucid.
        decorrelate: map from decorrelated to RGB colour space.
        std: standard deviation of the initial spectrum.
    """

    def __init__(self, size: Size, generators: Sequence[torch.Generator], decay_power: float = 1.0,
                 decorrelate: bool = True, std: float = 0.01):
        super().__init__()
        self.height, self.width = _hw(size)
        self.decorrelate = decorrelate
        fy = torch.fft.fftfreq(self.height)[:, None]
        fx = torch.fft.rfftfreq(self.width)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        # As Lucid: the lowest frequency is that of the longer side.
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(self.height, self.width)) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None].float())
        spectrum = _per_item_normal((3, self.height, self.width // 2 + 1, 2), generators, std)
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        scaled = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        image = torch.fft.irfft2(scaled, s=(self.height, self.width), norm="ortho") / 4.0
        return _to_rgb(image, self.decorrelate)


class PixelImage(nn.Module):
    """Plain pixel parameterization (noisier; kept as the baseline Lucid compares against)."""

    def __init__(self, size: Size, generators: Sequence[torch.Generator], decorrelate: bool = True, std: float = 0.01):
        super().__init__()
        self.decorrelate = decorrelate
        self.pixels = nn.Parameter(_per_item_normal((3, *_hw(size)), generators, std))

    def forward(self) -> torch.Tensor:
        return _to_rgb(self.pixels, self.decorrelate)


def _to_rgb(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if decorrelate:
        image = torch.einsum("ij,bjhw->bihw", _COLOR.to(image.device, image.dtype), image)
    return torch.sigmoid(image)


class BoxedImage(nn.Module):
    """An image parameterized only inside ``box``, pasted into a ``size`` square of constant grey.

    Args:
        inner: a parameterization of the box's height x width (e.g. a rectangular ``FFTImage``).
        size: canvas side in pixels.
        box: ``(top, left, bottom, right)``, inclusive, in canvas pixels.
    Raises:
        ValueError: the box is empty or leaves the canvas.
    """

    def __init__(self, inner: nn.Module, size: int, box: tuple[int, int, int, int]):
        super().__init__()
        top, left, bottom, right = check_box(box, size)
        self.inner = inner
        self.pad = (left, size - 1 - right, top, size - 1 - bottom)  # F.pad order: left, right, top, bottom

    def forward(self) -> torch.Tensor:
        return F.pad(self.inner(), self.pad, mode="constant", value=GREY)


def check_box(box: Sequence[int], size: int) -> tuple[int, int, int, int]:
    """``box`` as four ints after checking it is a non-empty inclusive box inside a ``size`` canvas.

    Raises:
        ValueError: it is not, with the valid range.
    """
    top, left, bottom, right = (int(v) for v in box)
    if not (0 <= top <= bottom < size and 0 <= left <= right < size):
        raise ValueError(f"box {tuple(box)} is not an inclusive (top, left, bottom, right) box inside the "
                         f"{size} x {size} canvas: need 0 <= top <= bottom <= {size - 1} and the same for left, right")
    return top, left, bottom, right


def make_image(kind: str, size: Size, generators: Sequence[torch.Generator], decay_power: float = 1.0,
               decorrelate: bool = True) -> nn.Module:
    """Build the parameterization named ``kind`` (``fft`` or ``pixel``) of a ``size`` image (a side,
    or ``(height, width)``).

    Raises:
        ValueError: ``kind`` is neither.
    """
    if kind == "fft":
        return FFTImage(size, generators, decay_power=decay_power, decorrelate=decorrelate)
    if kind == "pixel":
        return PixelImage(size, generators, decorrelate=decorrelate)
    raise ValueError(f"unknown parameterization {kind!r}; use 'fft' or 'pixel'")
