"""Objectives: what a render maximizes. Each returns one score per batch item, shape [B].

Objectives are data (frozen dataclasses), not closures: they hash into cache keys, serialize into
the manifest (``to_dict`` / ``objective_from_dict``) and describe themselves for captions. They
compose: ``Channel(...) + 0.5 * Diversity(...) - 0.05 * TotalVariation()``.

An objective reads ``acts``, a mapping from names to tensors: tapped layers give [B, C, H, W]
(token outputs already on their grid), ``INPUT`` the image batch in [0, 1] RGB before the model's
normalization, ``LOGITS`` the model's output [B, num_classes]. ``layers`` lists the names an
objective reads; ``evaluate`` builds ``acts`` for exactly those and scores.

The image regularizers (``L1``, ``L2``, ``TotalVariation``, ``Blur``) return a penalty (>= 0,
larger is worse): subtract them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import FeatureTap
from .transforms import normalize

INPUT = "input"  # acts[INPUT]: the image batch [B, 3, H, W] in [0, 1], before mean/std normalization
LOGITS = "logits"  # acts[LOGITS]: the model's output [B, num_classes]
EPS = 1e-8  # inside square roots, so that a norm's gradient stays finite at 0


class Objective:
    """Base class. ``score(acts)`` maps {name: tensor} to a [B] tensor to maximize."""

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

    def __neg__(self) -> "Objective":
        return Scaled(-1.0, self)

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)


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


@dataclass(frozen=True)
class Direction(Objective):
    """Mean over positions of the dot product of ``layer``'s activation vector with a direction
    (Olah et al.'s "direction" objective: a mix of channels, such as a neuron group); batch item i
    maximizes along ``vectors[i]``, one weight per channel. With ``positive``, of the activations'
    positive part (what a layer read before its activation passes on; a neuron group is fitted on
    it). ``label`` names it in captions."""

    layer: str
    vectors: tuple[tuple[float, ...], ...]
    label: str = "a direction"
    positive: bool = False

    def score(self, acts):
        feats = acts[self.layer].clamp(min=0) if self.positive else acts[self.layer]
        vectors = torch.as_tensor(self.vectors, dtype=feats.dtype, device=feats.device)
        return torch.einsum("bchw,bc->b", feats, vectors) / (feats.shape[2] * feats.shape[3])

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"mean along {self.label} at {self.layer}{' (positive part)' if self.positive else ''}"

    def to_dict(self):
        return {"kind": "direction", "layer": self.layer, "vectors": [list(v) for v in self.vectors],
                "label": self.label, "positive": self.positive}


@dataclass(frozen=True)
class ChannelL2(Objective):
    """L2 norm over space of what one channel passes on, sqrt(sum_hw max(f, 0)^2): like
    ``Channel``, but a few strong positions outweigh a weak response everywhere.

    Units are read before their activation function, where a plain sqrt(sum f^2) is as high for a
    strongly negative map as for a positive one: optimizing it drove 12 units of
    tf_efficientnet_lite0 to a median activation ratio of -4.21 (benchmarks/presets.py), pictures
    of what silences them. The positive part is the map after a ReLU (the same for a layer whose
    outputs are never negative); a map with no positive value scores its mean (negative), whose
    gradient raises it."""

    layer: str
    channels: tuple[int, ...]

    def score(self, acts):
        feats = acts[self.layer]
        index = torch.as_tensor(self.channels, device=feats.device)
        maps = feats[torch.arange(feats.shape[0], device=feats.device), index].float()  # float: f^2 overflows fp16
        norm = torch.sqrt(maps.clamp(min=0).pow(2).sum(dim=(1, 2)) + EPS)
        # a map with no positive value has no gradient there: it climbs its mean until one appears
        # (any map with a positive value scores above every map without one)
        return torch.where((maps > 0).flatten(1).any(dim=1), norm, maps.mean(dim=(1, 2)))

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"L2 norm of channel {','.join(map(str, self.channels))} at {self.layer} (positive part)"

    def to_dict(self):
        return {"kind": "channel_l2_positive", "layer": self.layer, "channels": list(self.channels)}


@dataclass(frozen=True)
class LayerL2(Objective):
    """L2 norm of what the whole layer passes on, sqrt(sum_chw max(f, 0)^2): whatever the layer
    sees, amplified (DeepDream, whose original objective is the norm of a layer after its ReLUs).
    Units are read before their activation: the positive part keeps a dream from amplifying how
    strongly a unit is silenced, as in ``ChannelL2``. (A photo leaves some unit of a layer positive,
    so a dream needs no fallback for a map with none.)"""

    layer: str

    def score(self, acts):
        return torch.sqrt(acts[self.layer].float().clamp(min=0).pow(2).flatten(1).sum(dim=1) + EPS)

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"L2 norm of all of {self.layer} (positive part)"

    def to_dict(self):
        return {"kind": "layer_l2_positive", "layer": self.layer}


@dataclass(frozen=True)
class ClassLogit(Objective):
    """The model's logit for a class; item i maximizes ``classes[i]`` (named ``names[i]`` if given)."""

    classes: tuple[int, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.names and len(self.names) != len(self.classes):
            raise ValueError(f"ClassLogit has {len(self.classes)} classes but {len(self.names)} names; "
                             "give one name per class or none")

    def score(self, acts):
        logits = acts[LOGITS]
        index = torch.as_tensor(self.classes, device=logits.device)
        return logits[torch.arange(logits.shape[0], device=logits.device), index]

    @property
    def layers(self):
        return (LOGITS,)

    def describe(self):
        ids = ",".join(map(str, self.classes))
        return f"logit of class {', '.join(self.names)} ({ids})" if self.names else f"logit of class {ids}"

    def to_dict(self):
        return {"kind": "class_logit", "classes": list(self.classes), "names": list(self.names)}


@dataclass(frozen=True)
class Diversity(Objective):
    """Pushes apart the items of a group (equal ids in ``groups``, one per batch item): k variants of
    one unit. Per item: minus the mean cosine similarity between its channel Gram matrix at
    ``layer`` and those of the rest of its group, so -1 for identical images and 0 for an item
    alone in its group. Gram matrices compare styles, not positions, so a shifted copy of the same
    pattern does not count as different."""

    layer: str
    groups: tuple[int, ...]

    def score(self, acts):
        feats = acts[self.layer].float().flatten(2)  # [B, C, HW]
        if feats.shape[0] != len(self.groups):
            raise ValueError(f"Diversity has {len(self.groups)} group ids for a batch of {feats.shape[0]}")
        # Sums over H*W products overflow float16 (65504) on a GPU: autocast must not cast them down.
        with torch.autocast(feats.device.type, enabled=False):
            grams = F.normalize((feats @ feats.transpose(1, 2)).flatten(1), dim=1)  # [B, C*C], unit length
            similarity = grams @ grams.T  # [B, B]
        groups = torch.as_tensor(self.groups, device=feats.device)
        peers = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=feats.device)
        return -(similarity * peers).sum(dim=1) / peers.sum(dim=1).clamp(min=1)

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"diversity (Gram matrices) at {self.layer}"

    def to_dict(self):
        return {"kind": "diversity", "layer": self.layer, "groups": list(self.groups)}


@dataclass(frozen=True)
class FeatureMatch(Objective):
    """Feature inversion: minus the squared distance to ``target`` at ``layer``, relative to the
    target's own squared norm, so 0 is a perfect match and -1 is as far as an all-zero response.

    ``target`` is [B, C, H, W] or [1, C, H, W] (one target for every item), a constant (detached).
    It takes no part in equality, hashing or serialization: ``label`` names it.
    """

    layer: str
    target: torch.Tensor = field(compare=False, repr=False)
    label: str

    def score(self, acts):
        feats = acts[self.layer].float()
        target = self.target.detach().to(feats.device, feats.dtype)
        error = (feats - target).flatten(1).pow(2).sum(dim=1)
        return -error / target.flatten(1).pow(2).sum(dim=1)

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return f"match the features of {self.label} at {self.layer}"

    def to_dict(self):
        return {"kind": "feature_match", "layer": self.layer, "label": self.label}


def relative_distance(feats: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per item, the squared distance of ``feats`` to ``target`` relative to the target's squared
    norm (0: the target's features; 1: as far as all zeros)."""
    return (feats - target).flatten(1).pow(2).sum(dim=1) / target.flatten(1).pow(2).sum(dim=1).clamp(min=EPS)


@dataclass(frozen=True)
class Accentuation(Objective):
    """Feature accentuation (Hamblin et al. 2024): a channel's mean raised above a photo's while the
    layer's features stay near the photo's. Per item: the channel's gain over the photo's mean, in
    units of the RMS of the photo's features, minus ``weight`` times the squared distance to those
    features relative to their squared norm (the relative error of ``FeatureMatch``).

    ``target`` [B, C, H, W] is the photos' features at ``layer``, a constant that takes no part in
    equality, hashing or serialization (``label`` names it)."""

    layer: str
    channels: tuple[int, ...]
    target: torch.Tensor = field(compare=False, repr=False)
    weight: float
    label: str = "the photo"

    def score(self, acts):
        feats = acts[self.layer].float()
        target = self.target.detach().to(feats.device, feats.dtype)
        rows = torch.arange(feats.shape[0], device=feats.device)
        index = torch.as_tensor(self.channels, device=feats.device)
        gain = (feats[rows, index] - target[rows, index]).mean(dim=(1, 2))
        rms = target.flatten(1).pow(2).mean(dim=1).sqrt().clamp(min=EPS)
        return gain / rms - self.weight * relative_distance(feats, target)

    @property
    def layers(self):
        return (self.layer,)

    def describe(self):
        return (f"mean of channel {','.join(map(str, self.channels))} at {self.layer} above {self.label}'s, "
                f"minus {self.weight:g} * the distance to its features there")

    def to_dict(self):
        return {"kind": "accentuation", "layer": self.layer, "channels": list(self.channels), "weight": self.weight,
                "label": self.label}


@dataclass(frozen=True)
class L1(Objective):
    """Penalty: mean absolute distance of the image's pixels from ``constant`` (grey by default)."""

    constant: float = 0.5

    def score(self, acts):
        return (acts[INPUT] - self.constant).abs().mean(dim=(1, 2, 3))

    @property
    def layers(self):
        return (INPUT,)

    def describe(self):
        return f"L1 distance of the image from {self.constant:g}"

    def to_dict(self):
        return {"kind": "l1", "constant": self.constant}


@dataclass(frozen=True)
class L2(Objective):
    """Penalty: root mean square distance of the image's pixels from ``constant``,
    sqrt(mean (x - constant)^2), in pixel units like ``L1``."""

    constant: float = 0.5

    def score(self, acts):
        return torch.sqrt((acts[INPUT] - self.constant).pow(2).mean(dim=(1, 2, 3)) + EPS)

    @property
    def layers(self):
        return (INPUT,)

    def describe(self):
        return f"RMS distance of the image from {self.constant:g}"

    def to_dict(self):
        return {"kind": "l2", "constant": self.constant}


@dataclass(frozen=True)
class TotalVariation(Objective):
    """Penalty: mean absolute difference between horizontally or vertically neighbouring pixels."""

    def score(self, acts):
        image = acts[INPUT]
        down = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().flatten(1)
        right = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().flatten(1)
        return torch.cat([down, right], dim=1).mean(dim=1)

    @property
    def layers(self):
        return (INPUT,)

    def describe(self):
        return "total variation of the image"

    def to_dict(self):
        return {"kind": "total_variation"}


@dataclass(frozen=True)
class Blur(Objective):
    """Penalty: mean squared distance between the image and its 3x3 box blur (borders average the
    pixels that exist), which is large where the image has fine detail."""

    def score(self, acts):
        image = acts[INPUT]
        blurred = F.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)
        return (image - blurred).pow(2).mean(dim=(1, 2, 3))

    @property
    def layers(self):
        return (INPUT,)

    def describe(self):
        return "blur penalty (distance to a 3x3 box blur) of the image"

    def to_dict(self):
        return {"kind": "blur"}


@dataclass(frozen=True)
class Scaled(Objective):
    """``weight`` times an objective; ``-obj`` is a weight of -1."""

    weight: float
    inner: Objective

    def score(self, acts):
        return self.weight * self.inner.score(acts)

    def __neg__(self) -> "Objective":
        # -(w * a) is (-w) * a to the bit (negation is exact), and reads "- w * (a)" in a sum
        return Scaled(-self.weight, self.inner)

    @property
    def layers(self):
        return self.inner.layers

    def describe(self):
        if self.weight == -1:
            return f"minus ({self.inner.describe()})"
        return f"{self.weight:g} * ({self.inner.describe()})"

    def to_dict(self):
        return {"kind": "scaled", "weight": self.weight, "inner": self.inner.to_dict()}


@dataclass(frozen=True)
class Sum(Objective):
    """The sum of objectives; its layers are theirs, each once, in order."""

    terms: tuple[Objective, ...]

    def score(self, acts):
        return sum(term.score(acts) for term in self.terms)

    @property
    def layers(self):
        return tuple(dict.fromkeys(layer for term in self.terms for layer in term.layers))

    def describe(self):
        text = self.terms[0].describe()
        for term in self.terms[1:]:  # a negative weight reads as a subtraction: "a - 0.05 * (b)"
            if isinstance(term, Scaled) and term.weight < 0:
                magnitude = "" if term.weight == -1 else f"{-term.weight:g} * "
                text += f" - {magnitude}({term.inner.describe()})"
            else:
                text += f" + {term.describe()}"
        return text

    def to_dict(self):
        return {"kind": "sum", "terms": [term.to_dict() for term in self.terms]}


# Every kind ``objective_from_dict`` can rebuild; list-valued fields become tuples.
_KINDS: dict[str, type[Objective]] = {
    "channel": Channel, "neuron": Neuron, "direction": Direction, "channel_l2_positive": ChannelL2, "layer_l2_positive": LayerL2,
    "class_logit": ClassLogit, "diversity": Diversity, "l1": L1, "l2": L2,
    "total_variation": TotalVariation, "blur": Blur,
}


def objective_from_dict(d: Mapping) -> Objective:
    """Rebuild an objective from its ``to_dict()`` (e.g. read back from a manifest).

    Raises:
        ValueError: the kind is unknown, its fields do not fit, or it is ``feature_match``, whose
            target tensor is not serialized.
    """
    kind = d.get("kind")
    if kind == "scaled":
        return Scaled(float(d["weight"]), objective_from_dict(d["inner"]))
    if kind == "sum":
        return Sum(tuple(objective_from_dict(term) for term in d["terms"]))
    if kind in ("feature_match", "accentuation"):
        raise ValueError(f"a {kind} objective ({d.get('label')!r} at {d.get('layer')!r}) cannot be read back: "
                         "its target features are not serialized; rebuild it with the photo's features")
    if kind not in _KINDS:
        raise ValueError(f"unknown objective kind {kind!r}; known kinds: {', '.join([*_KINDS, 'scaled', 'sum'])}")
    fields = {k: _tuples(v) for k, v in d.items() if k != "kind"}
    try:
        return _KINDS[kind](**fields)
    except TypeError as error:
        raise ValueError(f"bad {kind} objective {dict(d)!r}: {error}") from None


def _tuples(value):
    """A JSON value with its lists (nested too) as tuples, as the frozen objectives hold them."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def activations(module: nn.Module, names: Sequence[str], images: torch.Tensor, mean: Sequence[float],
                std: Sequence[float]) -> dict[str, torch.Tensor]:
    """The ``acts`` an objective reads: each of ``names`` for ``images`` [B, 3, H, W] in [0, 1].

    Layers are tapped before their own activation function where they end in one (timm's norm-act
    layers, as the catalogue reports). The forward pass stops after the last tapped layer unless
    ``LOGITS`` is asked for, and is skipped when only ``INPUT`` is. Autograd stays intact.

    Raises:
        UnknownLayerError: a name is neither a module of ``module`` nor ``INPUT``/``LOGITS``.
        ValueError: a tapped layer has no [B, C, H, W] (or token-grid) output.
    """
    layers = [name for name in dict.fromkeys(names) if name not in (INPUT, LOGITS)]
    acts: dict[str, torch.Tensor] = {}
    if layers or LOGITS in names:
        x = normalize(images, mean, std).contiguous(memory_format=torch.channels_last)  # as the model's weights
        if LOGITS in names:
            # The forward runs on past the taps, where an in-place activation (timm's norm-act
            # layers) would overwrite a captured pre-activation: keep a copy taken in the hook.
            with FeatureTap(module, layers, pre_activation=True, reduce=lambda _name, grid: grid.clone()) as tap:
                acts[LOGITS] = module(x)
                outputs = tap.outputs
        else:  # the forward stops at the last tap; an earlier tap's value goes on, so it is copied too
            keep = (lambda _name, grid: grid.clone()) if len(layers) > 1 else None
            with FeatureTap(module, layers, stop=True, pre_activation=True, reduce=keep) as tap:
                outputs = tap.run(x)
        flat = [name for name in layers if outputs.get(name) is None]
        if flat:
            raise ValueError(f"layer {flat[0]!r} has no spatial output to score; pick a layer from the catalogue "
                             "(`reportgen layers --model NAME`), or use ClassLogit for the model's output")
        acts.update((name, outputs[name]) for name in layers)
    if INPUT in names:
        acts[INPUT] = images
    return acts


def evaluate(module: nn.Module, objective: Objective, images: torch.Tensor, mean: Sequence[float],
             std: Sequence[float]) -> torch.Tensor:
    """Score ``images`` [B, 3, H, W] in [0, 1] under ``objective`` on ``module``, whose input is
    normalized with ``mean`` and ``std``: a [B] tensor to maximize, differentiable in ``images``.

    Raises:
        As ``activations``.
    """
    return objective.score(activations(module, objective.layers, images, mean, std))
