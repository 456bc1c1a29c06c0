"""Objectives: what a render maximizes. Each returns one score per batch item, shape [B].

Objectives are data (frozen dataclasses), not closures: they hash into cache keys, serialize into
the manifest and describe themselves for captions. They compose: ``a + 0.5 * b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch


class Objective:
    """Base class. ``score(acts)`` maps {layer: [B, C, H, W]} to a [B] tensor to maximize."""

    def score(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def layers(self) -> tuple[str, ...]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def __add__(self, other: "Objective") -> "Objective":
        return Sum((self, other))

    def __mul__(self, weight: float) -> "Objective":
        return Scaled(float(weight), self)

    __rmul__ = __mul__

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-1.0) * other


@dataclass(frozen=True)
class Channel(Objective):
    """Mean activation of one channel of ``layer``; batch item i maximizes ``channels[i]``."""

    layer: str
    channels: tuple[int, ...]

    def score(self, acts):
        feats = acts[self.layer]
        index = torch.as_tensor(self.channels, device=feats.device)
        return feats[torch.arange(feats.shape[0], device=feats.device), index].mean(dim=(1, 2))

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"mean of channel {','.join(map(str, self.channels))} at {self.layer}"

    def to_dict(self):
        return {"kind": "channel", "layer": self.layer, "channels": list(self.channels)}


@dataclass(frozen=True)
class Neuron(Objective):
    """One spatial neuron of a channel: position (row, col), the centre of the map by default."""

    layer: str
    channels: tuple[int, ...]
    row: int | None = None
    col: int | None = None

    def score(self, acts):
        feats = acts[self.layer]
        row = feats.shape[2] // 2 if self.row is None else self.row
        col = feats.shape[3] // 2 if self.col is None else self.col
        index = torch.as_tensor(self.channels, device=feats.device)
        return feats[torch.arange(feats.shape[0], device=feats.device), index, row, col]

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        where = "centre" if self.row is None else f"row {self.row}, col {self.col}"
        return f"neuron ({where}) of channel {','.join(map(str, self.channels))} at {self.layer}"

    def to_dict(self):
        return {"kind": "neuron", "layer": self.layer, "channels": list(self.channels), "row": self.row, "col": self.col}


def unit_objective(kind: str, layer: str, channels: tuple[int, ...]) -> Objective:
    """The objective for a batch of units of ``layer``: ``channel`` (mean) or ``neuron`` (centre)."""
    if kind == "channel":
        return Channel(layer, channels)
    if kind == "neuron":
        return Neuron(layer, channels)
    raise ValueError(f"unknown unit objective {kind!r}")


@dataclass(frozen=True)
class Scaled(Objective):
    weight: float
    inner: Objective

    def score(self, acts):
        return self.weight * self.inner.score(acts)

    @property
    def layers(self):
        return self.inner.layers

    def describe(self):
        return f"{self.weight:g} * ({self.inner.describe()})"

    def to_dict(self):
        return {"kind": "scaled", "weight": self.weight, "inner": self.inner.to_dict()}


@dataclass(frozen=True)
class Sum(Objective):
    terms: tuple[Objective, ...]

    def score(self, acts):
        return sum(term.score(acts) for term in self.terms)

    @property
    def layers(self):
        return tuple(dict.fromkeys(layer for term in self.terms for layer in term.layers))

    def describe(self):
        return " + ".join(term.describe() for term in self.terms)

    def to_dict(self):
        return {"kind": "sum", "terms": [term.to_dict() for term in self.terms]}
