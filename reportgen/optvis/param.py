"""Image parameterizations. Each holds one image per batch item and returns RGB in [0, 1].

Every batch item draws its initial values from its own ``torch.Generator``, so an image does not
depend on which other units share its batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# Lucid's square root of the ImageNet colour covariance (its SVD), applied to decorrelated colour.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _per_item_normal(shape: Sequence[int], generators: Sequence[torch.Generator], std: float) -> torch.Tensor:
    return torch.stack([torch.randn(*shape, generator=g) * std for g in generators])


class FFTImage(nn.Module):
    """Fourier parameterization: the spectrum is optimized, scaled by 1/f^decay_power (Olah et al. 2017).

    Args:
        size: image side in pixels.
        generators: one CPU generator per batch item (its initial spectrum).
        decay_power: spectrum fall-off; 1.0 as in Lucid.
        decorrelate: map from decorrelated to RGB colour space.
        std: standard deviation of the initial spectrum.
    """

    def __init__(self, size: int, generators: Sequence[torch.Generator], decay_power: float = 1.0,
                 decorrelate: bool = True, std: float = 0.01):
        super().__init__()
        self.size = size
        self.decorrelate = decorrelate
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None].float())
        spectrum = _per_item_normal((3, size, size // 2 + 1, 2), generators, std)
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        scaled = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        image = torch.fft.irfft2(scaled, s=(self.size, self.size), norm="ortho") / 4.0
        return _to_rgb(image, self.decorrelate)


class PixelImage(nn.Module):
    """Plain pixel parameterization (noisier; kept as the baseline Lucid compares against)."""

    def __init__(self, size: int, generators: Sequence[torch.Generator], decorrelate: bool = True, std: float = 0.01):
        super().__init__()
        self.decorrelate = decorrelate
        self.pixels = nn.Parameter(_per_item_normal((3, size, size), generators, std))

    def forward(self) -> torch.Tensor:
        return _to_rgb(self.pixels, self.decorrelate)


def _to_rgb(image: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if decorrelate:
        image = torch.einsum("ij,bjhw->bihw", _COLOR.to(image.device, image.dtype), image)
    return torch.sigmoid(image)


def make_image(kind: str, size: int, generators: Sequence[torch.Generator], decay_power: float = 1.0,
               decorrelate: bool = True) -> nn.Module:
    """Build the parameterization named ``kind`` (``fft`` or ``pixel``)."""
    if kind == "fft":
        return FFTImage(size, generators, decay_power=decay_power, decorrelate=decorrelate)
    if kind == "pixel":
        return PixelImage(size, generators, decorrelate=decorrelate)
    raise ValueError(f"unknown parameterization {kind!r}; use 'fft' or 'pixel'")
