"""Orchestration: config -> model -> layers -> references -> renders -> manifest -> pages -> site.

``build`` is the library entry point behind ``reportgen build``. Pages are made from the manifest
and the store only, so ``rebuild_site`` needs no model. Progress goes through one ``Progress``
object; ``BuildReport`` counts rendered / cached / failed units and owns the exit code.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .config import BuildConfig
from .errors import OutputDirError, StoreError, UsageError
from .manifest import check_out, merge_model, prepare_out, read_manifest, write_manifest
from .pages import slug, unit_image
from .progress import Progress
from .store import Store, atomic_write, canonical_key, exclusive

REF_THUMBS_ON_MODEL_PAGE = 16
RETRY_LR_FACTOR = 0.1  # a batch that hits NaN/inf is optimized again at a tenth of the learning rate


@dataclass
class BuildReport:
    """What a build did; ``exit_code`` is 0 when every unit rendered, 1 when some failed."""

    out: Path
    rendered: int = 0
    cached: int = 0
    failed: list[str] = field(default_factory=list)
    pages: int = 0
    site: Any = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over models

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------- build

def build(config: BuildConfig, progress: Progress | None = None) -> BuildReport:
    """Render every selected unit of every model in ``config``, then write pages and the site.

    Raises:
        ReportgenError subclasses for user mistakes (unknown model/layer/unit, bad weights or output).
    """
    started = time.perf_counter()
    progress = progress or Progress()
    check_out(config.out)
    plans = []  # every model, layer and unit is checked before anything is written or rendered
    for name in config.models:
        progress.stage(f"{name}: loading")
        plans.append(_plan(name, config))
    out = prepare_out(config.out)
    store = Store(out / ".cache")
    report = BuildReport(out)
    with exclusive(out), _disk_full_is_an_error(out):
        manifest = read_manifest(out)
        for plan in plans:
            entry = build_model(plan, config, store, progress, report)
            manifest = merge_model(manifest, entry)
            write_manifest(out, manifest)  # after each model, so a later failure keeps this one
        publish(out, manifest, store, report, site=config.site)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _disk_full_is_an_error(out: Path) -> Iterator[None]:
    """A full disk becomes one clear line; what was stored before stays valid (writes are atomic)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OutputDirError(
            f"the disk is full (writing {exc.filename or out}); free some space and run the same command "
            "again: finished renders are kept"
        ) from None


def publish(out: Path, manifest: dict, store: Store, report: BuildReport, site: bool = True) -> None:
    """Write pages from the manifest and, with ``site``, run a strict ``mkdocs build``."""
    from .pages import write_docs

    started = time.perf_counter()
    report.pages = write_docs(out, manifest, store)
    report.timings["pages"] = time.perf_counter() - started
    if site:
        from .site import build_site

        report.site = build_site(out)
        report.timings["mkdocs"] = report.site.seconds


def rebuild_site(out: Path, site: bool = True) -> BuildReport:
    """``reportgen site``: pages and site again from the stored manifest; no model is loaded.

    Raises:
        StoreError: there is no manifest in ``out``.
    """
    started = time.perf_counter()
    manifest = read_manifest(out)
    if manifest is None:
        raise StoreError(
            f"{Path(out) / 'manifest.json'} is missing or from another reportgen version; "
            f"run `reportgen build --out {out}` (stored renders are reused)"
        )
    report = BuildReport(Path(out))
    with exclusive(Path(out)), _disk_full_is_an_error(Path(out)):
        publish(Path(out), manifest, Store(Path(out) / ".cache"), report, site=site)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class Plan:
    """One model ready to render: loaded, with its selected layers and their channel ids."""

    loaded: Any
    layers: list
    units: dict[str, list[int]]
    load_seconds: float


def _plan(name: str, config: BuildConfig) -> Plan:
    """Load the model and resolve its layers and units (all user input checked before any render)."""
    from .layers import catalogue, iter_units, module_layer, select_layers
    from .models import load_model, resolve_device
    from .optvis.render import check_canvas

    started = time.perf_counter()
    device = resolve_device(config.device)
    loaded = load_model(name, config.weights, device, seed=config.seed)
    size = loaded.preprocess.input_size
    layers = select_layers(catalogue(loaded.module, size), config.layers,
                           lookup=lambda path: module_layer(loaded.module, path, size))
    units = {layer.module: list(iter_units(layer, config.units.first, config.units.ids)) for layer in layers}
    check_canvas(loaded, [layer.module for layer in layers], config.render)
    return Plan(loaded, layers, units, time.perf_counter() - started)


def build_model(plan: Plan, config: BuildConfig, store: Store, progress: Progress, report: BuildReport) -> dict:
    """Render one planned model's selected units and return its manifest entry."""
    import timm
    import torch

    from .analysis.references import folder_references, skimage_references

    loaded, layers, units, name = plan.loaded, plan.layers, plan.units, plan.loaded.name
    timings: dict[str, float] = {"load": plan.load_seconds}

    t0 = time.perf_counter()
    refs = folder_references(config.images) if config.images else skimage_references()
    stats, arrays = _reference_stats(loaded, [layer.module for layer in layers], refs, store, progress)
    progress.stage(f"{name}: receptive fields")
    fields = _receptive_fields(loaded, layers, store)
    timings["analysis"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    total = sum(len(u) for u in units.values())
    rendered_before = report.rendered
    progress.begin(total, name)
    layer_entries = []
    for layer in layers:
        progress.stage(f"{name} {layer.module}")
        found = _render_layer(loaded, layer.module, units[layer.module], config, store, progress, report)
        layer_entries.append({**_layer_entry(name, layer, found, stats[layer.module], report, config.seed),
                              "rf": fields[layer.module].to_dict()})
    progress.end()
    timings["render"] = time.perf_counter() - t0
    timings["total"] = sum(timings.values())
    for stage in ("load", "analysis", "render"):
        report.timings[stage] = report.timings.get(stage, 0.0) + timings[stage]

    # Reference thumbnails: the first few for the model page, and every unit's best image.
    wanted = {int(i) for i in arrays["used"][:REF_THUMBS_ON_MODEL_PAGE]}
    wanted |= {u["ref_best_image"] for e in layer_entries for u in e["units"] if u["ref_best_image"] is not None}
    ratios = [u["activation_ratio"] for e in layer_entries for u in e["units"] if u["activation_ratio"] is not None]
    rendered = report.rendered - rendered_before
    return {
        "name": name,
        "slug": slug(name),
        "weights": {**vars(loaded.weights), "description": loaded.weights.describe()},
        "preprocess": vars(loaded.preprocess),
        "device": str(loaded.device),
        "settings": config.to_dict(),
        "seed": config.seed,
        "versions": {"reportgen": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "python": platform.python_version()},
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "rendered": rendered,
        "cached": total - rendered,
        "unit_count": total,
        "render_seconds": round(sum(u["seconds"] for e in layer_entries for u in e["units"]), 1),
        "median_ratio": statistics.median(ratios) if ratios else None,
        "references": {
            "label": refs.label, "digest": refs.digest, "skipped": [str(s) for s in arrays["skipped"]],
            "images": _reference_entries(loaded, refs, arrays, sorted(wanted), store),
        },
        "layers": layer_entries,
    }


def _reference_stats(loaded, modules: list[str], refs, store: Store, progress: Progress):
    """Per-unit statistics over the reference images: one streaming pass, cached by model, weights,
    layers and image set. Returns ({layer: LayerStats}, the stored arrays)."""
    import numpy as np

    from .analysis.activations import LayerStats, analyze_references

    key = canonical_key({"kind": "reference-stats", "v": 2, "model": loaded.name, "weights": loaded.weights.digest,
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


def _render_layer(loaded, layer: str, channels: list[int], config: BuildConfig, store: Store, progress: Progress,
                  report: BuildReport) -> dict:
    """Stored renders of ``channels`` of ``layer``: cache hits, then the misses rendered in batches.

    Batches are fixed chunks of the layer's units, and a chunk with any unit missing is rendered
    whole: a resumed build batches every unit as an uninterrupted one would, so its images are the
    same to the bit (batched convolutions may differ in the last bits from unbatched ones).
    """
    from .optvis.objectives import unit_objective
    from .optvis.render import choose_batch, render_channels

    settings = config.render
    keys = {c: Store.render_key(loaded.name, loaded.weights.digest, layer, c, settings.to_dict(), config.seed,
                                vars(loaded.preprocess)) for c in channels}
    found = {c: store.get_render(keys[c]) for c in channels}
    missing = {c for c in channels if found[c] is None}
    report.cached += len(channels) - len(missing)
    progress.advance(len(channels) - len(missing))
    if not missing:
        return found
    batch = choose_batch(loaded, layer, settings, len(channels), config.batch)
    for start in range(0, len(channels), batch):
        chunk = channels[start:start + batch]
        todo = [c for c in chunk if c in missing]
        if not todo:
            continue
        share = len(todo) / settings.steps
        started = time.perf_counter()
        results = render_channels(loaded, layer, chunk, settings, config.seed, on_step=lambda _s: progress.advance(share))
        failed = [r.channel for r in results if not r.ok and r.channel in missing]
        if failed:  # a NaN or inf: retry those units once with a gentler learning rate
            gentler = dataclasses.replace(settings, lr=settings.lr * RETRY_LR_FACTOR)
            retried = {r.channel: r for r in render_channels(loaded, layer, failed, gentler, config.seed)}
            results = [retried.get(r.channel, r) for r in results]
        seconds = (time.perf_counter() - started) / len(chunk)
        for result in results:
            if result.channel not in missing:
                continue  # rendered again only to keep its batch whole; the stored one is identical
            report.rendered += 1
            if not result.ok:
                continue  # not stored: the next build tries again; the page says it failed
            found[result.channel] = store.put_render(keys[result.channel], result.image, {
                "model": loaded.name, "layer": layer, "channel": result.channel, "seed": result.seed,
                "activation": result.activation, "curve": result.curve,
                "objective": unit_objective("channel", layer, (result.channel,)).describe(),
                "lr": settings.lr * (RETRY_LR_FACTOR if result.channel in failed else 1.0),
                "seconds": round(seconds, 3), "device": str(loaded.device),
            })
    return found


def _reference_entries(loaded, refs, arrays: dict, indices: list[int], store: Store) -> list[dict]:
    """Manifest entries (thumbnail in the store, top predictions) for the reference images ``indices``."""
    from .analysis.references import center_crop, load_rgb

    predictions: dict[int, list] = {}
    for i, c, p in arrays["predictions"]:
        predictions.setdefault(int(i), []).append((int(c), float(p)))
    labels = _imagenet_labels(loaded.module)
    entries = []
    for i in indices:
        ref = refs.images[i]
        pixels = center_crop(load_rgb(ref), loaded.preprocess.input_size[1], loaded.preprocess.crop_pct)
        entries.append({
            "index": i, "name": ref.name, "image": store.put_image(pixels), "thumb": f"{i}.webp",
            "predictions": [{"class": c, "label": labels.get(c, f"class {c}"), "prob": p} for c, p in predictions.get(i, [])],
        })
    return entries


def _layer_entry(model_name: str, layer, found: dict, stats, report: BuildReport, config_seed: int) -> dict:
    """A layer's manifest entry: its facts and, per unit, the render (``None`` if it failed), its
    activation ratio and its statistics over the reference images."""
    from .optvis.objectives import unit_objective
    from .optvis.render import unit_seed

    entry = {**layer.to_dict(), "slug": slug(layer.module), "units": []}
    model_stub = {"slug": slug(model_name)}
    for c, stored in found.items():
        failed = stored is None
        meta = {} if failed else stored.meta
        activation = meta.get("activation")
        ref_max, ref_mean = _finite(stats.max_mean[c]), _finite(stats.mean[c])
        if failed:
            report.failed.append(f"{model_name} {layer.module} unit {c}")
        entry["units"].append({
            "channel": c,
            "key": None if failed else stored.key,
            "render": None if failed else unit_image(model_stub, entry, c),
            "activation": activation,
            "ref_max": ref_max,
            "ref_mean": ref_mean,
            "fire_rate": float(stats.fire_rate[c]),
            "ref_best_image": None if ref_max is None else int(stats.argmax[c]),
            "activation_ratio": activation / ref_max if not failed and ref_max is not None and ref_max > 0 else None,
            "seed": meta.get("seed", unit_seed(config_seed, layer.module, c)),
            "objective": meta.get("objective", unit_objective("channel", layer.module, (c,)).describe()),
            "curve": meta.get("curve", []),
            "seconds": meta.get("seconds", 0.0),
            "failed": failed,
        })
    ratios = [u["activation_ratio"] for u in entry["units"] if u["activation_ratio"] is not None]
    entry["median_ratio"] = statistics.median(ratios) if ratios else None
    entry["dead"] = [u["channel"] for u in entry["units"] if u["fire_rate"] == 0]
    return entry


def _finite(value) -> float | None:
    """A JSON-safe number: ``None`` for NaN and infinities."""
    value = float(value)
    return value if math.isfinite(value) else None


def _imagenet_labels(model) -> dict[int, str]:
    """Class names for a 1000-class ImageNet head (timm ships them); empty otherwise."""
    if getattr(model, "num_classes", None) != 1000:
        return {}
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return {i: info.index_to_description(i) for i in range(1000)}
    except Exception:
        return {}


# ---------------------------------------------------------------- single renders and the catalogue

def list_layers(name: str, weights: str = "none", receptive_fields: bool = True) -> list[tuple[Any, Any]]:
    """The layer catalogue of timm model ``name`` with each layer's theoretical receptive field
    (``reportgen layers``): a list of ``(LayerInfo, ReceptiveField or None)``."""
    from .layers import catalogue
    from .models import load_model

    loaded = load_model(name, weights, "cpu")
    layers = catalogue(loaded.module, loaded.preprocess.input_size)
    fields = _receptive_fields(loaded, layers) if receptive_fields else {}
    return [(layer, fields.get(layer.module)) for layer in layers]


def _receptive_fields(loaded, layers: list, store: Store | None = None) -> dict:
    """Theoretical receptive fields of ``layers`` (cached in ``store`` by architecture: weights do
    not change them). Canvases grow up to 8 times the model's input size."""
    from .analysis.receptive_field import ReceptiveField, theoretical

    side = loaded.preprocess.input_size[1]
    modules = [layer.module for layer in layers]
    key = canonical_key({"kind": "receptive-fields", "v": 1, "model": loaded.name, "side": side, "layers": modules})
    cached = store.get_arrays(key) if store else None
    if cached is not None:
        return {m: ReceptiveField(int(s) if s >= 0 else None, int(p) if s >= 0 else None, bool(g))
                for m, s, p, g in zip(modules, cached["size"], cached["padding"], cached["global"])}
    fields = theoretical(loaded.module, modules, {layer.module: layer.stride for layer in layers},
                         start_side=side, max_side=8 * side)
    if store:
        import numpy as np

        store.put_arrays(key, {
            "size": np.array([fields[m].size if fields[m].size is not None else -1 for m in modules]),
            "padding": np.array([fields[m].padding if fields[m].size is not None else -1 for m in modules]),
            "global": np.array([fields[m].is_global for m in modules]),
        })
    return fields


def render_unit(config: BuildConfig, layer: str, unit: int, neuron: bool, out_file: Path) -> Path:
    """``reportgen render``: optimize one unit (channel or centre neuron) and save a PNG.

    Raises:
        UnknownLayerError / UnknownUnitError / UsageError: for a bad layer, unit or output path.
    """
    from .images import png_bytes
    from .optvis.render import render_channels

    if Path(out_file).suffix.lower() != ".png":
        raise UsageError(f"--out {out_file}: the render is written as PNG; give a path ending in .png")
    plan = _plan(config.models[0], dataclasses.replace(config, layers=layer))
    loaded, target = plan.loaded, plan.layers[0]
    if not 0 <= unit < target.channels:
        from .errors import UnknownUnitError

        raise UnknownUnitError(f"--unit {unit}: layer {target.module} has channels 0..{target.channels - 1}")
    result = render_channels(loaded, target.module, [unit], config.render, config.seed,
                             objective_kind="neuron" if neuron else "channel")[0]
    atomic_write(Path(out_file), png_bytes(result.image))
    return Path(out_file)
