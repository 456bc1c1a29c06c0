"""The render loop: optimize images for many units of one layer together, in one batch.

``render_channels`` maximizes whole channels over the whole canvas; ``render_neurons`` maximizes
centre neurons over only the pixels inside a box (their receptive field). Both run one loop.

The forward pass stops at the target layer. Each unit has its own seed (derived from the build
seed, the layer and the channel), its own initial image and its own random transforms, so a unit's
render does not depend on its batch mates, up to rounding (batched kernels differ in the last bits).
On the CPU the same seed and batch give the same image to the bit; on CUDA, ``grid_sample``'s
backward adds gradients atomically in no fixed order, so GPU renders agree only to rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RenderSettings
from ..models import LoadedModel
from .objectives import (LOGITS, L1, L2, Accentuation, Blur, Channel, ChannelL2, ClassLogit, Direction, Diversity,
                         FeatureMatch, LayerL2,
                         Neuron, Objective, TotalVariation, activations, evaluate)
from .param import GREY, BoxedImage, check_box, make_image
from .relu import redirected_relus
from .transforms import random_affine

CURVE_POINTS = 32  # the optimization curve is kept at this many evenly spaced steps
REDIRECT_STEPS = 16  # ReLU gradients are redirected for these first steps (as Lucid does)
DIVERSITY_K = 3  # variants per unit in a diversity render
DIVERSITY_WEIGHT = 8.0  # weight of the diversity term against the channel mean (benchmarks/presets.py)
ACCENT_WEIGHT = 3.0  # accentuation: weight of the relative feature distance against the unit's gain
# A class logit pools the whole image: much stronger transforms than a channel's make class
# visualizations that other networks recognize too (benchmarks/classes.py measures both).
CLASS_JITTER = 0.1875  # largest translation, as a share of the canvas side
CLASS_SCALES = (0.4, 1.6)
CLASS_MAX_ANGLE = 45.0


@dataclass
class RenderResult:
    """One render: an RGB uint8 image [H, W, 3], its final score, the score curve, what it
    optimized (``objective``, described for this item alone) and any further measures (``extra``)."""

    layer: str
    channel: int
    seed: int
    image: np.ndarray
    activation: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    objective: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.activation))

    @property
    def flat(self) -> bool:
        """Almost no contrast: a grey or single-colour field, flagged rather than shown as a feature."""
        from ..images import is_flat

        return is_flat(self.image)


def side_by_side(results: Sequence[RenderResult]) -> RenderResult:
    """Variants of one unit (a diversity render) as one result: the images side by side, the mean
    activation and curve; each variant's activation is kept in ``extra["activations"]``."""
    first = results[0]
    curve = [(step, float(np.mean([r.curve[i][1] for r in results]))) for i, (step, _) in enumerate(first.curve)]
    return RenderResult(first.layer, first.channel, first.seed, np.concatenate([r.image for r in results], axis=1),
                        float(np.mean([r.activation for r in results])), curve, first.objective,
                        {"activations": [r.activation for r in results]})


# The image penalties of ``--penalty`` (``config.PENALTIES`` names them), each >= 0 and subtracted.
PENALTY_OBJECTIVES = {"tv": TotalVariation, "l1": L1, "l2": L2, "blur": Blur}


def render_objective(kind: str, layer: str, ids: Sequence[int], names: Sequence[str] = (),
                     target: torch.Tensor | None = None, k: int | None = None,
                     weight: float | None = None, settings: RenderSettings | None = None,
                     vectors: Sequence[Sequence[float]] = ()) -> Objective:
    """What a render of ``kind`` maximizes for the batch ``ids`` of ``layer``: the one definition the
    render functions optimize and a render's store key describes (``renders.render_key``).

    ``channel`` and ``second-seed``: the channel mean (or, with ``settings.objective == "l2norm"``,
    its L2 norm); ``neuron``: the centre neuron; ``negative``: minus the channel mean;
    ``diversity``: ``k`` (default ``DIVERSITY_K``) variants of each unit, their channel objective
    plus ``weight`` (default ``DIVERSITY_WEIGHT``) times their Gram diversity; ``class``: the class
    logit (named by ``names``); ``dream``: the layer's L2 norm; ``inversion``: the match of
    ``target``'s features; ``accentuation``: the channel mean above the photo's (``target``: its
    features), minus ``weight`` (default ``ACCENT_WEIGHT``) times the distance to them; ``group``:
    the mean along each neuron group's channel mix (``vectors``, one per id; ``analysis.groups``).
    ``settings.penalties`` are subtracted from every kind, each times its weight. Without
    ``settings``: the plain measure a render's activation is read with.

    Raises:
        ValueError: an unknown kind.
    """
    ids = tuple(ids)
    unit = ChannelL2 if settings is not None and settings.objective == "l2norm" else Channel
    if kind in ("channel", "second-seed"):
        base = unit(layer, ids)
    elif kind == "neuron":
        base = Neuron(layer, ids)
    elif kind == "negative":
        base = -Channel(layer, ids)  # a norm has no opposite: the negative always lowers the mean
    elif kind == "diversity":
        k = DIVERSITY_K if k is None else k
        weight = DIVERSITY_WEIGHT if weight is None else weight
        items = tuple(c for c in ids for _ in range(k))
        groups = tuple(i for i in range(len(ids)) for _ in range(k))
        base = unit(layer, items) + weight * Diversity(layer, groups)
    elif kind == "class":
        base = ClassLogit(ids, tuple(names) or ("",) * len(ids))
    elif kind == "dream":
        base = LayerL2(layer)
    elif kind == "group":
        base = Direction(layer, tuple(tuple(float(w) for w in v) for v in vectors),
                         label=f"neuron group {','.join(map(str, ids))}")
    elif kind == "accentuation":
        base = Accentuation(layer, ids, target if target is not None else torch.empty(0, device="cpu"),
                            ACCENT_WEIGHT if weight is None else weight)
    elif kind == "inversion":
        base = FeatureMatch(layer, target if target is not None else torch.empty(0, device="cpu"), label="the photo")
    else:
        raise ValueError(f"unknown render kind {kind!r}; use channel, second-seed, neuron, negative, diversity, "
                         "group, accentuation, class, dream or inversion")
    for name, penalty in (settings.penalties if settings is not None else ()):
        base = base - penalty * PENALTY_OBJECTIVES[name]()
    return base


def unit_seed(seed: int, layer: str, channel: int, kind: str = "channel") -> int:
    """A 63-bit seed for one unit, stable across runs and independent of batching.

    ``kind`` says which render of the unit it seeds (``channel`` or ``neuron``), so a unit's neuron
    render does not start from its channel render's random image; a channel seed is the same as
    before kinds existed.
    """
    key = f"{seed}|{layer}|{channel}" if kind == "channel" else f"{seed}|{layer}|{channel}|{kind}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def render_channels(
    model: LoadedModel,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    magnitude: torch.Tensor | None = None,
) -> list[RenderResult]:
    """Maximize the mean activation of each of ``channels`` of ``layer``, all in one batch.

    Args:
        model: the loaded model (eval mode, frozen).
        layer: dotted module path of the target layer.
        channels: channel ids; batch item i optimizes ``channels[i]``.
        settings: canvas size, steps, learning rate, parameterization and transforms.
        seed: the build seed; each unit's own seed is ``unit_seed(seed, layer, channel)``.
        on_step: called with the step number after every optimizer step (for progress).
        magnitude: the fixed spectrum of a ``maco`` parameterization (``param.magnitude_spectrum``).
    Returns:
        One ``RenderResult`` per channel, in order.
    Raises:
        ValueError: ``settings.param`` is unknown, or ``maco`` without ``magnitude``.
    """
    seeds = [unit_seed(seed, layer, c) for c in channels]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate,
                       magnitude=magnitude)
    return optimize(model, image, render_objective("channel", layer, channels, settings=settings), channels, seeds,
                    gens, settings, on_step, measure=render_objective("channel", layer, channels), label=layer,
                    describe=lambda i: render_objective("channel", layer, channels[i:i + 1], settings=settings).describe())


def render_groups(
    model: LoadedModel,
    layer: str,
    groups: Sequence[int],
    vectors: Sequence[Sequence[float]],
    settings: RenderSettings,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    magnitude: torch.Tensor | None = None,
) -> list[RenderResult]:
    """Maximize the mean along each neuron group's channel mix (``vectors[i]`` for group
    ``groups[i]``) of ``layer``, as ``render_channels`` does a channel's mean; each group's seed
    is ``unit_seed(seed, layer, group, "group")``. The reported activation is the mean along the
    mix of the activations' positive part, which the groups were fitted on (the optimization climbs
    the plain mean: the positive part passes no gradient where every unit of the mix is off)."""
    seeds = [unit_seed(seed, layer, g, kind="group") for g in groups]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate,
                       magnitude=magnitude)
    return optimize(model, image, render_objective("group", layer, groups, settings=settings, vectors=vectors),
                    groups, seeds, gens, settings, on_step,
                    measure=dataclasses.replace(render_objective("group", layer, groups, vectors=vectors), positive=True),
                    label=layer, describe=lambda i: render_objective("group", layer, groups[i:i + 1], settings=settings,
                                                                     vectors=vectors[i:i + 1]).describe())


def render_neurons(
    model: LoadedModel,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    box: tuple[int, int, int, int] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[RenderResult]:
    """Maximize the centre neuron of each of ``channels`` of ``layer``, optimizing only ``box``.

    A neuron sees only its receptive field; pixels it cannot see would gain texture the reader
    takes for part of the feature. So only the pixels inside ``box`` are parameterized (in
    ``settings.param``, at the box's height x width), pasted into a canvas of constant 0.5 grey;
    every pixel outside stays exactly grey (128 in the returned image). Jitter is capped at an
    eighth of the box's side, so the field keeps its pixels in view. Transforms, ReLU
    redirection, pre-activation tap, precision and curve are those of ``render_channels``; the
    final score is measured on the canvas padded as during optimization.

    Args:
        model: the loaded model (eval mode, frozen).
        layer: dotted module path of the target layer.
        channels: channel ids; batch item i optimizes the centre position of ``channels[i]``.
        settings: canvas size, steps, learning rate, parameterization and transforms.
        seed: the build seed; each unit's own seed is ``unit_seed(seed, layer, channel, "neuron")``.
        box: ``(top, left, bottom, right)``, inclusive, in canvas pixels (the ``settings.size``
            square before the transforms' padding), e.g. the neuron's theoretical receptive field;
            ``None`` parameterizes the whole canvas.
        on_step: called with the step number after every optimizer step (for progress).
    Returns:
        One ``RenderResult`` per channel, in order, each with the full-canvas image.
    Raises:
        ValueError: ``box`` is empty or leaves the canvas, or ``settings.param`` is unknown.
    """
    seeds = [unit_seed(seed, layer, c, kind="neuron") for c in channels]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    # The box is the neuron's field at the canvas's scale: its random scales stay the canvas's.
    settings = dataclasses.replace(settings, reach_input=False)
    if settings.param == "maco":  # a photo spectrum does not fit a small box: the box is Fourier
        settings = dataclasses.replace(settings, param="fft")
    if box is None:
        image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate)
    else:
        top, left, bottom, right = check_box(box, settings.size)
        # Jitter must not push a small field's pixels out of the neuron's view: at most 1/8 of the
        # box (an 11 px field under ±8 px jitter ended below zero for some units; capped, all rose).
        jitter = min(settings.jitter, (min(bottom - top, right - left) + 1) // 8)
        settings = dataclasses.replace(settings, jitter=jitter)
        inner = make_image(settings.param, (bottom - top + 1, right - left + 1), gens, settings.decay_power,
                           settings.decorrelate)
        image = BoxedImage(inner, settings.size, (top, left, bottom, right))
    # A neuron is measured on the canvas as it was optimized, padded with grey: its centre position
    # (and receptive-field box) is that of the padded map. A channel's mean is measured unpadded.
    return optimize(model, image, render_objective("neuron", layer, channels, settings=settings), channels, seeds,
                    gens, settings, on_step, measure=render_objective("neuron", layer, channels),
                    measure_pad=settings.pad, label=layer,
                    describe=lambda i: render_objective("neuron", layer, channels[i:i + 1], settings=settings).describe())


def render_negatives(
    model: LoadedModel,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    magnitude: torch.Tensor | None = None,
) -> list[RenderResult]:
    """Minimize the mean of each of ``channels`` of ``layer``: what each unit hates. As
    ``render_channels`` otherwise; the reported activation is the (low) channel mean reached."""
    seeds = [unit_seed(seed, layer, c, kind="negative") for c in channels]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate,
                       magnitude=magnitude)
    return optimize(model, image, render_objective("negative", layer, channels, settings=settings), channels, seeds,
                    gens, settings, on_step, measure=Channel(layer, tuple(channels)), label=layer,
                    describe=lambda i: render_objective("negative", layer, channels[i:i + 1], settings=settings).describe())


def render_diversity(
    model: LoadedModel,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    k: int | None = None,
    weight: float | None = None,
    on_step: Callable[[int], None] | None = None,
    magnitude: torch.Tensor | None = None,
) -> list[list[RenderResult]]:
    """``k`` (default ``DIVERSITY_K``) variants of each of ``channels``, optimized together and
    pushed apart (Gram-matrix diversity at ``layer``, weight default ``DIVERSITY_WEIGHT``), so a
    unit that answers to several patterns shows them.

    Returns:
        One list of ``k`` results per channel, in order; each result's activation is its channel mean.
    """
    k = DIVERSITY_K if k is None else k
    weight = DIVERSITY_WEIGHT if weight is None else weight
    items = [c for c in channels for _ in range(k)]
    seeds = [unit_seed(seed, layer, c, kind=f"diversity{j}") for c in channels for j in range(k)]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate,
                       magnitude=magnitude)
    objective = render_objective("diversity", layer, channels, k=k, weight=weight, settings=settings)
    plain = dataclasses.replace(settings, penalties=())
    penalties = "".join(f" - {w:g} * ({PENALTY_OBJECTIVES[name]().describe()})" for name, w in settings.penalties)
    flat = optimize(model, image, objective, items, seeds, gens, settings, on_step, measure=Channel(layer, tuple(items)),
                    label=layer,
                    describe=lambda i: f"{render_objective('channel', layer, (items[i],), settings=plain).describe()} + "
                                       f"{weight:g} * diversity of {k} variants at {layer}{penalties}")
    return [flat[i * k:(i + 1) * k] for i in range(len(channels))]


def class_settings(settings: RenderSettings) -> RenderSettings:
    """``settings`` with the transforms class visualizations render with: translation up to
    ``CLASS_JITTER`` of the canvas, scale ``CLASS_SCALES``, rotation up to ``CLASS_MAX_ANGLE``."""
    return dataclasses.replace(settings, jitter=max(settings.jitter, round(CLASS_JITTER * settings.size)),
                               scales=CLASS_SCALES, max_angle=CLASS_MAX_ANGLE)


def render_classes(
    model: LoadedModel,
    classes: Sequence[int],
    settings: RenderSettings,
    seed: int = 0,
    names: Sequence[str] = (),
    magnitude: torch.Tensor | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[RenderResult]:
    """Maximize the logit of each of ``classes`` (a class visualization); results are labelled
    with layer ``logits`` and the class id as channel. ``magnitude`` is the fixed spectrum a
    ``maco`` parameterization needs. ``settings`` are used as given: a build passes
    ``class_settings(...)`` of its render settings."""
    seeds = [unit_seed(seed, LOGITS, c) for c in classes]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = make_image(settings.param, settings.size, gens, settings.decay_power, settings.decorrelate,
                       magnitude=magnitude)
    names = tuple(names) or ("",) * len(classes)
    return optimize(model, image, render_objective("class", LOGITS, classes, names, settings=settings), classes, seeds,
                    gens, settings, on_step, measure=render_objective("class", LOGITS, classes, names), label=LOGITS,
                    describe=lambda i: render_objective("class", LOGITS, classes[i:i + 1], names[i:i + 1],
                                                        settings=settings).describe())


def optimize(
    model: LoadedModel,
    image: torch.nn.Module,
    objective: Objective,
    units: Sequence[int],
    seeds: Sequence[int],
    gens: Sequence[torch.Generator],
    settings: RenderSettings,
    on_step: Callable[[int], None] | None,
    measure: Objective | None = None,
    measure_pad: int = 0,
    label: str = "",
    describe: Callable[[int], str] | None = None,
) -> list[RenderResult]:
    """The render loop shared by every kind of render: maximize ``objective`` (one score per batch
    item, item i being ``units[i]``) over ``image``'s parameters, each step following the mean
    gradient of ``settings.samples`` random transforms drawn from ``gens``; then set the parameters
    to their moving average (``average_decay``) and score that final image without transforms by
    ``measure`` (default: the objective), on the canvas padded with ``measure_pad`` grey pixels.
    ``describe(i)`` says what item i optimized (default: the whole objective's description)."""
    image = image.to(model.device)
    optimizer = torch.optim.Adam(image.parameters(), lr=settings.lr)
    decay = average_decay(settings)
    averages = [p.detach().clone() for p in image.parameters()]
    mean, std = model.preprocess.mean, model.preprocess.std
    keep = set(np.linspace(0, settings.steps - 1, min(CURVE_POINTS, settings.steps)).round().astype(int).tolist())
    curves: list[list[tuple[int, float]]] = [[] for _ in units]

    # Where a layer ends in its own activation function (timm's fused norm-act layers), its
    # pre-activation value is what ``evaluate`` optimizes and measures (the reference statistics
    # too): a ReLU6 output saturates at 6 and passes no gradient where the unit is off.
    autocast, scaler = mixed_precision(model.device)
    scales = reach_scales(model, settings)
    # The transform samples of a step go through the network as one batch where that batch is no
    # larger than a job's (on a CPU, larger batches cost more per image: CPU_BATCH), else one by one.
    draws = settings.samples if len(units) * settings.samples <= batch_limit(model) else 1
    for step in range(settings.steps):
        optimizer.zero_grad(set_to_none=True)
        scores = 0.0
        with redirected_relus(model.module, enabled=step < REDIRECT_STEPS):
            for _ in range(settings.samples // draws):  # the gradient averages over independent random transforms
                drawn = image()
                batch = torch.cat([random_affine(drawn, gens, settings.pad, settings.jitter, scales, settings.max_angle)
                                   for _ in range(draws)])
                with autocast():
                    sample = _scored(model, objective, batch, draws).float()  # [draws * B], sample-major
                loss = -sample.sum() / settings.samples  # the one place the sign flips: objectives are maximized
                (scaler.scale(loss) if scaler else loss).backward()
                scores = scores + sample.detach().view(draws, -1).sum(dim=0) / settings.samples
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        with torch.no_grad():
            for average, p in zip(averages, image.parameters()):
                average.lerp_(p, 1 - decay)
        if step in keep:
            for curve, value in zip(curves, scores.cpu().tolist()):
                curve.append((step, value))
        if on_step:
            on_step(step)
    with torch.no_grad():
        for average, p in zip(averages, image.parameters()):
            p.copy_(average)
        final = image()
        measured = F.pad(final, (measure_pad,) * 4, mode="constant", value=GREY) if measure_pad else final
        activation = evaluate(model.module, measure or objective, measured, mean, std).cpu().tolist()

    finite = torch.isfinite(final).flatten(1).all(dim=1).tolist()
    activation = [a if ok else float("nan") for a, ok in zip(activation, finite)]
    pixels = (final.nan_to_num(GREY).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    describe = describe or (lambda _i: objective.describe())
    return [
        RenderResult(label, u, s, pixels[i], float(activation[i]), curves[i], describe(i))
        for i, (u, s) in enumerate(zip(units, seeds))
    ]


def _scored(model: LoadedModel, objective: Objective, batch: torch.Tensor, draws: int) -> torch.Tensor:
    """``objective`` on ``batch``, which stacks ``draws`` transformed copies of the B images: one
    forward pass, each copy scored on its own (an objective such as ``Diversity`` compares the items
    of one batch), so the scores are those of ``draws`` separate passes, in order."""
    acts = activations(model.module, objective.layers, batch, model.preprocess.mean, model.preprocess.std)
    size = batch.shape[0] // draws
    return torch.cat([objective.score({name: value[i * size:(i + 1) * size] for name, value in acts.items()})
                      for i in range(draws)])


def reach_scales(model: LoadedModel, settings: RenderSettings) -> tuple[float, float]:
    """The random scale range a render draws from: ``settings.scales``, with its upper end
    stretched by the model's input side over the canvas side when ``settings.reach_input`` and
    the canvas is the smaller (see ``RenderSettings``)."""
    low, high = settings.scales
    if not settings.reach_input:
        return low, high
    return low, high * max(1.0, min(model.preprocess.input_size[1:]) / settings.size)


def average_decay(settings: RenderSettings) -> float:
    """The per-step decay of the parameter average: a time constant of ``settings.average`` x
    ``settings.steps`` steps; 0 (keep only the last step) when that is a step or less.

    At the standard preset (512 steps, 0.1) the decay is 0.98: the final image weighs the last
    ~50 steps. benchmarks/quality.py measured it against the last step's image: a higher
    activation ratio under held-out perturbations in each layer and less high-frequency energy.
    """
    constant = settings.average * settings.steps
    return 1.0 - 1.0 / constant if constant > 1 else 0.0


def mixed_precision(device: torch.device):
    """How a render computes on ``device``: ``(autocast context factory, gradient scaler or None)``.

    On a GPU the forward pass runs in bfloat16 where the GPU computes it natively (compute
    capability 8.0 and up: no loss scaling needed), else in float16 with a gradient scaler; the
    image parameters and Adam stay in float32. ``torch.cuda.is_bf16_supported()`` alone is not
    enough: by default it also says yes where bfloat16 is only emulated, at a fraction of the
    speed. On the CPU everything stays float32 (bit-reproducible renders).
    """
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if native_bf16(device):
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes bfloat16 natively (Ampere, compute capability 8.0, and newer)."""
    return (torch.cuda.get_device_capability(device)[0] >= 8
            and torch.cuda.is_bf16_supported(including_emulation=False))


def check_canvas(model: LoadedModel, settings: RenderSettings) -> LoadedModel:
    """The model ready for this canvas (``settings.size``, and padded by ``settings.pad`` on each
    side): as it is when it runs at both sizes; resized to its input size on the way in
    (``models.with_fixed_input``) when it runs only at its own size, as most ViT, Swin and LeViT
    checkpoints do. One forward pass at each size tried.

    Raises:
        UsageError: the canvas is too small for a model that runs at other sizes (inception_v3 at
            64 px), or the model does not run even at its own input size.
    """
    from ..errors import UsageError
    from ..models import forward_error, out_of_memory, with_fixed_input

    # renders are optimized on the padded canvas and measured (channels, trust, classes) on the bare one
    sides = (settings.size + 2 * settings.pad, settings.size)
    if model.fixed_input:
        return model
    failed = [(side, error) for side in dict.fromkeys(sides) if (error := forward_error(model, side, side))]
    if not failed:
        return model
    side, error = failed[0]
    if out_of_memory(error):
        raise UsageError(f"--size {settings.size}: one {side} px image already needs more memory than "
                         f"{model.device} has ({error[:80]}); try a smaller --size")
    _, height, width = model.preprocess.input_size
    if (own := forward_error(model, height, width)) is not None:
        raise UsageError(f"{model.name} does not run on a batch of its own input size {height}x{width} px "
                         f"({own}); it cannot be visualized here")
    if side < min(height, width) and forward_error(model, height + 32, width + 32) is None:
        raise UsageError(f"--size {settings.size} is too small for {model.name} ({error[:80]}); "
                         f"try --size {max(height, width)}")
    return with_fixed_input(model)


GPU_BATCH = 64  # units a GPU job optimizes together (a job too big for the GPU's memory is split)
CPU_BATCH = 16  # ... and a CPU job: beyond this a batch gains nothing on a few cores


def batch_limit(model: LoadedModel) -> int:
    """The most images a job's forward pass takes together on ``model``'s device."""
    return GPU_BATCH if model.device.type == "cuda" else CPU_BATCH


def choose_batch(model: LoadedModel, n_units: int, requested: int | None) -> int:
    """How many units a job optimizes together: ``requested`` if given, else ``GPU_BATCH`` on a GPU
    and ``CPU_BATCH`` on the CPU, at most ``n_units``.

    It depends on nothing but these, never on free memory, so every shard of a ``--shard`` build
    and every resumed build cuts a layer into the same jobs; a job that does not fit in memory is
    split where it runs (``renders.run_job``).
    """
    if requested:
        return max(1, min(requested, n_units))
    return max(1, min(batch_limit(model), n_units))
