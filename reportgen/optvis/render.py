"""The render loop: optimize images for many units of one layer together, in one batch.

The forward pass stops at the target layer. Each unit has its own seed (derived from the build
seed, the layer and the channel), its own initial image and its own random transforms, so a unit's
render does not depend on its batch mates, up to rounding (batched kernels differ in the last bits).
The same seed and batch give the same image to the bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import RenderSettings
from ..layers import FeatureTap
from ..models import LoadedModel
from .objectives import unit_objective
from .param import make_image
from .relu import redirected_relus
from .transforms import normalize, random_affine

CURVE_POINTS = 32  # the optimization curve is kept at this many evenly spaced steps
REDIRECT_STEPS = 16  # ReLU gradients are redirected for these first steps (as Lucid does)


@dataclass
class RenderResult:
    """One unit's render: an RGB uint8 image [H, W, 3], its final score and the score curve."""

    layer: str
    channel: int
    seed: int
    image: np.ndarray
    activation: float
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.activation))


def unit_seed(seed: int, layer: str, channel: int) -> int:
    """A 63-bit seed for one unit, stable across runs and independent of batching."""
    digest = hashlib.sha256(f"{seed}|{layer}|{channel}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def render_channels(
    model: LoadedModel,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    objective_kind: str = "channel",
) -> list[RenderResult]:
    """Maximize the mean activation of each of ``channels`` of ``layer``, all in one batch.

    Args:
        model: the loaded model (eval mode, frozen).
        layer: dotted module path of the target layer.
        channels: channel ids; batch item i optimizes ``channels[i]``.
        settings: canvas size, steps, learning rate, parameterization and transforms.
        seed: the build seed; each unit's own seed is ``unit_seed(seed, layer, channel)``.
        on_step: called with the step number after every optimizer step (for progress).
        objective_kind: ``channel`` (mean over the map) or ``neuron`` (the centre position).
    Returns:
        One ``RenderResult`` per channel, in order.
    """
    seeds = [unit_seed(seed, layer, c) for c in channels]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate).to(model.device)
    optimizer = torch.optim.Adam(image.parameters(), lr=settings.lr)
    objective = unit_objective(objective_kind, layer, tuple(channels))
    mean, std = model.preprocess.mean, model.preprocess.std
    keep = set(np.linspace(0, settings.steps - 1, min(CURVE_POINTS, settings.steps)).round().astype(int).tolist())
    curves: list[list[tuple[int, float]]] = [[] for _ in channels]

    # Where the layer ends in its own activation function (timm's fused norm-act layers), its
    # pre-activation value is what is optimized and measured (the reference statistics too): a
    # ReLU6 output saturates at 6 and passes no gradient where the unit is off.
    autocast, scaler = mixed_precision(model.device)
    with FeatureTap(model.module, [layer], stop=True, pre_activation=True) as tap:
        for step in range(settings.steps):
            batch = random_affine(image(), gens, settings.pad, settings.jitter, settings.scales, settings.max_angle)
            with redirected_relus(model.module, enabled=step < REDIRECT_STEPS):
                with autocast():
                    scores = objective.score(tap.run(normalize(batch, mean, std))).float()
                optimizer.zero_grad(set_to_none=True)
                loss = -scores.sum()  # the one place the sign flips: objectives are maximized
                (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if step in keep:
                for curve, value in zip(curves, scores.detach().cpu().tolist()):
                    curve.append((step, value))
            if on_step:
                on_step(step)
    with torch.no_grad(), FeatureTap(model.module, [layer], stop=True, pre_activation=True) as tap:
        final = image()
        activation = objective.score(tap.run(normalize(final, mean, std))).cpu().tolist()

    finite = torch.isfinite(final).flatten(1).all(dim=1).tolist()
    activation = [a if ok else float("nan") for a, ok in zip(activation, finite)]
    pixels = (final.nan_to_num(0.5).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [
        RenderResult(layer, c, s, pixels[i], float(activation[i]), curves[i])
        for i, (c, s) in enumerate(zip(channels, seeds))
    ]


def mixed_precision(device: torch.device):
    """How a render computes on ``device``: ``(autocast context factory, gradient scaler or None)``.

    On a GPU the forward pass runs in bfloat16 where the GPU supports it (no loss scaling needed),
    else in float16 with a gradient scaler; the image parameters and Adam stay in float32. On the
    CPU everything stays float32 (bit-reproducible renders).
    """
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def check_canvas(model: LoadedModel, layers: Sequence[str], settings: RenderSettings) -> None:
    """Fail early, with the fix, when the canvas is too small for the model to reach every one of
    ``layers`` (one forward pass, stopped after the last of them).

    Raises:
        UsageError: the forward pass at the padded canvas size fails (e.g. inception_v3 at 64 px).
    """
    from ..errors import UsageError

    side = settings.size + 2 * settings.pad
    with torch.no_grad(), FeatureTap(model.module, layers, stop=True) as tap:
        try:
            tap.run(torch.zeros(1, 3, side, side, device=model.device))
        except RuntimeError as exc:
            unreached = next(layer for layer in layers if layer not in tap.outputs)
            raise UsageError(
                f"--size {settings.size} is too small for {model.name} to reach {unreached} "
                f"({str(exc).splitlines()[0][:80]}); try --size {model.preprocess.input_size[1]}"
            ) from None


def choose_batch(model: LoadedModel, layer: str, settings: RenderSettings, n_units: int, requested: int | None) -> int:
    """How many units to optimize at once: ``requested`` if given; on CPU up to 16; on a GPU as
    many as fit in 70% of free memory, measured with a one-unit probe step."""
    if requested:
        return max(1, min(requested, n_units))
    if model.device.type != "cuda":
        return max(1, min(16, n_units))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(model.device)
    before = torch.cuda.memory_allocated(model.device)
    probe = dataclasses.replace(settings, steps=1)
    render_channels(model, layer, [0], probe)
    per_item = max(1, torch.cuda.max_memory_allocated(model.device) - before)
    free, _total = torch.cuda.mem_get_info(model.device)
    return max(1, min(n_units, 256, int(0.7 * free / per_item)))
