"""Image parameterizations. Each holds one image per batch item and returns RGB in [0, 1].

Every batch item draws its initial values from its own ``torch.Generator``, so an image does not
depend on which other units share its batch. Images are square (``size``) or rectangular
(``(height, width)``); ``BoxedImage`` pastes one into a constant grey canvas. ``MacoImage``
optimizes only the phase of a fixed magnitude spectrum that ``magnitude_spectrum`` estimates
from photographs.
"""

from __future__ import annotations

from typing import Sequence, Union

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Size = Union[int, tuple[int, int]]  # a square side, or (height, width)
GREY = 0.5  # the canvas outside a box (the same grey as the transforms' padding)

# Lucid's square root of the ImageNet colour covariance (its SVD), applied to decorrelated colour.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], device="cpu")
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _per_item_normal(shape: Sequence[int], generators: Sequence[torch.Generator], std: float) -> torch.Tensor:
    return torch.stack([torch.randn(*shape, generator=g, device="cpu") * std for g in generators])


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
        fy = torch.fft.fftfreq(self.height, device="cpu")[:, None]
        fx = torch.fft.rfftfreq(self.width, device="cpu")[None, :]
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


def fft_from_photos(photos: torch.Tensor, decay_power: float = 1.0, decorrelate: bool = True,
                    eps: float = 1e-3) -> FFTImage:
    """An ``FFTImage`` that starts at ``photos`` [B, 3, H, W] in [0, 1] (each clipped to
    [eps, 1 - eps], where the sigmoid can reach): its forward undone step by step."""
    count, _, height, width = photos.shape
    image = FFTImage((height, width), [torch.Generator() for _ in range(count)], decay_power, decorrelate, std=0.0)
    logits = torch.logit(photos.detach().float().cpu().clamp(eps, 1 - eps))
    if decorrelate:
        logits = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_COLOR), logits)
    spectrum = torch.fft.rfft2(logits * 4.0, norm="ortho") / image.scale[..., 0]
    with torch.no_grad():
        image.spectrum.copy_(torch.view_as_real(spectrum))
    return image


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
               decorrelate: bool = True, *, magnitude: torch.Tensor | None = None) -> nn.Module:
    """Build the parameterization named ``kind`` (``fft``, ``pixel`` or ``maco``) of a ``size``
    image (a side, or ``(height, width)``).

    Args:
        decay_power: spectrum fall-off of ``fft`` (unused by the others).
        magnitude: the fixed spectrum ``maco`` needs, from ``magnitude_spectrum(photos, size)``.
    Raises:
        ValueError: ``kind`` is none of these, or ``maco`` lacks a ``magnitude`` of the right shape.
    """
    if kind == "fft":
        return FFTImage(size, generators, decay_power=decay_power, decorrelate=decorrelate)
    if kind == "pixel":
        return PixelImage(size, generators, decorrelate=decorrelate)
    if kind == "maco":
        if magnitude is None:
            raise ValueError("the 'maco' parameterization needs a magnitude spectrum: pass "
                             "magnitude=magnitude_spectrum(photos, size) to make_image")
        return MacoImage(size, generators, magnitude, decorrelate=decorrelate)
    raise ValueError(f"unknown parameterization {kind!r}; use 'fft', 'pixel' or 'maco'")


# MACO (Fel et al. 2023, arXiv 2306.06805): optimize the phase, keep a photographic magnitude.

MACO_GAIN = 1.25  # std of each decorrelated channel before the colour matrix and the sigmoid


class MacoImage(nn.Module):
    """Magnitude-constrained Fourier parameterization: only the phase is optimized (Fel et al. 2023).

    The image is ``irfft2(magnitude * exp(i * phase))`` in decorrelated colour space; each item's
    channels are standardized to mean 0 and std ``MACO_GAIN``, then mapped to RGB by the same colour
    matrix and sigmoid as ``FFTImage``. Standardizing removes the magnitude's arbitrary scale and
    fixes the contrast (the phase alone cannot change it); a gain of 1.25 gives a random-phase image
    the contrast of the scikit-image photographs (pixel std 0.17 vs 0.16) with the sigmoid in its
    near-linear range (no pixel beyond 0.02 or 0.98), so it neither saturates nor turns grey and
    keeps the photographs' spectrum.

    Args:
        size: image side in pixels, or ``(height, width)``.
        generators: one CPU generator per batch item (its initial phase, uniform in [-pi, pi)).
        magnitude: ``[3, height, width // 2 + 1]``, from ``magnitude_spectrum(photos, size)``.
        decorrelate: map from decorrelated to RGB colour space; must match how the magnitude was made.
    Raises:
        ValueError: ``magnitude`` does not have the shape of a ``size`` image's spectrum.
    """

    def __init__(self, size: Size, generators: Sequence[torch.Generator], magnitude: torch.Tensor,
                 decorrelate: bool = True):
        super().__init__()
        self.height, self.width = _hw(size)
        self.decorrelate = decorrelate
        magnitude = torch.as_tensor(magnitude, dtype=torch.float32, device="cpu")
        expected = (3, self.height, self.width // 2 + 1)
        if tuple(magnitude.shape) != expected:
            raise ValueError(f"magnitude has shape {list(magnitude.shape)}, but a {self.height} x {self.width} "
                             f"image needs {list(expected)}; compute it with magnitude_spectrum(photos, "
                             f"({self.height}, {self.width}))")
        self.register_buffer("magnitude", magnitude.clone())
        phase = torch.stack([torch.rand(expected, generator=g, device="cpu") * (2 * math.pi) - math.pi
                             for g in generators])
        self.phase = nn.Parameter(phase)

    def forward(self) -> torch.Tensor:
        image = torch.fft.irfft2(torch.polar(self.magnitude, self.phase), s=(self.height, self.width), norm="ortho")
        image = image - image.mean(dim=(-2, -1), keepdim=True)
        image = image * (MACO_GAIN / (image.std(dim=(-2, -1), keepdim=True) + 1e-8))
        return _to_rgb(image, self.decorrelate)


def magnitude_spectrum(images: Sequence[np.ndarray], size: Size, decorrelate: bool = True) -> torch.Tensor:
    """The mean Fourier magnitude of ``images``, per channel, in the space ``MacoImage`` is built in.

    Each photo is centre-cropped to the canvas aspect and resized (antialiased) to the canvas, its
    RGB centred and mapped through the inverse of the colour matrix. The sigmoid is inverted only to
    first order (logit(x) ~ 4 (x - 1/2)), as ``MacoImage`` standardizes away scale and works in the
    sigmoid's near-linear range; the exact logit, infinite at 0 and 255, blows up saturated regions
    and steepens the spectrum. The periodic component of each photo is taken first (Moisan 2011),
    so its wrap-around edges do not add a cross of spurious power along the frequency axes.

    Args:
        images: uint8 RGB arrays ``[H, W, 3]`` of any sizes (e.g. ``references.load_rgb`` output).
        size: canvas side, or ``(height, width)``.
        decorrelate: as the ``MacoImage`` that will use the spectrum.
    Returns:
        float32 ``[3, height, width // 2 + 1]``, non-negative; the same images give the same bits.
    Raises:
        ValueError: no images, or one that is not uint8 ``[H, W, 3]``.
    """
    height, width = _hw(size)
    total = torch.zeros(3, height, width // 2 + 1, dtype=torch.float64, device="cpu")
    count = 0
    for i, array in enumerate(images):
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"image {i} is {array.dtype} {list(array.shape)}; need uint8 [H, W, 3] RGB "
                             f"(reportgen.analysis.references.load_rgb returns that)")
        rgb = _crop_resize(torch.from_numpy(array.copy()).permute(2, 0, 1).double() / 255.0, height, width)
        centred = 4.0 * (rgb - 0.5)
        if decorrelate:
            centred = torch.einsum("ij,jhw->ihw", torch.linalg.inv(_COLOR.double()), centred)
        total += torch.fft.rfft2(_periodic(centred), norm="ortho").abs()
        count += 1
    if count == 0:
        raise ValueError("magnitude_spectrum needs at least one image; e.g. the photos of "
                         "reportgen.analysis.references.skimage_references(), loaded with load_rgb")
    return (total / count).float()


def _crop_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The largest centred crop of ``image`` [3, h, w] with the canvas aspect, resized to the canvas."""
    h, w = image.shape[-2:]
    if h * width > w * height:  # too tall for the canvas: crop rows
        crop_h, crop_w = max(1, round(w * height / width)), w
    else:
        crop_h, crop_w = h, max(1, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = image[None, :, top:top + crop_h, left:left + crop_w]
    resized = F.interpolate(crop, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized[0].clamp(0.0, 1.0)


def _periodic(image: torch.Tensor) -> torch.Tensor:
    """The periodic component of ``image`` [..., H, W] (Moisan's periodic + smooth decomposition):
    the smooth image whose Laplacian equals the jumps across opposite borders is subtracted."""
    height, width = image.shape[-2:]
    jumps = torch.zeros_like(image)
    jumps[..., 0, :] += image[..., -1, :] - image[..., 0, :]
    jumps[..., -1, :] += image[..., 0, :] - image[..., -1, :]
    jumps[..., :, 0] += image[..., :, -1] - image[..., :, 0]
    jumps[..., :, -1] += image[..., :, 0] - image[..., :, -1]
    q = torch.arange(height, dtype=image.dtype, device=image.device)[:, None]
    r = torch.arange(width, dtype=image.dtype, device=image.device)[None, :]
    laplacian = 2 * torch.cos(2 * math.pi * q / height) + 2 * torch.cos(2 * math.pi * r / width) - 4
    laplacian[0, 0] = 1.0  # the mean of the smooth part is set to 0 below
    smooth = torch.fft.fft2(jumps) / laplacian
    smooth[..., 0, 0] = 0
    return image - torch.fft.ifft2(smooth).real
