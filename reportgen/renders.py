"""The renders a build makes, each read from the store when it is there and made (in batches) when not.

Per layer and unit, one of ``KINDS``:

- ``channel``: the unit's whole channel, maximized (the render every unit gets);
- ``neuron``: its centre neuron, optimizing only the pixels of its receptive-field box;
- ``second-seed``: the channel again from the next build seed (does another start find the same?);
- ``negative``: the channel minimized (what the unit hates);
- ``diversity``: ``DIVERSITY_K`` variants pushed apart, stored side by side as one strip.

Per model: class visualizations (a class logit, maximized). Per layer and reference photo: DeepDream
and feature inversion. Channel renders also store the unit's mean under held-out perturbations
(``optvis.trust``), and every render whether it is flat.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from .store import Store, StoredRender

KINDS = ("channel", "neuron", "second-seed", "negative", "diversity")
RETRY_LR_FACTOR = 0.1  # a batch that hits NaN/inf is optimized again at a tenth of the learning rate


def layer_renders(loaded, layer: str, channels: list[int], kind: str, config, store: Store, progress, report,
                  box: tuple[int, int, int, int] | None = None, magnitude=None) -> dict[int, StoredRender | None]:
    """Stored renders of kind ``kind`` for ``channels`` of ``layer`` (``None`` where one failed);
    ``box`` is a neuron render's receptive field, ``magnitude`` a ``maco`` render's spectrum.

    Batches are fixed chunks of the layer's units, and a chunk with any unit missing is rendered
    whole: a resumed build batches every unit as an uninterrupted one would, so its images are the
    same to the bit (batched convolutions may differ in the last bits from unbatched ones).
    """
    from .optvis.render import DIVERSITY_K, DIVERSITY_WEIGHT, choose_batch

    if not channels:
        return {}
    unit = {"neuron": {"box": list(box) if box else None},
            "diversity": {"k": DIVERSITY_K, "weight": DIVERSITY_WEIGHT}}.get(kind, {})
    keys = {c: Store.render_key(loaded.name, loaded.weights.digest, layer, c, config.render.to_dict(), config.seed,
                                vars(loaded.preprocess), unit=_unit_spec(kind, c, unit)) for c in channels}
    batch = choose_batch(loaded, layer, config.render, len(channels), config.batch)
    if kind == "diversity":
        batch = max(1, batch // DIVERSITY_K)

    def run(chunk, settings, on_step):
        return _render(loaded, layer, chunk, kind, settings, config.seed, box, magnitude, on_step)

    return cached(store, keys, channels, run, config.render, batch, progress, report,
                  meta={"model": loaded.name, "layer": layer, "kind": kind})


def class_renders(loaded, classes: list[int], names: dict[int, str], config, store: Store, progress, report,
                  magnitude=None) -> dict[int, StoredRender | None]:
    """Stored class visualizations of ``classes`` (logits maximized), in the build's parameterization
    with the class transforms (``optvis.render.class_settings``)."""
    from .optvis.render import class_settings, render_classes

    settings = class_settings(config.render)
    keys = {c: Store.render_key(loaded.name, loaded.weights.digest, "logits", c, settings.to_dict(), config.seed,
                                vars(loaded.preprocess), unit={"kind": "class", "index": c}) for c in classes}

    def run(chunk, settings, on_step):
        return render_classes(loaded, chunk, settings, config.seed, names=[names.get(c, "") for c in chunk],
                              magnitude=magnitude, on_step=on_step)

    return cached(store, keys, classes, run, settings, len(classes) or 1, progress, report,
                  meta={"model": loaded.name, "layer": "logits", "kind": "class"})


def photo_renders(loaded, layer: str, method: str, photos: dict[int, np.ndarray], digests: dict[int, str], config,
                  store: Store, progress, report) -> dict[int, StoredRender | None]:
    """DeepDream (``method="dream"``) or feature inversion (``"inversion"``) of each reference photo
    (by image index, already at the canvas size) at ``layer``."""
    from .optvis.dream import deep_dream, invert

    indices = sorted(photos)
    keys = {i: Store.render_key(loaded.name, loaded.weights.digest, layer, i, config.render.to_dict(), config.seed,
                                vars(loaded.preprocess), unit={"kind": method, "photo": digests[i]}) for i in indices}
    function = deep_dream if method == "dream" else invert

    def run(chunk, settings, on_step):
        return function(loaded, layer, [photos[i] for i in chunk], settings, config.seed, indices=chunk,
                        on_step=on_step)

    return cached(store, keys, indices, run, config.render, len(indices) or 1, progress, report,
                  meta={"model": loaded.name, "layer": layer, "kind": method})


def cached(store: Store, keys: dict, ids: Sequence, run: Callable, settings, batch: int, progress, report,
           meta: dict) -> dict:
    """The store's render for each of ``ids`` (by ``keys``), rendering missing ones with
    ``run(chunk, settings, on_step)`` in fixed chunks of ``batch``; a chunk that produced NaN or
    inf is retried once at a tenth of the learning rate. Failed renders map to ``None`` and are
    not stored (the next build tries again)."""
    found = {i: store.get_render(keys[i]) for i in ids}
    missing = {i for i in ids if found[i] is None}
    report.cached += len(ids) - len(missing)
    progress.advance(len(ids) - len(missing))
    for start in range(0, len(ids), batch):
        chunk = list(ids[start:start + batch])
        todo = [i for i in chunk if i in missing]
        if not todo:
            continue
        share = len(todo) / settings.steps
        started = time.perf_counter()
        results = run(chunk, settings, lambda _s: progress.advance(share))
        failed = [r.channel for r in results if not r.ok and r.channel in missing]
        if failed:
            gentler = dataclasses.replace(settings, lr=settings.lr * RETRY_LR_FACTOR)
            retried = {r.channel: r for r in run(failed, gentler, None)}
            results = [retried.get(r.channel, r) for r in results]
        seconds = (time.perf_counter() - started) / len(chunk)
        for result in results:
            if result.channel not in missing:
                continue  # rendered again only to keep its batch whole; the stored one is identical
            report.rendered += 1
            if not result.ok:
                continue
            found[result.channel] = store.put_render(keys[result.channel], result.image, {
                **meta, "channel": result.channel, "seed": result.seed, "activation": result.activation,
                "curve": result.curve, "objective": result.objective, "flat": result.flat, **result.extra,
                "lr": settings.lr * (RETRY_LR_FACTOR if result.channel in failed else 1.0),
                "seconds": round(seconds, 3),
            })
    return found


def _render(loaded, layer, chunk, kind, settings, seed, box, magnitude, on_step):
    """One chunk of renders of ``kind``; channel renders also get their perturbed means."""
    from .optvis import render
    from .optvis.objectives import Channel
    from .optvis.trust import perturbed_scores

    if kind == "neuron":
        return render.render_neurons(loaded, layer, chunk, settings, seed, box=box, on_step=on_step)
    if kind == "negative":
        return render.render_negatives(loaded, layer, chunk, settings, seed, on_step=on_step, magnitude=magnitude)
    if kind == "diversity":
        groups = render.render_diversity(loaded, layer, chunk, settings, seed, on_step=on_step, magnitude=magnitude)
        return [render.side_by_side(group) for group in groups]
    if kind not in ("channel", "second-seed"):
        raise ValueError(f"unknown render kind {kind!r}; use one of {', '.join(KINDS)}")
    results = render.render_channels(loaded, layer, chunk, settings, seed + (kind == "second-seed"), on_step=on_step,
                                     magnitude=magnitude)
    perturbed = perturbed_scores(loaded, Channel(layer, tuple(chunk)), [r.image for r in results])
    for i, result in enumerate(results):
        result.extra["perturbed"] = {name: values[i] for name, values in perturbed.items()}
    return results


def _unit_spec(kind: str, channel: int, extra: dict) -> dict:
    """What a render optimizes, as it enters the cache key (a channel's key is unchanged since v2)."""
    return {"kind": kind, "index": channel, **extra}
