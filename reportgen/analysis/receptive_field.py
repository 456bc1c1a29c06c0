"""Receptive fields: where in the input a unit can look (theoretical) and where it does (effective).

Theoretical fields are exact, for any model. The model is copied and made *linear and positive*:
every convolution and linear weight becomes 1/fan-in, biases 0, normalization layers identity, max
pooling average pooling. On an all-ones input every value is then positive, so no activation blocks
a gradient and nothing cancels: the input pixels with a non-zero gradient of the centre unit are
exactly its theoretical receptive field. This works through residual and multi-branch blocks (the
union, i.e. the largest branch), strides, dilations and padding, without knowing the architecture.
Attention, squeeze-excite and global pooling make a field global, and it is reported so.

Effective fields (Luo et al., "Understanding the Effective Receptive Field in Deep Convolutional
Neural Networks", 2016) use the real model on real images: the mean input-gradient magnitude of the
centre unit, which is concentrated in a much smaller, roughly Gaussian, part of the theoretical field.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownLayerError
from ..layers import FeatureTap, tap_facts

Box = tuple[int, int, int, int]  # inclusive pixel box: (top, left, bottom, right)


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


@dataclass(frozen=True)
class EffectiveField:
    """The effective receptive field of a layer's centre position, averaged over ``images``.

    ``size`` is the side, in input pixels, of the smallest square centred on the gradient's centre
    of mass that holds the requested share (95%) of the gradient mass, at most the input's side.
    A square of whole pixels centres on a pixel (odd sides) or a pixel corner (even sides), so both
    nearest the centre of mass are tried and the smaller square wins: a 3 px field whose mass leans
    aside measures 3 px, not 4.
    ``heatmap`` is the mean |gradient| [H, W] at the model's input size, normalized to max 1.
    """

    size: int
    heatmap: np.ndarray
    images: int


def theoretical(model: nn.Module, layers: Sequence[str], strides: dict[str, int], start_side: int = 224,
                max_side: int = 1024) -> dict[str, ReceptiveField]:
    """The theoretical receptive field of each of ``layers`` (dotted module paths).

    The canvas starts at ``start_side`` pixels and doubles while a field touches its border, up to
    ``max_side``; a field that still touches it is reported as global when it covers the whole
    canvas, else with ``size`` = None and ``is_global`` = False (larger than ``max_side``, or than
    the only canvas a fixed-size model runs at).
    """
    probe = _linear_positive_copy(model)
    pending, fields, side = list(layers), {}, start_side
    covers_all: dict[str, bool] = {}
    while pending and side <= max_side:
        # Kernels are rectangles, so a field's height does not depend on the canvas's width, nor its
        # width on the height: a tall and a wide strip (side x start_side) measure both, at a quarter
        # of a side x side square's cost at twice the start and an eighth at eight times.
        try:
            tall = _centre_support(probe, pending, (side, start_side))
            wide = _centre_support(probe, pending, (start_side, side)) if side > start_side else tall
        except (RuntimeError, AssertionError, ValueError, IndexError):
            if side == start_side:
                raise
            break  # a model that runs only at its own size: no larger canvas to grow into
        for name in list(pending):
            (row, rows_support), (_, cols_support) = tall[name], wide[name]
            top, _, bottom, _ = _bounding_box(rows_support)
            _, left, _, right = _bounding_box(cols_support)
            covers_all[name] = bool(rows_support.all() and cols_support.all())
            if top > 0 and left > 0 and bottom < side - 1 and right < side - 1:
                size = max(bottom - top, right - left) + 1
                fields[name] = ReceptiveField(size, row * strides[name] - top)
                pending.remove(name)
        side *= 2
    for name in pending:  # still touching the border at the largest canvas
        fields[name] = ReceptiveField(None, None, is_global=covers_all.get(name, False))
    return fields


def neuron_boxes(model: nn.Module, layers: Sequence[str], side: int) -> dict[str, Box]:
    """The theoretical receptive field of the centre neuron of each of ``layers`` on a square canvas.

    The centre neuron is the one the ``neuron`` objective optimizes: row H // 2, col W // 2 of the
    layer's output map (of its patch grid for vision transformers). One linear, positive copy of the
    model serves every layer.

    Args:
        model: the model (left untouched; a linear, positive copy is probed).
        layers: dotted module paths.
        side: the canvas side in pixels, as the network sees it (padding included).
    Returns:
        ``{layer: (top, left, bottom, right)}``, inclusive boxes in canvas pixels, clipped to the
        canvas; global fields (attention, squeeze-excite) give the whole canvas.
    Raises:
        UnknownLayerError: no such module, or it has no spatial (or token-grid) output.
    """
    supports = _centre_support(_linear_positive_copy(model), layers, side)
    return {name: _bounding_box(support) for name, (_, support) in supports.items()}


def effective(model: nn.Module, layers: Sequence[str], images: torch.Tensor,
              mass: float = 0.95) -> dict[str, EffectiveField]:
    """The effective receptive field of each of ``layers`` (Luo et al. 2016), on the real model.

    For every image, the gradient with respect to the input of the sum over channels of the layer's
    centre position (row H // 2, col W // 2), taken where units are measured: before the layer's
    own activation function (``FeatureTap(pre_activation=True)``). Its magnitude, summed over colour
    and normalized to sum 1 per image (so no image dominates), is averaged over the images. The
    model runs in eval mode (batch norm statistics untouched, images independent) with no parameter
    gradients; its train/eval modes and ``requires_grad`` flags are restored afterwards.

    Args:
        model: the model, with its real weights.
        layers: dotted module paths with a spatial (or token-grid) output.
        images: a normalized batch [N, 3, H, W] at the model's input size, on the model's device.
        mass: the share of gradient mass the reported square must hold.
    Returns:
        ``{layer: EffectiveField}``; ``images`` counts the images whose gradient was not all zero
        (none: ``size`` 0 and an all-zero heatmap).
    Raises:
        UnknownLayerError: no such module, or it has no spatial (or token-grid) output.
    """
    x = images.detach().requires_grad_(True)
    fields = {}
    with _frozen_eval(model), torch.enable_grad():
        # One forward per layer, stopped there, beat one forward for all layers with a retained graph
        # (tf_efficientnet_lite0, 8 images, 8 layers: 2.8 s against 4.4 s of CPU): backward costs the
        # same either way, and the retained graph made every backward page in fresh gradient memory.
        for name in layers:
            with FeatureTap(model, [name], stop=True, pre_activation=True) as tap:
                outputs = tap.run(x)  # stopped before any later (in-place) activation can run
            _require_spatial([name], outputs)
            out = outputs[name]
            (grad,) = torch.autograd.grad(out[:, :, out.shape[2] // 2, out.shape[3] // 2].sum(), x)
            fields[name] = _effective_field(grad, mass)
    return fields


def _effective_field(grad: torch.Tensor, mass: float) -> EffectiveField:
    maps = grad.detach().abs().sum(1).double().cpu()  # [N, H, W]
    totals = maps.sum((1, 2))
    kept = totals > 0
    if not kept.any():
        return EffectiveField(0, np.zeros(maps.shape[1:], np.float32), 0)
    mean = (maps[kept] / totals[kept, None, None]).mean(0).numpy()  # sums to 1
    rows, cols = np.indices(mean.shape)
    centre = np.array([(mean * rows).sum(), (mean * cols).sum()])
    # squares of whole pixels: odd sides centre on a pixel, even sides on a pixel corner
    size = min(_square_side(mean, snapped, mass) for snapped in (np.round(centre), np.floor(centre) + 0.5))
    return EffectiveField(min(size, max(mean.shape)), (mean / mean.max()).astype(np.float32), int(kept.sum()))


def _square_side(weights: np.ndarray, centre: np.ndarray, mass: float) -> int:
    """Side of the smallest square of whole pixels centred on ``centre`` holding ``mass`` of ``weights``."""
    rows, cols = np.indices(weights.shape)
    reach = np.maximum(abs(rows - centre[0]), abs(cols - centre[1])).ravel()  # a side-s square holds reach <= (s-1)/2
    order = np.argsort(reach, kind="stable")
    held = np.cumsum(weights.ravel()[order])
    last = min(int(np.searchsorted(held, mass * (1 - 1e-9))), held.size - 1)
    return int(round(2 * reach[order][last] + 1))


def _centre_support(probe: nn.Module, layers: Sequence[str],
                    shape: int | tuple[int, int]) -> dict[str, tuple[int, torch.Tensor]]:
    """For each layer of the linear positive ``probe``: the row of its centre unit and the boolean
    [height, width] map of the input pixels that unit's gradient reaches (its theoretical field) on
    a canvas of ``shape`` (a square's side, or ``(height, width)``)."""
    height, width = (shape, shape) if isinstance(shape, int) else shape
    device = next(probe.parameters()).device
    x = torch.ones(1, 3, height, width, dtype=torch.float64, device=device, requires_grad=True)
    with _max_pool_as_average(), torch.enable_grad(), FeatureTap(probe, layers, stop=True) as tap:
        outputs = tap.run(x)
    _require_spatial(layers, outputs)
    supports = {}
    for name in layers:
        out = outputs[name]
        row, col = out.shape[2] // 2, out.shape[3] // 2
        (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x, retain_graph=True)
        # In deep attention stages the probe's values grow huge and softmax's gradient can come back
        # NaN: NaN arrives only along paths that carry gradient, so it counts as reached.
        reached = grad[0].nan_to_num(nan=1.0).abs().sum(0) > 0
        supports[name] = (row, reached.cpu())
    return supports


def _bounding_box(support: torch.Tensor) -> Box:
    """The inclusive box around ``support``; the whole canvas where nothing is reached (a field the
    probe cannot see, so that no pixel the unit might see is left out)."""
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    if len(rows) == 0:
        return 0, 0, support.shape[0] - 1, support.shape[1] - 1
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def _require_spatial(layers: Sequence[str], outputs: dict) -> None:
    for name in layers:
        if outputs.get(name) is None:
            raise UnknownLayerError(f"layer {name!r} has no spatial or token-grid output to take a centre position of; "
                             "pick a layer from `reportgen layers --model NAME`")


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; every module's mode and flag restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _linear_positive_copy(model: nn.Module) -> nn.Module:
    tap_facts(model)  # measured on the real model, so that the copy carries its layouts
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
