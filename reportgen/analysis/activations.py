"""What real images do to each unit: one streaming pass of the reference images, then a small one.

Units are measured where renders optimize them (before the own activation function of timm's fused
norm-act layers). ``analyze_references`` streams every image once, in batches, through all selected
layers at the same time, and keeps only what does not grow with the number of images: per unit its
running mean, its peak, how often it fires and its top-k images (merged batch by batch); per layer
the sums of products of every pair of units over all (image, position) samples, from which the
correlation of two units' activation maps follows (redundant units). ``activation_maps`` then runs
only the few images the pages show and keeps the full maps of the shown units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..layers import FeatureTap
from ..models import LoadedModel
from ..optvis.transforms import normalize
from .references import MIN_SIDE, ReferenceSet, iter_batches

TOP_K = 5  # reference images kept per unit
REDUNDANT_R = 0.95  # two units whose maps correlate at least this much over the references are twins
MAP_MAX_SIDE = 112  # stored activation maps are average-pooled down to at most this side


@dataclass
class LayerStats:
    """Per-channel statistics of one layer over the reference set (arrays of length C, or [C, k])."""

    top_value: np.ndarray  # [C, k] the k highest spatial-mean activations, highest first
    top_index: np.ndarray  # [C, k] the reference images (indices into the set) that gave them
    mean: np.ndarray  # mean over images of the spatial mean
    peak: np.ndarray  # highest activation at any position of any image
    fire_rate: np.ndarray  # fraction of images on which the unit's spatial max is > 0
    partner: np.ndarray  # the other channel whose maps correlate most with this one's (-1: undefined)
    partner_r: np.ndarray  # that Pearson correlation over all images and positions (NaN: undefined)

    @property
    def max_mean(self) -> np.ndarray:
        """The highest spatial-mean activation over the images (what a render is compared with)."""
        return self.top_value[:, 0]

    @property
    def argmax(self) -> np.ndarray:
        """The reference image that gave ``max_mean``."""
        return self.top_index[:, 0]

    def dead(self) -> list[int]:
        """Channels that never fire (spatial max > 0) on any reference image."""
        return [int(c) for c in np.flatnonzero(self.fire_rate == 0)]

    def redundant(self, threshold: float = REDUNDANT_R) -> list[int]:
        """Channels with a twin: their maps correlate at ``threshold`` or more with another channel's."""
        return [int(c) for c in np.flatnonzero(np.nan_to_num(self.partner_r, nan=-1.0) >= threshold)]

    def to_arrays(self, layer: str) -> dict[str, np.ndarray]:
        return {f"{layer}|{k}": v for k, v in vars(self).items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layer: str) -> "LayerStats":
        return cls(**{k: arrays[f"{layer}|{k}"] for k in cls.__dataclass_fields__})


class _Running:
    """Bounded running state of one layer: O(C·k + C²) memory, whatever the number of images."""

    def __init__(self, k: int):
        self.k = k
        self.count = 0
        self.top_value = self.top_index = self.sum = self.fires = self.peak = None
        self.shift = self.s1 = self.s2 = None
        self.samples = 0

    def add(self, grid: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold in one batch of maps [B, C, H, W] of the images ``indices``."""
        x = grid.detach().float()
        b, c = x.shape[:2]
        means, maxes = x.mean(dim=(2, 3)).cpu(), x.amax(dim=(2, 3)).cpu()
        if self.sum is None:
            # host-side state: the statistics of every batch are gathered on the CPU
            self.top_value = torch.empty(c, 0, device="cpu")
            self.top_index = torch.empty(c, 0, dtype=torch.long, device="cpu")
            self.sum = torch.zeros(c, dtype=torch.float64, device="cpu")
            self.fires = torch.zeros(c, device="cpu")
            self.peak = torch.full((c,), -torch.inf, device="cpu")
        values = torch.cat([self.top_value, means.T], dim=1)
        index = torch.cat([self.top_index, indices.expand(c, b)], dim=1)
        top = values.topk(min(self.k, values.shape[1]), dim=1)
        self.top_value, self.top_index = top.values, index.gather(1, top.indices)
        self.sum += means.double().sum(dim=0)
        self.fires += (maxes > 0).float().sum(dim=0)
        self.peak = torch.maximum(self.peak, maxes.amax(dim=0))
        # Sums of products over every (image, position), shifted by the first batch's means so that
        # float32 products do not cancel catastrophically in cov = E[xy] - E[x]E[y].
        flat = x.transpose(0, 1).reshape(c, -1)
        if self.shift is None:
            self.shift = flat.mean(dim=1, keepdim=True)
            self.s1 = torch.zeros(c, dtype=torch.float64, device="cpu")
            self.s2 = torch.zeros(c, c, dtype=torch.float64, device="cpu")
        flat = flat - self.shift
        self.s1 += flat.sum(dim=1).double().cpu()
        self.s2 += (flat @ flat.T).double().cpu()
        self.samples += flat.shape[1]
        self.count += b

    def finish(self) -> LayerStats:
        partner, partner_r = _partners(self.s1, self.s2, self.samples)
        return LayerStats(
            top_value=self.top_value.numpy(), top_index=self.top_index.numpy(),
            mean=(self.sum / self.count).float().numpy(), peak=self.peak.numpy(),
            fire_rate=(self.fires / self.count).numpy(), partner=partner, partner_r=partner_r,
        )


def _partners(s1: torch.Tensor, s2: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's most correlated other channel, from sums and sums of products over ``n`` samples."""
    mean = (s1 / n).numpy()
    cov = s2.numpy() / n - np.outer(mean, mean)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    valid = std > 1e-8 * max(float(std.max(initial=0.0)), 1e-30)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.outer(std, std)
    r = np.where(np.outer(valid, valid), r, -np.inf)
    np.fill_diagonal(r, -np.inf)
    partner = r.argmax(axis=1) if len(r) else np.zeros(0, dtype=int)
    best = r[np.arange(len(r)), partner] if len(r) else np.zeros(0)
    undefined = ~np.isfinite(best)
    return np.where(undefined, -1, partner).astype(np.int64), np.where(undefined, np.nan, np.clip(best, -1, 1))


@dataclass
class ReferenceAnalysis:
    layers: dict[str, LayerStats]
    used: list[int]  # indices of the images that could be read
    predictions: dict[int, list[tuple[int, float]]]  # image index -> top-5 (class, probability)


def analyze_references(
    model: LoadedModel, layers: Sequence[str], refs: ReferenceSet, batch: int = 16, k: int = TOP_K,
    on_batch: Callable[[int], None] | None = None,
) -> ReferenceAnalysis:
    """Stream ``refs`` through ``model`` once and gather per-unit statistics for ``layers``.

    Args:
        model: the loaded model.
        layers: dotted module paths; all of them are fed by the same forward pass.
        refs: the reference set (decoded lazily, batch by batch; unreadable files are skipped).
        batch: images per forward pass.
        k: how many top images to keep per unit.
        on_batch: called with the number of images done after each batch (for progress).
    Raises:
        UsageError: no image of the set can be read.
    """
    from ..errors import UsageError

    size = model.preprocess.input_size[1]
    running = {layer: _Running(k) for layer in layers}
    used: list[int] = []
    predictions: dict[int, list[tuple[int, float]]] = {}
    current = torch.empty(0, dtype=torch.long, device="cpu")

    def fold(name: str, grid: torch.Tensor) -> None:  # inside the hook: before in-place activations
        running[name].add(grid, current)

    with torch.inference_mode(), FeatureTap(model.module, layers, reduce=fold, pre_activation=True):
        for indices, pixels in iter_batches(refs, size, model.preprocess.crop_pct, batch):
            current = torch.tensor(indices, device="cpu")
            logits = model.module(model_input(model, pixels))
            if logits.ndim == 2:
                probs = logits.float().softmax(dim=-1).cpu()
                top = probs.topk(min(5, probs.shape[1]), dim=1)
                for row, i in enumerate(indices):
                    predictions[i] = [(int(c), float(p)) for c, p in zip(top.indices[row], top.values[row])]
            used.extend(indices)
            if on_batch:
                on_batch(len(used))
    if not used:
        reasons = "; ".join(refs.skipped[:3]) + ("; ..." if len(refs.skipped) > 3 else "")
        raise UsageError(f"none of the {len(refs.skipped)} reference images could be used ({reasons}); "
                         f"give --images a folder of photographs of at least {MIN_SIDE} px, or leave it out")
    return ReferenceAnalysis({layer: r.finish() for layer, r in running.items()}, used, predictions)


def activation_maps(model: LoadedModel, pairs: dict[str, Sequence[tuple[int, int]]], refs: ReferenceSet,
                    batch: int = 16, max_side: int = MAP_MAX_SIDE) -> dict[str, np.ndarray]:
    """The activation maps of chosen (reference image, channel) pairs: the few the pages show.

    Only the pairs asked for are kept, so memory grows with their number, not with images × units.

    Args:
        pairs: {layer: [(image index into ``refs``, channel id), ...]}.
    Returns:
        {layer: float32 array [len(pairs[layer]), h, w]} in the order given, maps average-pooled
        down to at most ``max_side``; a pair whose image cannot be read now is all NaN.
    """
    images = sorted({i for layer_pairs in pairs.values() for i, _ in layer_pairs})
    channels = {layer: sorted({c for _, c in layer_pairs}) for layer, layer_pairs in pairs.items()}
    rows = {layer: {} for layer in pairs}  # layer -> image -> [(row in the result, column in ``channels``)]
    for layer, layer_pairs in pairs.items():
        column = {c: n for n, c in enumerate(channels[layer])}
        for row, (i, c) in enumerate(layer_pairs):
            rows[layer].setdefault(i, []).append((row, column[c]))
    wanted = {layer: torch.as_tensor(cs, dtype=torch.long, device="cpu") for layer, cs in channels.items()}

    def keep(name: str, grid: torch.Tensor) -> torch.Tensor:  # [B, len(channels[name]), h, w] on the CPU
        picked = grid.detach()[:, wanted[name].to(grid.device)].float()
        if picked.shape[-1] > max_side:
            picked = F.adaptive_avg_pool2d(picked, (max_side * picked.shape[-2] // picked.shape[-1], max_side))
        return picked.cpu()

    maps: dict[str, np.ndarray] = {}
    size = model.preprocess.input_size[1]
    with torch.inference_mode(), FeatureTap(model.module, list(pairs), reduce=keep, pre_activation=True,
                                            stop=True) as tap:
        for positions, pixels in iter_batches(refs.subset(images), size, model.preprocess.crop_pct, batch):
            for layer, picked in tap.run(model_input(model, pixels)).items():
                if layer not in maps:
                    maps[layer] = np.full((len(pairs[layer]), *picked.shape[2:]), np.nan, dtype=np.float32)
                for b, position in enumerate(positions):
                    for row, column in rows[layer].get(images[position], []):
                        maps[layer][row] = picked[b, column].numpy()
    return maps


def model_input(model: LoadedModel, pixels: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> the model's normalized float input on its device."""
    x = torch.from_numpy(pixels).to(model.device).permute(0, 3, 1, 2).float() / 255.0
    return normalize(x, model.preprocess.mean, model.preprocess.std)
