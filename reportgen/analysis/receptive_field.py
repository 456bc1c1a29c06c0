"""Theoretical receptive fields, exact, for any model: where in the input a unit can look.

The model is copied and made *linear and positive*: every convolution and linear weight becomes
1/fan-in, biases 0, normalization layers identity, max pooling average pooling. On an all-ones input
every value is then positive, so no activation blocks a gradient and nothing cancels: the input
pixels with a non-zero gradient of the centre unit are exactly its theoretical receptive field.
This works through residual and multi-branch blocks (the union, i.e. the largest branch), strides,
dilations and padding, without knowing the architecture. Attention, squeeze-excite and global
pooling make a field global, and it is reported so.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import FeatureTap


@dataclass(frozen=True)
class ReceptiveField:
    """Side of the field in input pixels (``None`` if global), and the effective padding: how far
    the field of unit (0, 0) reaches before the input's first pixel."""

    size: int | None
    padding: int | None
    is_global: bool = False

    def describe(self) -> str:
        if self.is_global:
            return "global"
        return "too large to measure" if self.size is None else f"{self.size} px"

    def to_dict(self) -> dict:
        return {"size": self.size, "padding": self.padding, "global": self.is_global}


def theoretical(model: nn.Module, layers: Sequence[str], strides: dict[str, int], start_side: int = 224,
                max_side: int = 1024) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of each of ``layers`` (dotted module paths).

    The canvas starts at ``start_side`` pixels and doubles while a field touches its border, up to
    ``max_side``; a field that still touches it is reported as global when it covers the whole
    canvas, else with ``size`` = None and ``is_global`` = False (larger than ``max_side``).
    """
    probe = _linear_positive_copy(model)
    pending, fields, side = list(layers), {}, start_side
    covers_all: dict[str, bool] = {}
    while pending and side <= max_side:
        x = torch.ones(1, 3, side, side, dtype=torch.float64, requires_grad=True)
        with _max_pool_as_average(), FeatureTap(probe, pending) as tap:
            outputs = tap.run(x)
        for name in list(pending):
            out = outputs[name]
            row, col = out.shape[2] // 2, out.shape[3] // 2
            (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x, retain_graph=True)
            support = grad[0].abs().sum(0) > 0
            rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
            top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            covers_all[name] = bool(support.all())
            if top > 0 and left > 0 and bottom < side - 1 and right < side - 1:
                size = max(bottom - top, right - left) + 1
                fields[name] = ReceptiveField(size, row * strides[name] - top)
                pending.remove(name)
        side *= 2
    for name in pending:  # still touching the border at the largest canvas
        fields[name] = ReceptiveField(None, None, is_global=covers_all.get(name, False))
    return fields


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _linear_positive_copy(model: nn.Module) -> nn.Module:
    probe = copy.deepcopy(model).double().eval()
    for parent in list(probe.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _NORMS):  # timm's BatchNormAct2d, LayerNorm2d... subclass these
                setattr(parent, child_name, nn.Identity())
    with torch.no_grad():
        for module in probe.modules():
            for name, param in module.named_parameters(recurse=False):
                if name == "weight" and param.ndim >= 2:
                    param.fill_(1.0 / param[0].numel())
                else:
                    param.fill_(0.0 if name == "bias" else 1.0)
    return probe.requires_grad_(False)


@contextmanager
def _max_pool_as_average() -> Iterator[None]:
    """Max pooling passes a gradient to one pixel per window; average pooling to all of them."""
    original = F.max_pool2d

    def average(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad=True)

    F.max_pool2d = average
    try:
        yield
    finally:
        F.max_pool2d = original
