"""Robustness transforms (Lucid's standard set), applied with fresh random values every step.

Pad with grey, then one affine resample per image that jitters, scales and rotates it. Each batch
item draws its own values from its own generator, so batching never changes a render.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def random_affine(images: torch.Tensor, generators: Sequence[torch.Generator], pad: int, jitter: int,
                  scales: tuple[float, float], max_angle: float) -> torch.Tensor:
    """Pad ``images`` [B, 3, H, W] by ``pad`` grey pixels, then jitter/scale/rotate each one at random.

    Returns a [B, 3, H + 2 pad, W + 2 pad] tensor, differentiable with respect to ``images``.
    """
    if pad:
        images = F.pad(images, (pad, pad, pad, pad), mode="constant", value=0.5)
    b, _, h, w = images.shape
    draws = torch.stack([torch.rand(4, generator=g, device="cpu") for g in generators])  # [B, 4] in [0, 1)
    shift = (draws[:, :2] * 2 - 1) * jitter  # pixels
    scale = scales[0] + draws[:, 2] * (scales[1] - scales[0])
    angle = (draws[:, 3] * 2 - 1) * math.radians(max_angle)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3, device="cpu")
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, 0, 2] = shift[:, 0] * 2 / w
    theta[:, 1, 2] = shift[:, 1] * 2 / h
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Map [0, 1] RGB to the model's input space with its own mean and std."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - m) / s
