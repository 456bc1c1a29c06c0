"""How units connect: which channels of the layer before drive a unit, and which classes it votes for.

Both are attributions on real images, activation × gradient summed over space and averaged over
the images (Simonyan et al.'s gradient × input, as the Circuits articles used it for "what drives
this neuron"):

- **inputs**: for unit ``u`` of a layer and channel ``j`` of an earlier layer,
  ``mean_images Σ_space a_j · ∂ mean_space(a_u) / ∂ a_j`` — one backward pass per unit;
- **promotes**: for unit ``c`` and class ``k``,
  ``mean_images Σ_space a_c · ∂ logit_k / ∂ a_c`` — one forward-mode pass per unit, whose
  tangent is the unit's own activation, gives it for every class at once. For the last feature
  layer, which reaches the logits through global average pooling and one linear layer, this is
  ``W[k, c]`` times a factor of the unit alone, so its classes are the top of its column of the
  classifier weights.

Activations are taken where the build measures them (before a layer's own activation function
where it has one). The value at the tapped point is kept and a copy flows on, so an in-place
activation after it cannot change what is attributed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd import forward_ad

from ..layers import pre_activation_module, tap_facts

TOP_DRIVERS, TOP_INHIBITORS, TOP_CLASSES = 5, 3, 5  # what a unit page lists of its circuit


def chosen_inputs(scores: np.ndarray) -> list[int]:
    """The channels a unit page lists as its inputs, from one row of ``inputs``: the
    ``TOP_DRIVERS`` most excitatory (positive), then the ``TOP_INHIBITORS`` most inhibitory."""
    order = np.argsort(-scores, kind="stable")
    chosen = [int(j) for j in order[:TOP_DRIVERS] if scores[j] > 0]
    return chosen + [int(j) for j in order[::-1][:TOP_INHIBITORS] if scores[j] < 0]


def driver_channels(scores: np.ndarray | None, shown: Sequence[int]) -> list[int]:
    """The channels of a layer, other than its ``shown`` ones, that some shown unit of the next
    layer lists as an input (``scores``: that layer's ``inputs``), the ones listed by the most
    units first, then by their summed |attribution|: the order in which they are rendered."""
    if scores is None:
        return []
    count: dict[int, int] = {}
    weight: dict[int, float] = {}
    for row in scores:
        for j in chosen_inputs(row):
            if j not in shown:
                count[j] = count.get(j, 0) + 1
                weight[j] = weight.get(j, 0.0) + abs(float(row[j]))
    return sorted(count, key=lambda j: (-count[j], -weight[j], j))


@contextmanager
def _spliced(model: nn.Module, name: str, replace) -> Iterator[None]:
    """While active, the value measured at module ``name`` (the input of its activation function
    where it has one, else its output) goes through ``replace(value)`` before the forward goes on."""
    act = pre_activation_module(model, name)
    if act is not None:
        handle = act.register_forward_pre_hook(lambda _m, inputs: (replace(inputs[0]), *inputs[1:]))
    else:
        handle = dict(model.named_modules())[name].register_forward_hook(lambda _m, _i, output: replace(output))
    try:
        yield
    finally:
        handle.remove()


def _channel_axis(model: nn.Module, name: str, value: torch.Tensor) -> int:
    layout = tap_facts(model).layouts.get(name, "nchw")
    return 1 if layout == "nchw" and value.ndim == 4 else value.ndim - 1


def _grid(model: nn.Module, name: str, value: torch.Tensor) -> torch.Tensor:
    """A tapped value as [B, C, positions] (token outputs keep every token, prefix tokens too)."""
    axis = _channel_axis(model, name, value)
    moved = value.movedim(axis, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def inputs(model: nn.Module, source: str, target: str, units: Sequence[int], x: torch.Tensor) -> np.ndarray:
    """Attribution of each channel of ``source`` to the spatial mean of each unit of ``target`` (a
    later layer): ``[len(units), channels of source]``, averaged over the images of ``x``."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name):
        def replace(value):
            kept[name] = value
            return value.clone()  # what flows on; the kept value stays as it was
        return replace

    with torch.enable_grad(), _spliced(model, source, keep(source)), _spliced(model, target, keep(target)):
        model(x.detach().requires_grad_(True))
        a, b = _grid(model, source, kept[source]), _grid(model, target, kept[target])
        rows = []
        for u in units:
            (grad,) = torch.autograd.grad(b[:, u].mean(dim=1).sum(), kept[source], retain_graph=True)
            rows.append((a * _grid(model, source, grad)).sum(dim=2).mean(dim=0))
    return torch.stack(rows).detach().double().cpu().numpy() if rows else np.zeros((0, a.shape[1]))


def promotes(model: nn.Module, layer: str, units: Sequence[int], x: torch.Tensor) -> np.ndarray:
    """Attribution of each unit of ``layer`` to every logit: ``[len(units), classes]``, averaged over
    the images of ``x`` (one forward-mode pass per unit).

    Raises:
        RuntimeError / NotImplementedError: an operation of the model without forward-mode support.
    """
    rows = []
    with torch.no_grad():
        for u in units:
            def dual(value, _u=u):
                mask = torch.zeros(value.shape[_channel_axis(model, layer, value)], dtype=value.dtype,
                                   device=value.device)
                mask[_u] = 1
                shape = [1] * value.ndim
                shape[_channel_axis(model, layer, value)] = -1
                return forward_ad.make_dual(value, value * mask.view(shape))  # tangent: the unit's own activation

            with forward_ad.dual_level(), _spliced(model, layer, dual):
                logits = model(x)
                tangent = forward_ad.unpack_dual(logits).tangent
            rows.append(tangent.mean(dim=0) if tangent is not None else torch.zeros(logits.shape[1]))
    return torch.stack(rows).double().cpu().numpy() if rows else np.zeros((0, 0))
