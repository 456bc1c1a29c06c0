"""ReLU gradient redirection (Lucid's trick) so units behind a ReLU do not render as flat grey.

A ReLU (or timm's ReLU6) whose input is negative passes no gradient; a unit that starts negative
everywhere never moves. For the first steps of a render, a redirected ReLU whose true gradient is
zero for a batch item lets through, for that item, the gradients that push a clamped input back
into the active range. Forward values are unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class _RedirectedClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high) if high is not None else x.clamp(min=low)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        active = x >= ctx.low
        if ctx.high is not None:
            active &= x <= ctx.high
        true_grad = grad * active.to(grad.dtype)
        alive = true_grad.flatten(1).abs().sum(dim=1) > 0
        if bool(alive.all()):  # the usual case: every item keeps its true gradient
            return true_grad, None, None
        # Redirected: also let through gradients that push a clamped input back into range
        # (descent moves x against the gradient: below the range that needs grad < 0).
        rescue = (x < ctx.low) & (grad < 0)
        if ctx.high is not None:
            rescue |= (x > ctx.high) & (grad > 0)
        redirected = grad * (active | rescue).to(grad.dtype)
        # As in Lucid: a batch item keeps its true gradient unless that is zero everywhere.
        return torch.where(alive.view(-1, *[1] * (grad.ndim - 1)), true_grad, redirected), None, None


@contextmanager
def redirected_relus(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every ``nn.ReLU``/``nn.ReLU6`` of ``model`` redirects its gradient."""
    patched = []
    if enabled:
        for module in model.modules():
            if type(module) in (nn.ReLU, nn.ReLU6):
                high = 6.0 if isinstance(module, nn.ReLU6) else None
                module.forward = lambda x, _h=high: _RedirectedClamp.apply(x, 0.0, _h)
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
