"""Evidence that a render shows what the unit responds to, not noise that only fools the network.

- **Held-out perturbations**: the render is cropped, shifted and blurred in ways the render loop
  never applied (its transforms are a few pixels of jitter, ±10% scale and ±10° rotation), and the
  unit is measured again. A real pattern survives; adversarial high-frequency noise does not.
- **Seed agreement**: a second render from another seed; how alike the two drive the rest of the
  layer (the unit's own channel left out, since both maximize it by construction).
- **Flat renders** (``images.is_flat``): an image with almost no contrast says nothing; it is
  flagged, never shown as a feature.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models import LoadedModel
from .objectives import Objective, evaluate
from .param import GREY

PERTURBATIONS = ("crop", "shift", "blur")
CROP_KEEP = 0.8  # crop: the central 80% of each side, resized back to the canvas
SHIFT_SHARE = 0.125  # shift: an eighth of the canvas down and right, grey coming in
BLUR_SIGMA = 1.0  # blur: a Gaussian of this many pixels


def to_tensor(images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [H, W, 3] images (one size) as a float [B, 3, H, W] batch in [0, 1]."""
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255


def perturb(images: torch.Tensor, kind: str) -> torch.Tensor:
    """``images`` [B, 3, H, W] in [0, 1] after the held-out perturbation ``kind`` (same size).

    Raises:
        ValueError: ``kind`` is not one of ``PERTURBATIONS``.
    """
    _, _, h, w = images.shape
    if kind == "crop":
        dh, dw = round(h * (1 - CROP_KEEP) / 2), round(w * (1 - CROP_KEEP) / 2)
        inner = images[:, :, dh:h - dh, dw:w - dw]
        return F.interpolate(inner, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    if kind == "shift":
        dy, dx = max(1, round(h * SHIFT_SHARE)), max(1, round(w * SHIFT_SHARE))
        return F.pad(images, (dx, 0, dy, 0), mode="constant", value=GREY)[:, :, :h, :w]
    if kind == "blur":
        radius = math.ceil(3 * BLUR_SIGMA)
        x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
        kernel = torch.exp(-x * x / (2 * BLUR_SIGMA ** 2))
        kernel = kernel / kernel.sum()
        padded = F.pad(images, (radius,) * 4, mode="replicate")
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    raise ValueError(f"unknown perturbation {kind!r}; use one of {', '.join(PERTURBATIONS)}")


def perturbed_scores(model: LoadedModel, objective: Objective, images: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """``objective`` (one score per image) on each held-out perturbation of ``images``."""
    batch = to_tensor(images, model.device)
    mean, std = model.preprocess.mean, model.preprocess.std
    with torch.no_grad():
        return {kind: evaluate(model.module, objective, perturb(batch, kind), mean, std).cpu().tolist()
                for kind in PERTURBATIONS}


def seed_agreement(model: LoadedModel, layer: str, channels: Sequence[int], first: Sequence[np.ndarray],
                   second: Sequence[np.ndarray]) -> list[float]:
    """Per unit, the Pearson correlation between how its two renders (``first[i]``, ``second[i]``,
    from two seeds) drive the other channels of ``layer`` (spatial means, pre-activation).

    1 means both seeds found a pattern that the layer sees the same way; near 0, two unrelated
    images. Compare with ``cross_agreement`` (the same measure between different units' renders).
    """
    a, b = layer_profiles(model, layer, first), layer_profiles(model, layer, second)
    return [_pearson_without(a[i], b[i], c) for i, c in enumerate(channels)]


def cross_agreement(model: LoadedModel, layer: str, channels: Sequence[int], renders: Sequence[np.ndarray]) -> float | None:
    """The median of the same correlation between renders of *different* units of ``layer`` (each
    pair leaving both units out): the level that seed agreement should clearly exceed."""
    if len(renders) < 2:
        return None
    profiles = layer_profiles(model, layer, renders)
    values = []
    for i in range(len(renders)):
        for j in range(i + 1, len(renders)):
            keep = torch.ones(profiles.shape[1], dtype=torch.bool, device="cpu")
            keep[[channels[i], channels[j]]] = False
            values.append(_pearson(profiles[i][keep], profiles[j][keep]))
    return float(np.median(values))


def layer_profiles(model: LoadedModel, layer: str, images: Sequence[np.ndarray]) -> torch.Tensor:
    """The spatial mean of every channel of ``layer`` (pre-activation) for each image: [B, C]."""
    from ..layers import FeatureTap
    from .transforms import normalize

    batch = normalize(to_tensor(images, model.device), model.preprocess.mean, model.preprocess.std)
    with torch.no_grad(), FeatureTap(model.module, [layer], stop=True, pre_activation=True) as tap:
        return tap.run(batch)[layer].mean(dim=(2, 3)).float().cpu()


def _pearson_without(a: torch.Tensor, b: torch.Tensor, channel: int) -> float:
    keep = torch.ones(a.shape[0], dtype=torch.bool, device="cpu")
    keep[channel] = False
    return _pearson(a[keep], b[keep])


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0
