"""Three ways to look at a layer through a real photograph, all run by the render loop.

- **DeepDream** (Mordvintsev et al. 2015): start from the photo and amplify whatever the layer
  already sees in it (maximize the L2 norm of the whole layer's activation).
- **Feature inversion** (Mahendran & Vedaldi 2015): start from noise and find an image whose
  activations at the layer match the photo's: what the layer keeps of the image, and what it
  throws away. The Fourier parameterization and the small jitter are the image prior.
- **Feature accentuation** (Hamblin et al. 2024): start from a photo that excites a unit and
  change it to excite the unit more while the layer's other features stay near the photo's: what
  the unit sees in that photo, drawn over it.

All take photos already at the canvas size (uint8 [size, size, 3]) and return one
``RenderResult`` per photo, labelled with the photo's index (an accentuation: with its unit's
channel).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import RenderSettings
from ..models import LoadedModel
from .objectives import Channel, activations, relative_distance
from .param import PixelImage, fft_from_photos, make_image
from .render import ACCENT_WEIGHT, RenderResult, optimize, render_objective, unit_seed
from .trust import to_tensor

DREAM_STEPS = 48  # DeepDream keeps the photo recognizable: a short climb, not a full render
DREAM_LR = 0.03
INVERT_JITTER = 2  # inversion compares maps position by position: transforms stay small
ACCENT_STEPS = 64  # accentuation, like DeepDream, is a short climb from the photo


def deep_dream(model: LoadedModel, layer: str, photos: Sequence[np.ndarray], settings: RenderSettings, seed: int = 0,
               indices: Sequence[int] | None = None, on_step: Callable[[int], None] | None = None) -> list[RenderResult]:
    """Each photo, changed to excite ``layer`` more (its pixels, in logit space, start at the photo).

    The reported activation is the layer's L2 norm on the result; ``RenderResult.curve`` starts at
    the photo's own value, so the climb is visible.
    """
    indices = list(range(len(photos))) if indices is None else list(indices)
    seeds = [unit_seed(seed, layer, i, kind="dream") for i in indices]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = PixelImage(photos[0].shape[:2], gens, decorrelate=False)
    with torch.no_grad():  # sigmoid(logit(photo)) is the photo: the dream starts exactly there
        image.pixels.copy_(torch.logit(to_tensor(photos), eps=1e-3))
    # The photo is shown at the canvas's scale, and the dream amplifies what the layer sees there.
    dream = dataclasses.replace(settings, steps=min(settings.steps, DREAM_STEPS), lr=DREAM_LR, pad=0, reach_input=False)
    return optimize(model, image, render_objective("dream", layer, indices, settings=settings), indices, seeds, gens,
                    dream, on_step, measure=render_objective("dream", layer, indices), label=layer)


def invert(model: LoadedModel, layer: str, photos: Sequence[np.ndarray], settings: RenderSettings, seed: int = 0,
           indices: Sequence[int] | None = None, on_step: Callable[[int], None] | None = None) -> list[RenderResult]:
    """For each photo, an image reconstructed from noise so that ``layer``'s activations match the
    photo's. The reported activation is minus the relative squared error of the match (0: exact).
    """
    indices = list(range(len(photos))) if indices is None else list(indices)
    with torch.no_grad():  # read as every objective reads a layer
        target = activations(model.module, [layer], to_tensor(photos, model.device), model.preprocess.mean,
                             model.preprocess.std)[layer]
    seeds = [unit_seed(seed, layer, i, kind="inversion") for i in indices]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    size = photos[0].shape[:2]
    image = make_image(settings.param if settings.param != "maco" else "fft", size, gens, settings.decay_power,
                       settings.decorrelate)
    # The maps are compared position by position: no padding, rotation or scaling, a little jitter.
    steady = dataclasses.replace(settings, pad=0, jitter=min(settings.jitter, INVERT_JITTER), scales=(1.0, 1.0),
                                 max_angle=0.0, reach_input=False)
    objective = render_objective("inversion", layer, indices, target=target, settings=settings)
    measure = render_objective("inversion", layer, indices, target=target)
    return optimize(model, image, objective, indices, seeds, gens, steady, on_step, measure=measure, label=layer)


def accentuate(model: LoadedModel, layer: str, channels: Sequence[int], photos: Sequence[np.ndarray],
               settings: RenderSettings, seed: int = 0, on_step: Callable[[int], None] | None = None,
               weight: float = ACCENT_WEIGHT) -> list[RenderResult]:
    """For each of ``channels``, its photo (``photos[i]``, e.g. the unit's top reference image)
    changed to excite it more while ``layer``'s features stay near the photo's (``Accentuation``).
    The photo is the starting point of a Fourier parameterization (``fft_from_photos``, whatever
    ``settings.param`` says: a photo has no place in a fixed MACO spectrum), shown at the canvas's
    scale with a little jitter. The reported activation is the channel mean reached;
    ``extra`` holds the photo's own mean (``start``) and the final relative feature distance
    (``distance``: 0 is the photo's features)."""
    channels = list(channels)
    x = to_tensor(photos, model.device)
    mean, std = model.preprocess.mean, model.preprocess.std
    with torch.no_grad():  # read as every objective reads a layer
        target = activations(model.module, [layer], x, mean, std)[layer]
    start = Channel(layer, tuple(channels)).score({layer: target}).tolist()
    seeds = [unit_seed(seed, layer, c, kind="accentuation") for c in channels]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    image = fft_from_photos(x, settings.decay_power, settings.decorrelate)
    steady = dataclasses.replace(settings, steps=min(settings.steps, ACCENT_STEPS), pad=0,
                                 jitter=min(settings.jitter, INVERT_JITTER), scales=(1.0, 1.0), max_angle=0.0,
                                 reach_input=False)
    objective = render_objective("accentuation", layer, channels, target=target, weight=weight, settings=settings)
    results = optimize(model, image, objective, channels, seeds, gens, steady, on_step,
                       measure=Channel(layer, tuple(channels)), label=layer)
    with torch.no_grad():
        final = activations(model.module, [layer], to_tensor([r.image for r in results], model.device), mean,
                            std)[layer]
        distance = relative_distance(final, target).tolist()
    for result, value, far in zip(results, start, distance):
        result.extra.update(start=value, distance=far)
    return results
