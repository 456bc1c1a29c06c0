"""Neuron groups: a layer's activations factored into a few non-negative parts.

Olah et al. ("The Building Blocks of Interpretability", 2018) and Fel et al. (CRAFT, 2023) factor
a layer's activations, one row per (image, position) and one column per channel, with a
non-negative matrix factorization ``A ≈ W H``: each of the ``k`` rows of ``H`` is a *group*, a
non-negative mix of channels that tend to fire together, and ``W`` says how strongly each group is
present at each position. A group is rendered like a unit (``optvis.objectives.Direction`` along
its row of ``H``), its presence maps show where it sits in a photo, and its largest weights say
which units make it up.

NMF needs ``A ≥ 0``: units are measured before their activation function (where renders optimize
them), so the factorization reads their positive part, what the layer passes on.

The solver is HALS (hierarchical alternating least squares, Cichocki and Phan 2009): each sweep
updates one row of ``H``, then one column of ``W``, at a time, in closed form, clipped at zero.
It converges in far fewer sweeps than the classic multiplicative updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NMF_SWEEPS = 100  # HALS sweeps of a fit
PRESENCE_SWEEPS = 20  # HALS sweeps of W alone, H fixed, for positions the fit did not see
EPS = 1e-12  # keeps a division finite when a group is empty


@dataclass
class Factors:
    """``A ≈ presence @ vectors``: ``vectors`` [k, C], each row of unit L2 norm, sorted by
    ``share`` (a group left with no weight is dropped, so ``k`` can be less than asked);
    ``presence`` [N, k]; ``share`` [k], each group's part of the reconstruction's total
    (they sum to 1); ``error``: the relative reconstruction error ``‖A − W H‖_F / ‖A‖_F``."""

    vectors: torch.Tensor
    presence: torch.Tensor
    share: torch.Tensor
    error: float


def nmf(a: torch.Tensor, k: int, seed: int = 0, sweeps: int = NMF_SWEEPS) -> Factors:
    """Factor the non-negative ``a`` [N, C] into ``k`` groups (``k`` at most ``min(N, C)``).

    Deterministic for a given ``seed`` (the random start is drawn on the CPU).

    Raises:
        ValueError: ``a`` has a negative entry, or ``k`` is out of range.
    """
    if k < 1 or k > min(a.shape):
        raise ValueError(f"cannot factor a {tuple(a.shape)} matrix into {k} groups")
    if bool((a < 0).any()):
        raise ValueError("NMF needs a non-negative matrix")
    a = a.float()
    scale = float(a.mean().sqrt()) / k ** 0.5 or 1.0
    generator = torch.Generator().manual_seed(seed)
    w = (torch.rand(a.shape[0], k, generator=generator, dtype=torch.float32, device="cpu") * scale).to(a.device)
    h = (torch.rand(k, a.shape[1], generator=generator, dtype=torch.float32, device="cpu") * scale).to(a.device)
    for _ in range(sweeps):
        wta, wtw = w.T @ a, w.T @ w
        for j in range(k):
            h[j] = (h[j] + (wta[j] - wtw[j] @ h) / max(float(wtw[j, j]), EPS)).clamp_(min=0)
        w = _presence_sweep(a, h, w)
    norms = h.norm(dim=1)
    alive = norms > EPS  # a group that ends with no weight (all-zero data, or squeezed out) is dropped
    h, w, norms = h[alive], w[:, alive], norms[alive]
    h, w = h / norms[:, None], w * norms[None, :]
    share = w.sum(dim=0) * h.sum(dim=1)
    share = share / share.sum().clamp(min=EPS)
    order = torch.argsort(share, descending=True)
    error = float((a - w @ h).norm() / a.norm().clamp(min=EPS))
    return Factors(h[order], w[:, order], share[order], error)


def presence(a: torch.Tensor, vectors: torch.Tensor, sweeps: int = PRESENCE_SWEEPS) -> torch.Tensor:
    """How strongly each group is present in each row of the non-negative ``a`` [N, C]: the
    non-negative ``W`` [N, k] that minimizes ``‖a − W vectors‖_F`` with the groups fixed."""
    a, h = a.float(), vectors.float()
    w = (a @ h.T / (h * h).sum(dim=1).clamp(min=EPS)).clamp(min=0)  # each group's projection alone
    for _ in range(sweeps):
        w = _presence_sweep(a, h, w)
    return w


def _presence_sweep(a: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One HALS sweep over the columns of ``w`` for ``a ≈ w h``."""
    aht, hht = a @ h.T, h @ h.T
    for j in range(h.shape[0]):
        w[:, j] = (w[:, j] + (aht[:, j] - w @ hht[:, j]) / max(float(hht[j, j]), EPS)).clamp_(min=0)
    return w
