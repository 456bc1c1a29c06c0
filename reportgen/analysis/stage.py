"""The analysis stage of a build: each step cached in the store, each returning manifest-ready data.

- ``reference_stats``: the streaming pass (per-unit statistics, top images, twins, predictions);
- ``map_pairs`` / ``reference_maps``: which (image, unit) activation maps the pages show, and those maps;
- ``receptive_fields`` / ``effective_fields`` / ``neuron_boxes``: where units look;
- ``normalization_check``: whether the input normalization fits the weights' BatchNorm statistics;
- ``circuits``: which channels of the layer before drive each shown unit, and which classes the
  units of late layers vote for;
- ``groups``: each layer's neuron groups (NMF of its activations) and where they sit in the photos;
- ``reference_entries``: thumbnails and the model's predictions for the images shown.

Keys hash the model, its weights, the layers, the image set and the preprocessing, so a repeated
build reads everything back; a corrupt entry is simply computed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..manifest import Prediction, ReferenceImage
from ..progress import Progress
from ..store import Store, canonical_key
from .activations import LayerStats
from .circuits import driver_channels

EFFECTIVE_FIELD_IMAGES = 8  # reference images the effective receptive field is averaged over
NORMALIZATION_IMAGES = 8  # reference images the BatchNorm statistics are compared on
REF_THUMBS_ON_MODEL_PAGE = 16  # reference images on the model page, and rows of each layer's map table
LAYER_MAP_UNITS = 8  # columns of a layer's map table: its first shown units
CIRCUIT_IMAGES = 8  # reference images the circuit attributions are averaged over
DRIVER_TOP = 3  # top reference images on a driver's page (a unit's page shows all it has, 5)
LATE_LAYERS = 2 / 3  # layers from this share of the catalogue on are late: their units' classes are shown
CIRCUIT_UNITS = 64  # the first shown units of a layer that get a circuit (one backward and one forward-mode pass each)
GROUP_IMAGES = 32  # reference images whose every position the neuron groups are fitted on (the first readable ones)
GROUP_POSITIONS = 16384  # at most this many of those positions, drawn at random, fit a layer's groups
GROUP_TOP = 3  # reference images shown per group: those where it is present most
GROUP_UNITS = 6  # units listed per group: its largest weights


@dataclass
class Analysis:
    """What a build knows of a model before it renders: per-layer statistics over the reference
    images (``stats``, and the stored ``arrays`` with ``used``, ``skipped`` and ``predictions``),
    which activation maps the pages show (``grid_images``, ``grid_units``, ``shown`` images, the
    maps under ``maps_key``), receptive fields (``fields``, ``erfs`` under ``erf_key``, the centre
    neurons' ``boxes``), the ``maco`` spectrum, the canvas-sized ``photos`` to dream on, the
    class ``labels``, how the input normalization fits the weights (``normalization``), and the
    attributions between units and to classes (``circuits``: ``{layer: {"source": the layer
    before or None, "units": the shown units, "inputs": [units, source channels] or None,
    "promotes": [units, classes] or None}}``, a row per shown unit), and the ``drivers`` of each layer: its
    channels, other than the shown ones, that the next layer's shown units list as inputs, in the
    order they are rendered (``circuits.driver_channels``), each layer's neuron ``groups``
    (``stage.groups``; their presence maps under ``groups_key``), and the photo each unit with
    variants starts its accentuation from, its top reference image at the canvas size
    (``accent_photos``: ``{layer: {channel: (pixels, sha256)}}``)."""

    stats: dict[str, LayerStats]
    arrays: dict[str, np.ndarray]
    grid_images: list[int]
    grid_units: dict[str, list[int]]
    shown: list[int]
    maps_key: str
    fields: dict[str, Any]
    erf_key: str
    erfs: dict[str, dict]
    boxes: dict[str, tuple[int, int, int, int]]
    magnitude: Any
    photos: dict[int, tuple[np.ndarray, str]]
    labels: dict[int, str]
    normalization: dict | None
    circuits: dict[str, dict]
    drivers: dict[str, list[int]]
    groups: dict[str, dict]
    groups_key: str
    accent_photos: dict[str, dict[int, tuple[np.ndarray, str]]]


def analyze(loaded, layers: list, units: dict[str, list[int]], neurons: dict[str, list[int]], config, refs,
            store: Store, progress: Progress | None = None) -> Analysis:
    """The analysis stage of one model's build, every step cached in ``store`` (an executor may run
    it on a worker: everything it needs comes in as arguments, everything it finds goes out)."""
    progress = progress or Progress()
    name, modules = loaded.name, [layer.module for layer in layers]
    stats, arrays = reference_stats(loaded, modules, refs, store, progress)
    progress.stage(f"{name}: circuits")
    links = circuits(loaded, layers, units, refs, arrays["used"], store)
    following = dict(zip(modules, [*modules[1:], None]))  # the shown layer after each
    drivers = {m: driver_channels(links[following[m]]["inputs"] if following[m] else None, units[m]) for m in modules}
    progress.stage(f"{name}: neuron groups")
    groups_key, found_groups = groups(loaded, modules, config.groups, refs, arrays["used"], store)
    grid_images = [int(i) for i in arrays["used"][:REF_THUMBS_ON_MODEL_PAGE]]
    grid_units = {m: units[m][:LAYER_MAP_UNITS] for m in modules}
    pairs = {m: map_pairs(stats[m], grid_images, grid_units[m], units[m], drivers[m]) for m in modules}
    shown = list(dict.fromkeys(grid_images + [i for m in modules for i, _ in pairs[m]]  # images pages show
                               + [int(i) for m in found_groups for i in found_groups[m]["top"].ravel() if i >= 0]))
    progress.stage(f"{name}: activation maps")
    maps_key = reference_maps(loaded, pairs, refs, store)
    progress.stage(f"{name}: receptive fields")
    fields = receptive_fields(loaded, layers, store)
    erf_key, erfs = effective_fields(loaded, modules, refs, arrays["used"], store)
    boxes = neuron_boxes(loaded, [m for m in modules if neurons[m]], config.render.size, config.render.pad, store)
    magnitude = maco_magnitude(refs, arrays["used"], config.render.size, store) if config.render.param == "maco" else None
    photos = canvas_photos(loaded, refs, arrays["used"][:config.dreams], config.render.size)
    best = {m: {c: int(stats[m].argmax[c]) for c in units[m][:config.variants] if stats[m].argmax[c] >= 0}
            for m in modules}  # each variant unit's top image
    tops = canvas_photos(loaded, refs, sorted({i for m in modules for i in best[m].values()}), config.render.size)
    normalization = normalization_check(loaded, refs, arrays["used"], store)
    return Analysis(stats=stats, arrays=arrays, grid_images=grid_images, grid_units=grid_units, shown=shown,
                    maps_key=maps_key, fields=fields, erf_key=erf_key, erfs=erfs, boxes=boxes, magnitude=magnitude,
                    photos=photos, labels=imagenet_labels(loaded.module), normalization=normalization,
                    circuits=links, drivers=drivers, groups=found_groups, groups_key=groups_key,
                    accent_photos={m: {c: tops[i] for c, i in best[m].items()} for m in modules})


def reference_stats(loaded, modules: list[str], refs, store: Store, progress) -> tuple[dict[str, LayerStats], dict]:
    """Per-unit statistics over the reference images: ``({layer: LayerStats}, the stored arrays)``;
    the arrays also hold ``used`` (readable image indices), ``predictions`` and ``skipped``."""
    from .activations import analyze_references

    key = canonical_key({"kind": "reference-stats", "v": 3, "model": loaded.name, "weights": loaded.weights.digest,
                         "layers": modules, "refs": refs.digest, "preprocess": vars(loaded.preprocess)})
    arrays = store.get_arrays(key)
    if arrays is None:
        progress.stage(f"{loaded.name}: reference images")
        analysis = analyze_references(loaded, modules, refs)
        arrays = {k: v for layer, s in analysis.layers.items() for k, v in s.to_arrays(layer).items()}
        arrays["used"] = np.array(analysis.used)
        arrays["predictions"] = np.array(
            [[i, c, p] for i, top in analysis.predictions.items() for c, p in top], dtype=float).reshape(-1, 3)
        arrays["skipped"] = np.array(refs.skipped, dtype=str)
        store.put_arrays(key, arrays)
    return {m: LayerStats.from_arrays(arrays, m) for m in modules}, arrays


def map_pairs(stats: LayerStats, grid_images: Sequence[int], grid_units: Sequence[int],
              units: Sequence[int], drivers: Sequence[int] = ()) -> list[tuple[int, int]]:
    """The (image, channel) pairs whose maps a layer's pages show: the layer page's grid, then each
    shown unit's top images (its unit page) and each driver's first ``DRIVER_TOP`` (its page),
    each pair once."""
    pairs = [(int(i), int(c)) for i in grid_images for c in grid_units]
    pairs += [(int(i), int(c)) for c in units for i in stats.top_index[c] if i >= 0]
    pairs += [(int(i), int(c)) for c in drivers for i in stats.top_index[c][:DRIVER_TOP] if i >= 0]
    return list(dict.fromkeys(pairs))


def reference_maps(loaded, pairs: dict[str, list[tuple[int, int]]], refs, store: Store) -> str:
    """Store the activation maps of the given (image, channel) pairs of each layer; returns the key.

    The arrays are ``pairs|<layer>`` [P, 2] and ``maps|<layer>``, float16 [P, h, w], each map
    divided by ``scale|<layer>`` [P] (its largest magnitude), so that large activations do not
    overflow float16.
    """
    from .activations import activation_maps

    key = canonical_key({"kind": "reference-maps", "v": 3, "model": loaded.name, "weights": loaded.weights.digest,
                         "pairs": pairs, "refs": refs.digest, "preprocess": vars(loaded.preprocess)})
    if store.get_arrays(key) is None:
        arrays = {}
        for layer, value in activation_maps(loaded, pairs, refs).items():
            scale = np.nan_to_num(np.abs(value)).max(axis=(1, 2), initial=0.0)
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            arrays[f"pairs|{layer}"] = np.array(pairs[layer], dtype=np.int64).reshape(-1, 2)
            arrays[f"maps|{layer}"] = (value / scale[:, None, None]).astype(np.float16)
            arrays[f"scale|{layer}"] = scale
        store.put_arrays(key, arrays)
    return key


def receptive_fields(loaded, layers: list, store: Store | None = None) -> dict:
    """Theoretical receptive fields of ``layers`` (cached in ``store`` by architecture: weights do
    not change them). Canvases grow up to 8 times the model's input size."""
    from .receptive_field import ReceptiveField, theoretical

    side = loaded.preprocess.input_size[1]
    modules = [layer.module for layer in layers]
    key = canonical_key({"kind": "receptive-fields", "v": 1, "model": loaded.name, "side": side, "layers": modules,
                         "fixed": loaded.fixed_input})
    cached = store.get_arrays(key) if store else None
    if cached is not None:
        return {m: ReceptiveField(int(s) if s >= 0 else None, int(p) if s >= 0 else None, bool(g))
                for m, s, p, g in zip(modules, cached["size"], cached["padding"], cached["global"])}
    # a fixed-size model squeezes a larger canvas into its input size: its fields are measured there only
    fields = theoretical(loaded.module, modules, {layer.module: layer.stride for layer in layers},
                         start_side=side, max_side=side if loaded.fixed_input else 8 * side)
    if store:
        store.put_arrays(key, {
            "size": np.array([fields[m].size if fields[m].size is not None else -1 for m in modules]),
            "padding": np.array([fields[m].padding if fields[m].size is not None else -1 for m in modules]),
            "global": np.array([fields[m].is_global for m in modules]),
        })
    return fields


def effective_fields(loaded, modules: list[str], refs, used: Sequence[int], store: Store) -> tuple[str, dict[str, dict]]:
    """Effective receptive fields of ``modules`` averaged over the first readable reference images.

    Returns ``(store key, {layer: {"size": px, "images": n}})``; the heat maps are stored as arrays
    ``erf|<layer>`` under the key.
    """
    from .activations import model_input
    from .references import iter_batches
    from .receptive_field import effective

    images = [int(i) for i in used[:EFFECTIVE_FIELD_IMAGES]]
    key = canonical_key({"kind": "effective-fields", "v": 1, "model": loaded.name, "weights": loaded.weights.digest,
                         "layers": modules, "refs": refs.digest, "images": images,
                         "preprocess": vars(loaded.preprocess)})
    arrays = store.get_arrays(key)
    if arrays is None:
        subset = refs.subset(images)
        batch = next(iter_batches(subset, loaded.preprocess.input_size[1], loaded.preprocess.crop_pct, len(images)))[1]
        fields = effective(loaded.module, modules, model_input(loaded, batch))
        arrays = {f"erf|{m}": fields[m].heatmap for m in modules}
        arrays.update({f"size|{m}": np.array(fields[m].size) for m in modules})
        arrays["images"] = np.array(fields[modules[0]].images if modules else 0)
        store.put_arrays(key, arrays)
    return key, {m: {"size": int(arrays[f"size|{m}"]), "images": int(arrays["images"])} for m in modules}


def circuits(loaded, layers: list, units: dict[str, list[int]], refs, used: Sequence[int], store: Store) -> dict:
    """Attributions over the first ``CIRCUIT_IMAGES`` readable reference images (``circuits.py``):
    for each layer after the first shown one, its shown units' attribution to each channel of the
    shown layer before it; for each late layer (from ``LATE_LAYERS`` of the catalogue on) of a
    model with a classifier, its shown units' attribution to each class. Only the first
    ``CIRCUIT_UNITS`` shown units of a layer (a ``full`` report has thousands). Cached by weights,
    layers, units and images. See ``Analysis.circuits`` for the shape."""
    from ..layers import catalogue
    from .activations import model_input
    from .circuits import inputs, promotes
    from .references import iter_batches

    modules = [layer.module for layer in layers]
    units = {m: list(units[m][:CIRCUIT_UNITS]) for m in modules}
    images = [int(i) for i in used[:CIRCUIT_IMAGES]]
    key = canonical_key({"kind": "circuits", "v": 1, "model": loaded.name, "weights": loaded.weights.digest,
                         "layers": modules, "units": {m: units[m] for m in modules}, "refs": refs.digest,
                         "images": images, "preprocess": vars(loaded.preprocess)})
    arrays = store.get_arrays(key)
    if arrays is None:
        arrays = {}
        if images and modules:
            pixels = next(iter_batches(refs.subset(images), loaded.preprocess.input_size[1],
                                       loaded.preprocess.crop_pct, len(images)))[1]
            x = model_input(loaded, pixels)
            late = LATE_LAYERS * len(catalogue(loaded.module, loaded.preprocess.input_size))
            for before, layer in zip([None, *modules], modules):
                if before is not None:
                    arrays[f"inputs|{layer}"] = inputs(loaded.module, before, layer, units[layer], x)
            if getattr(loaded.module, "num_classes", 0):
                for layer in layers:
                    if layer.index >= late:
                        try:
                            arrays[f"promotes|{layer.module}"] = promotes(loaded.module, layer.module,
                                                                          units[layer.module], x)
                        except (RuntimeError, NotImplementedError):  # an op without forward-mode support
                            pass
        store.put_arrays(key, arrays or {"empty": np.zeros(0)})
    return {m: {"source": before, "units": list(units[m]), "inputs": arrays.get(f"inputs|{m}"),
                "promotes": arrays.get(f"promotes|{m}")} for before, m in zip([None, *modules], modules)}


def groups(loaded, modules: list[str], k: int, refs, used: Sequence[int], store: Store) -> tuple[str, dict[str, dict]]:
    """Each layer's ``k`` neuron groups (``groups.nmf``), fitted on the positive part of its
    activations at up to ``GROUP_POSITIONS`` positions of the first ``GROUP_IMAGES`` readable
    reference images; a layer with fewer channels gets one group per channel. Cached by weights,
    layers, ``k``, images and preprocessing.

    Returns ``(store key, {layer: {...}})`` (the key also names the groups in their renders' keys:
    the mixes are floating-point results, the key's inputs are not) with, per layer, ``vectors`` [g, C] (unit norm),
    ``share`` [g] (each group's part of the reconstruction), ``error`` (relative, on the positions
    fitted), ``positions`` and ``images`` fitted on, ``top`` / ``presence`` [g, GROUP_TOP] (the images
    where each group is present most, -1 where there are fewer, and its mean presence there) and
    ``best`` [g] (the highest mean along the group's mix of the positive part, over the images: what
    a render of it is compared with). The presence maps of the top images are the arrays ``maps|<layer>`` [g,
    GROUP_TOP, h, w] under the key, each group's scaled to its largest value."""
    import torch

    from ..layers import FeatureTap
    from .activations import MAP_MAX_SIDE, model_input
    from .groups import NMF_SWEEPS, PRESENCE_SWEEPS, nmf, presence
    from .references import iter_batches

    images = [int(i) for i in used[:GROUP_IMAGES]]
    key = canonical_key({"kind": "neuron-groups", "v": 3, "model": loaded.name, "weights": loaded.weights.digest,
                         "layers": modules, "k": k, "refs": refs.digest, "images": images,
                         "preprocess": vars(loaded.preprocess), "positions": GROUP_POSITIONS, "top": GROUP_TOP,
                         "sweeps": [NMF_SWEEPS, PRESENCE_SWEEPS]})
    if k <= 0 or not images or not modules:
        return key, {}
    arrays = store.get_arrays(key)
    if arrays is None:
        def keep(_name: str, grid: torch.Tensor) -> torch.Tensor:
            # the positive part, a copy: the forward goes on into the layer's in-place activation
            grid = grid.detach().to("cpu", torch.float32, copy=True).clamp_(min=0)
            if grid.shape[-1] > MAP_MAX_SIDE:  # pooled after the positive part: means stay means
                grid = torch.nn.functional.adaptive_avg_pool2d(grid, (MAP_MAX_SIDE * grid.shape[-2] // grid.shape[-1],
                                                                      MAP_MAX_SIDE))
            return grid

        acts: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
        size = loaded.preprocess.input_size[1]
        with torch.inference_mode(), FeatureTap(loaded.module, modules, reduce=keep, pre_activation=True,
                                                stop=True) as tap:
            for _, pixels in iter_batches(refs.subset(images), size, loaded.preprocess.crop_pct, 8):
                for m, grid in tap.run(model_input(loaded, pixels)).items():
                    acts[m].append(grid)
        arrays = {"images": np.array(len(images))}
        for m in modules:
            positive = torch.nan_to_num(torch.cat(acts.pop(m)), nan=0.0, posinf=0.0)  # [N, C, h, w]
            n, c, h, w = positive.shape
            rows = positive.permute(0, 2, 3, 1).reshape(-1, c)  # one row per (image, position)
            draw = torch.Generator().manual_seed(0)
            picked = torch.randperm(len(rows), generator=draw, device="cpu")[:GROUP_POSITIONS]
            factors = nmf(rows[picked], min(k, c, len(picked)))
            present = presence(rows, factors.vectors).reshape(n, h * w, -1)  # [N, h*w, g]
            mean = present.mean(dim=1)  # [N, g]
            top = torch.argsort(mean, dim=0, descending=True)[:GROUP_TOP].T  # [g, <=TOP] positions in ``images``
            along = torch.einsum("nchw,gc->ng", positive, factors.vectors) / (h * w)  # mean along each mix
            maps = torch.stack([present[top[g], :, g] for g in range(len(top))]).reshape(len(top), -1, h, w) \
                if len(top) else torch.zeros(0, min(GROUP_TOP, n), h, w)
            peak = maps.amax(dim=(1, 2, 3)).clamp(min=1e-12)
            pad = GROUP_TOP - top.shape[1]
            arrays.update({
                f"vectors|{m}": factors.vectors.numpy(), f"share|{m}": factors.share.numpy(),
                f"error|{m}": np.array(factors.error), f"positions|{m}": np.array(len(picked)),
                f"top|{m}": np.pad(np.array(images)[top.numpy()], ((0, 0), (0, pad)), constant_values=-1),
                f"presence|{m}": np.pad(mean.gather(0, top.T).T.numpy(), ((0, 0), (0, pad))),
                f"best|{m}": along.amax(dim=0).numpy(),
                f"maps|{m}": (maps / peak[:, None, None, None]).numpy().astype(np.float16),
            })
        store.put_arrays(key, arrays)
    return key, {m: {"vectors": arrays[f"vectors|{m}"], "share": arrays[f"share|{m}"],
                     "error": float(arrays[f"error|{m}"]), "positions": int(arrays[f"positions|{m}"]),
                     "images": int(arrays["images"]), "top": arrays[f"top|{m}"],
                     "presence": arrays[f"presence|{m}"], "best": arrays[f"best|{m}"]} for m in modules}


def normalization_check(loaded, refs, used: Sequence[int], store: Store) -> dict | None:
    """How well the model's input normalization fits its BatchNorm statistics on the first
    ``NORMALIZATION_IMAGES`` readable reference images, beside the common alternatives
    (``normalization.fit_by_normalization``): ``{"used": fit, "imagenet": fit, ...}`` of
    ``NormFit.to_dict()``, and ``better``, the name of an alternative that fits clearly better
    (its stem within ``GOOD_FIT`` where the one used is at least twice as far off), or ``None``.
    ``None`` for a model without BatchNorm. Cached by weights, images and preprocessing."""
    import json

    import torch

    from .normalization import GOOD_FIT, fit_by_normalization
    from .references import iter_batches

    images = [int(i) for i in used[:NORMALIZATION_IMAGES]]
    key = canonical_key({"kind": "normalization-fit", "v": 2, "model": loaded.name, "weights": loaded.weights.digest,
                         "refs": refs.digest, "images": images, "preprocess": vars(loaded.preprocess)})
    arrays = store.get_arrays(key)
    if arrays is None:
        size, crop_pct = loaded.preprocess.input_size[1], loaded.preprocess.crop_pct
        pixels = next(iter_batches(refs.subset(images), size, crop_pct, len(images)))[1]
        batch = torch.from_numpy(pixels).to(loaded.device).permute(0, 3, 1, 2).float() / 255
        fits = fit_by_normalization(loaded.module, batch, loaded.preprocess.mean, loaded.preprocess.std)
        result = None if fits is None else {name: fit.to_dict() for name, fit in fits.items()}
        arrays = {"json": np.array(json.dumps(result))}
        store.put_arrays(key, arrays)
    result = json.loads(str(arrays["json"]))
    if result is not None:
        used_stem = result["used"]["stem"]
        better = [name for name, fit in result.items()
                  if name != "used" and fit["stem"] <= GOOD_FIT and used_stem >= 2 * fit["stem"] and used_stem > GOOD_FIT]
        result["better"] = min(better, key=lambda name: result[name]["stem"]) if better else None
    return result


def neuron_boxes(loaded, modules: list[str], size: int, pad: int,
                 store: Store | None = None) -> dict[str, tuple[int, int, int, int]]:
    """The theoretical receptive field of each layer's centre neuron on a render canvas of ``size``
    px (the network sees it padded by ``pad``), as an inclusive box clipped to the canvas; cached in
    ``store`` by architecture."""
    from .receptive_field import neuron_boxes as boxes_on

    key = canonical_key({"kind": "neuron-boxes", "v": 1, "model": loaded.name, "size": size, "pad": pad,
                         "layers": modules, "fixed": loaded.fixed_input})
    cached = store.get_arrays(key) if store else None
    if cached is not None:
        return {m: tuple(int(v) for v in box) for m, box in zip(modules, cached["boxes"])}
    boxes = {m: (max(top - pad, 0), max(left - pad, 0), min(bottom - pad, size - 1), min(right - pad, size - 1))
             for m, (top, left, bottom, right) in boxes_on(loaded.module, modules, size + 2 * pad).items()}
    if store and modules:
        store.put_arrays(key, {"boxes": np.array([boxes[m] for m in modules])})
    return boxes


def reference_entries(loaded, refs, arrays: dict, indices: list[int], store: Store) -> list[ReferenceImage]:
    """Manifest entries (thumbnail in the store, top predictions) for the reference images ``indices``."""
    from .references import center_crop, load_rgb

    predictions: dict[int, list] = {}
    for i, c, p in arrays["predictions"]:
        predictions.setdefault(int(i), []).append((int(c), float(p)))
    labels = imagenet_labels(loaded.module)
    entries = []
    for i in indices:
        ref = refs.images[i]
        pixels = center_crop(load_rgb(ref), loaded.preprocess.input_size[1], loaded.preprocess.crop_pct)
        entries.append(ReferenceImage(
            index=i, name=ref.name, image=store.put_image(pixels), thumb=f"{i}.webp",
            predictions=[Prediction(class_=c, label=labels.get(c, f"class {c}"), prob=p)
                         for c, p in predictions.get(i, [])]))
    return entries


def imagenet_labels(model) -> dict[int, str]:
    """Class names for a 1000-class ImageNet head (timm ships them); empty otherwise."""
    if getattr(model, "num_classes", None) != 1000:
        return {}
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return {i: info.index_to_description(i) for i in range(1000)}
    except Exception:
        return {}


def canvas_photos(loaded, refs, indices, size: int) -> dict[int, tuple[np.ndarray, str]]:
    """Reference images ``indices`` cropped as the model would see them, at the render canvas
    ``size``: ``{index: (uint8 [size, size, 3], sha256 of the pixels)}`` (what DeepDreams,
    inversions and accentuations start from)."""
    import hashlib

    from .references import center_crop, load_rgb

    photos = {}
    for i in indices:
        pixels = center_crop(load_rgb(refs.images[int(i)]), size, loaded.preprocess.crop_pct)
        photos[int(i)] = (pixels, hashlib.sha256(pixels.tobytes()).hexdigest())
    return photos


MACO_PHOTOS = 64  # at most this many reference images estimate the fixed spectrum of ``maco`` renders


def maco_magnitude(refs, used, size: int, store: Store):
    """The magnitude spectrum ``maco`` renders keep fixed, estimated from (up to ``MACO_PHOTOS`` of)
    the readable reference images at the canvas ``size``; cached by image set and size."""
    import torch

    from ..optvis.param import magnitude_spectrum
    from .references import load_rgb

    key = canonical_key({"kind": "maco-magnitude", "v": 1, "refs": refs.digest, "size": size})
    arrays = store.get_arrays(key)
    if arrays is None:
        photos = [load_rgb(refs.images[int(i)]) for i in list(used)[:MACO_PHOTOS]]
        arrays = {"magnitude": magnitude_spectrum(photos, size).numpy()}
        store.put_arrays(key, arrays)
    return torch.from_numpy(arrays["magnitude"])
