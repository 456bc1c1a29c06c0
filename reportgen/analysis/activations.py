"""One streaming pass of the reference images through the model, feeding every selected layer.

Units are measured where renders optimize them (before the own activation function of timm's
fused norm-act layers). Per unit it keeps running statistics only (never all activations): the highest spatial-mean
activation over the images and which image gave it, the mean, and how often the unit fires.
The model's own top-5 predictions per image come from the same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..layers import FeatureTap
from ..models import LoadedModel
from ..optvis.transforms import normalize
from .references import ReferenceSet, iter_batches


@dataclass
class LayerStats:
    """Per-channel statistics of one layer over the reference set (arrays of length C)."""

    max_mean: np.ndarray  # highest spatial-mean activation over the images
    argmax: np.ndarray  # index (into the reference set) of that image
    mean: np.ndarray  # mean over images of the spatial mean
    fire_rate: np.ndarray  # fraction of images on which the unit's spatial max is > 0

    def to_arrays(self, layer: str) -> dict[str, np.ndarray]:
        return {f"{layer}|{k}": v for k, v in vars(self).items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layer: str) -> "LayerStats":
        return cls(**{k: arrays[f"{layer}|{k}"] for k in ("max_mean", "argmax", "mean", "fire_rate")})


@dataclass
class ReferenceAnalysis:
    layers: dict[str, LayerStats]
    used: list[int]  # indices of the images that could be read
    predictions: dict[int, list[tuple[int, float]]]  # image index -> top-5 (class, probability)


def analyze_references(
    model: LoadedModel, layers: Sequence[str], refs: ReferenceSet, batch: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> ReferenceAnalysis:
    """Stream ``refs`` through ``model`` once and gather per-unit statistics for ``layers``.

    Raises:
        UsageError: (from the reference set) when no image can be read at all.
    """
    from ..errors import UsageError

    size = model.preprocess.input_size[1]
    running: dict[str, dict[str, torch.Tensor]] = {}
    used: list[int] = []
    predictions: dict[int, list[tuple[int, float]]] = {}
    count = 0

    def spatial(t: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, 2, C]: mean and max over space
        return torch.stack([t.mean(dim=(2, 3)), t.amax(dim=(2, 3))], dim=1).float().cpu()

    # Measured where renders are: before a fused norm-act layer's own activation function.
    with torch.inference_mode(), FeatureTap(model.module, layers, reduce=spatial, pre_activation=True) as tap:
        for indices, pixels in iter_batches(refs, size, model.preprocess.crop_pct, batch):
            x = torch.from_numpy(pixels).to(model.device).permute(0, 3, 1, 2).float() / 255.0
            tap.outputs = {}
            logits = model.module(normalize(x, model.preprocess.mean, model.preprocess.std))
            if logits.ndim == 2:
                probs = logits.float().softmax(dim=-1).cpu()
                top = probs.topk(min(5, probs.shape[1]), dim=1)
                for row, i in enumerate(indices):
                    predictions[i] = [(int(c), float(p)) for c, p in zip(top.indices[row], top.values[row])]
            index = torch.tensor(indices)
            for layer in layers:
                means, maxes = tap.outputs[layer][:, 0], tap.outputs[layer][:, 1]
                state = running.setdefault(layer, {
                    "max_mean": torch.full((means.shape[1],), -torch.inf), "argmax": torch.zeros(means.shape[1], dtype=torch.long),
                    "sum": torch.zeros(means.shape[1], dtype=torch.float64), "fires": torch.zeros(means.shape[1]),
                })
                best, where = means.max(dim=0)
                better = best > state["max_mean"]
                state["max_mean"] = torch.where(better, best, state["max_mean"])
                state["argmax"] = torch.where(better, index[where], state["argmax"])
                state["sum"] += means.double().sum(dim=0)
                state["fires"] += (maxes > 0).float().sum(dim=0)
            used.extend(indices)
            count += len(indices)
            if on_batch:
                on_batch(count)
    if not used:
        raise UsageError(f"none of the reference images could be read ({len(refs.skipped)} skipped)")
    stats = {
        layer: LayerStats(
            max_mean=s["max_mean"].numpy(), argmax=s["argmax"].numpy(),
            mean=(s["sum"] / count).float().numpy(), fire_rate=(s["fires"] / count).numpy(),
        )
        for layer, s in running.items()
    }
    return ReferenceAnalysis(stats, used, predictions)
