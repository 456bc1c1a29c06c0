"""Markdown pages and ``mkdocs.yml`` from the manifest, through the Jinja2 templates in ``templates/``.

``render_*`` functions are pure (manifest in, text out); ``write_docs`` is the one place that
writes the ``docs/`` tree: it renders every page, publishes the WebP images from the cache masters
and swaps the new tree in whole, so no stale page survives.
"""

from __future__ import annotations

import html
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

import numpy as np

from .images import WEBP_QUALITY, boxes_on_window, draw_box, heat_colors, heat_overlay, shrink, stretch, webp_bytes, zoom
from .manifest import LayerEntry, Manifest, ModelEntry, UnitEntry
from .renders import VARIANT_FIELDS
from .store import Store, atomic_write

UNIT_IMAGE_SIDE = 512  # published render size cap (the lossless master stays in the cache)
REF_THUMB_SIDE = 224
MAP_THUMB_SIDE = 160  # activation-map overlays (a thousand per default build: small encodes fast)
MAP_QUALITY = 75  # their WebP quality: a colour overlay at 64-160 px needs less than a render (a third fewer bytes)
CROP_SIDE = 160  # a top image's crop around the unit's strongest position, enlarged to this
MIN_CROP = 24  # px of the input a crop shows at least (early layers' fields are a few pixels)
ERF_FIGURE_SIDE = 256  # the receptive-field figure, enlarged around the field when the field is small
SMALL_BASELINE = 0.1  # a best image whose mean is under this share of the unit's peak makes the ratio unreliable
VARIANTS = tuple(VARIANT_FIELDS.values())  # a unit's further renders, as named in the manifest
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def md_escape(text: Any) -> str:
    """Make a model-supplied name inert in Markdown and HTML: one line (control characters become
    spaces), tags escaped, then Markdown punctuation."""
    one_line = _CONTROL.sub(" ", str(text))
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=True))


def slug(name: str) -> str:
    """A path segment for a model or layer name: only ``[A-Za-z0-9._-]``, never hidden, ``.`` or ``..``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + safe if safe.startswith(".") or not safe else safe


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"×{value:.2f}"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def ratio_flag(unit: UnitEntry) -> dict | None:
    """Why a unit's activation ratio should not be read at face value, or ``None`` when it can be.

    Returns ``{"short": caption text, "reason": one sentence}``. The ratio is the render's mean
    activation over the best reference image's; it means little when no image gives the unit a
    positive mean (it is then undefined) or when the best image's mean is a small fraction of the
    unit's peak at one position (the unit fires on the photos only in small spots, so the
    denominator is small and the ratio inflated)."""
    if unit.failed or not unit.rendered:  # no render: no ratio to read
        return None
    ref_max, peak = unit.ref_max, unit.ref_peak
    if unit.dead:
        return {"short": "never fires", "reason": "The unit never fires on any reference image, so there is no "
                "real image to compare the render with"}
    if ref_max is None or ref_max <= 0:
        return {"short": "no ratio", "reason": "No reference image gives the unit a positive mean activation "
                "(it fires only in places), so the ratio is undefined"}
    if peak is not None and peak > 0 and ref_max < SMALL_BASELINE * peak:
        return {"short": "small baseline", "reason": f"The best reference image's mean activation ({ref_max:.3f}) is "
                f"under a tenth of the unit's peak at one position ({peak:.3f}): the unit fires on the photos only in "
                "small spots, so the ratio's denominator is small and the ratio inflated"}
    return None


def erf_window(layer: LayerEntry, input_side: int) -> tuple[int, int, int, int]:
    """The square of the model's input the receptive-field figure shows: three times the larger of
    the two fields around the centre unit's field, at least 12 px, at most the whole input."""
    fields = [layer.erf.size] + ([layer.rf.size] if layer.rf.size is not None else [input_side])
    side = min(input_side, max(12, 3 * max(fields)))
    top, _, bottom, _ = rf_box(layer, input_side) if layer.rf.size is not None else (0, 0, input_side - 1, 0)
    start = min(max((top + bottom) // 2 - side // 2, 0), input_side - side)
    return start, start, start + side - 1, start + side - 1


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("reportgen.templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown output: names go through the explicit ``md`` filter
    )
    # ``md`` for any model- or file-supplied text in Markdown (alt texts included); ``attr`` for
    # YAML/HTML values outside Markdown (titles, data attributes).
    env.filters.update(md=md_escape, ratio=_ratio, num=_number, url=lambda s: quote(str(s)),
                       attr=lambda s: html.escape(str(s), quote=True))
    env.filters["ratio_flag"] = ratio_flag
    env.globals.update(ratio_flag=ratio_flag, erf_window=erf_window)
    return env


_ENV: jinja2.Environment | None = None


def _template(name: str) -> jinja2.Template:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name)


def unit_image(model_slug: str, layer_slug: str, channel: int) -> str:
    """Path (relative to OUT) of a unit's published render."""
    return f"docs/{model_slug}/{layer_slug}/img/{channel}.webp"


def with_pages(layer: LayerEntry) -> list[UnitEntry]:
    """Every entry of a layer that has a unit page: its shown units, then its drivers."""
    return [*layer.units, *layer.drivers]


def render_home(manifest: Manifest) -> str:
    return _template("home.md.j2").render(manifest=manifest, models=manifest.models)


def render_model(model: ModelEntry) -> str:
    return _template("model.md.j2").render(model=model)


def render_layer(model: ModelEntry, index: int) -> str:
    layers = model.layers
    layer = layers[index]
    refs = {r.index: r for r in model.references.images}
    shown = {u.channel for u in with_pages(layer)}
    return _template("layer.md.j2").render(
        model=model, layer=layer, map_rows=[refs[i] for i in layer.maps.images if i in refs],
        map_units=layer.maps.units, shown=shown,
        prev=layers[index - 1] if index > 0 else None,
        next=layers[index + 1] if index + 1 < len(layers) else None,
    )


def render_unit(model: ModelEntry, layer: LayerEntry, position: int, group: str = "units") -> str:
    """The page of ``layer.<group>[position]``: a shown unit (``units``) or a driver (``drivers``)."""
    units = getattr(layer, group)
    unit = units[position]
    refs = {r.index: r for r in model.references.images}
    top = [{"image": t.image, "value": t.value, "ref": refs[t.image]} for t in unit.top if t.image in refs]
    shown = {u.channel for u in with_pages(layer)}
    from .analysis.stage import CIRCUIT_IMAGES

    return _template("unit.md.j2").render(
        model=model, layer=layer, unit=unit, top=top, shown=shown, curve=_curve_svg(unit.curve),
        layers_by_module={entry.module: entry for entry in model.layers}, circuit_images=CIRCUIT_IMAGES,
        feeds=unit.feeds,
        pages_in={entry.module: {u.channel for u in with_pages(entry)} for entry in model.layers},
        rendered_in={entry.module: {u.channel for u in with_pages(entry) if u.key} for entry in model.layers},
        prev=units[position - 1] if position > 0 else None,
        next=units[position + 1] if position + 1 < len(units) else None,
    )


def render_mkdocs_yml(manifest: Manifest) -> str:
    return _template("mkdocs.yml.j2").render(manifest=manifest, models=manifest.models)


def _curve_svg(curve: list, width: int = 360, height: int = 160) -> str:
    """The optimization curve (score per step) as an inline SVG with its axes labelled: the step
    along the bottom, the score (lowest and highest value) up the side."""
    if len(curve) < 2:
        return ""
    steps = [s for s, _ in curve]
    values = [v for _, v in curve]
    lo, hi = min(values), max(values)
    left, right, top, bottom = 56, 8, 8, height - 30  # the plot area inside the axes
    span, last = (hi - lo) or 1.0, max(steps[-1], 1)

    def x(step: float) -> str:
        return f"{left + (width - left - right) * step / last:.1f}"

    def y(value: float) -> str:
        return f"{bottom - (bottom - top) * (value - lo) / span:.1f}"

    points = " ".join(f"{x(s)},{y(v)}" for s, v in curve)
    text = 'fill="currentColor" font-size="11"'
    return (
        f'<svg class="rg-curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="score from {values[0]:.3g} to {values[-1]:.3g} over {steps[-1] + 1} steps">'
        f'<path d="M{left},{top} V{bottom} H{width - right}" fill="none" stroke="currentColor" stroke-opacity="0.5"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" {text}>{hi:.3g}</text>'
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end" {text}>{lo:.3g}</text>'
        f'<text x="{left}" y="{bottom + 14}" text-anchor="middle" {text}>0</text>'
        f'<text x="{width - right}" y="{bottom + 14}" text-anchor="end" {text}>{steps[-1]}</text>'
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 2}" text-anchor="middle" {text}>step</text>'
        f'<text x="12" y="{(top + bottom) / 2:.0f}" text-anchor="middle" transform="rotate(-90 12 {(top + bottom) / 2:.0f})" '
        f'{text}>score</text>'
        f'<polyline fill="none" stroke="var(--md-primary-fg-color)" stroke-width="2" points="{points}"/></svg>'
    )


def layer_images(layer: LayerEntry, photos: dict[int, np.ndarray], store: Store, input_side: int,
                 originals: dict[int, np.ndarray] | None = None):
    """Yield ``(path relative to the layer folder, RGB array)`` for every picture of a layer's pages:
    unit renders and their variants (second seed, negative, diversity, accentuation; low-contrast ones stretched
    for display, the masters stay raw), centre-neuron renders (with the receptive field drawn, and
    zoomed into it), DeepDreams and inversions, activation-map overlays on ``photos`` (reference
    thumbnails by image index), the crop of each unit's top images (``originals``, at the model's
    input size) around its strongest position (``field_crop_box``) and the effective receptive
    field, and each neuron group's render and its presence on the photos where it is present most.
    Everything comes from the store."""
    for unit in with_pages(layer):
        c = unit.channel
        stored = store.get_render(unit.key) if unit.key else None
        if stored is not None:
            yield f"img/{c}.webp", stretch(stored.image())[0]
        for kind in VARIANTS:
            variant = getattr(unit, kind)
            stored = store.get_render(variant.key) if variant else None
            if stored is not None:
                yield f"img/{c}-{kind}.webp", stretch(stored.image())[0]
        neuron = unit.neuron
        stored = store.get_render(neuron.key) if neuron and neuron.key else None
        if stored is not None:
            image, box = stored.image(), tuple(neuron.box)
            if box == (0, 0, image.shape[0] - 1, image.shape[1] - 1):  # the field covers the canvas
                yield f"img/{c}-neuron.webp", image
            else:
                yield f"img/{c}-neuron.webp", draw_box(image, box)
                yield f"img/{c}-neuron-zoom.webp", zoom(image, box)
    m = layer.module
    for dream in layer.dreams:
        for kind in ("dream", "inversion"):
            result = getattr(dream, kind)
            stored = store.get_render(result.key) if result else None
            if stored is not None:
                yield f"dreams/{dream.image}-{kind}.webp", stored.image()
    maps = store.get_arrays(layer.maps.key) or {}
    if f"maps|{m}" in maps:
        pairs = [tuple(int(v) for v in pair) for pair in maps[f"pairs|{m}"]]
        values = maps[f"maps|{m}"].astype(np.float32) * maps[f"scale|{m}"][:, None, None]
        positive = np.nan_to_num(np.maximum(values, 0))
        peak: dict[int, float] = {}  # per unit, over the pairs shown: its overlays compare across images
        for (_, c), value in zip(pairs, positive.max(axis=(1, 2))):
            peak[c] = max(peak.get(c, 0.0), float(value))
        for (i, c), heat in zip(pairs, positive):
            if i in photos:
                yield f"maps/{i}-{c}.webp", heat_overlay(photos[i], heat / max(peak[c], 1e-12))
        tops = {(t.image, u.channel) for u in with_pages(layer) for t in u.top}
        for (i, c), value in zip(pairs, values):
            if (i, c) in tops and i in (originals or {}) and np.isfinite(value).any():
                row, col = np.unravel_index(int(np.nanargmax(value)), value.shape)
                yield f"crops/{i}-{c}.webp", zoom(originals[i], field_crop_box(layer, int(row), int(col), input_side),
                                                  CROP_SIDE)
    for group in layer.groups:
        stored = store.get_render(group.key) if group.key else None
        if stored is not None:
            yield f"groups/{group.index}.webp", stretch(stored.image())[0]
    presence = (store.get_arrays(layer.group_fit.key) or {}) if layer.group_fit else {}
    if f"maps|{m}" in presence:
        tops, values = presence[f"top|{m}"], presence[f"maps|{m}"].astype(np.float32)
        for group in layer.groups:
            g = group.index
            for j, i in enumerate(tops[g]):
                if int(i) in photos:
                    yield f"maps/group-{g}-{int(i)}.webp", heat_overlay(photos[int(i)], values[g, j])
    erf = store.get_arrays(layer.erf.key) or {}
    heat = erf.get(f"erf|{m}")
    if heat is not None:
        boxes = []  # drawn on the enlargement, so a field a few pixels wide still shows
        if layer.rf.size is not None:
            boxes.append((rf_box(layer, input_side), (0, 255, 255)))
        if layer.erf.size > 0:
            boxes.append((mass_box(heat, layer.erf.size), (255, 255, 255)))
        image = heat_colors(np.sqrt(heat))  # normalized to max 1; square root: the tails stay visible
        yield "erf.webp", boxes_on_window(image, erf_window(layer, input_side), boxes, ERF_FIGURE_SIDE)


def rf_box(layer: LayerEntry, input_side: int) -> tuple[int, int, int, int]:
    """The theoretical receptive field of a layer's centre unit on the model's input, clipped."""
    rows = layer.out_shape[1]
    top = (rows // 2) * layer.stride - layer.rf.padding
    bottom = top + layer.rf.size - 1
    top, bottom = max(top, 0), min(bottom, input_side - 1)
    return top, top, bottom, bottom


def field_crop_box(layer: LayerEntry, row: int, col: int, input_side: int) -> tuple[int, int, int, int]:
    """The square of the input a unit at map position (``row``, ``col``) looks at, clipped to the
    input: centred on its theoretical receptive field, as wide as the layer's effective field (the
    95% square), at least ``MIN_CROP`` px; the theoretical field's side where that is smaller."""
    size, stride = layer.rf.size, layer.stride
    side = max(MIN_CROP, layer.erf.size or input_side)
    if size is not None:
        side = min(side, max(size, MIN_CROP))
        centre_row = row * stride - layer.rf.padding + (size - 1) / 2
        centre_col = col * stride - layer.rf.padding + (size - 1) / 2
    else:  # a global field: centre on the position's patch
        centre_row, centre_col = (row + 0.5) * stride, (col + 0.5) * stride
    side = min(side, input_side)
    top = min(max(round(centre_row - (side - 1) / 2), 0), input_side - side)
    left = min(max(round(centre_col - (side - 1) / 2), 0), input_side - side)
    return top, left, top + side - 1, left + side - 1


def mass_box(heat: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """The ``side`` px square centred on the centre of mass of ``heat`` (the effective field's 95% square)."""
    rows, cols = np.indices(heat.shape)
    total = float(heat.sum()) or 1.0
    row, col = (heat * rows).sum() / total, (heat * cols).sum() / total
    top, left = round(row - (side - 1) / 2), round(col - (side - 1) / 2)
    return top, left, top + side - 1, left + side - 1


def write_staged(path: Path, data: bytes) -> None:
    """Write one file of the staging tree. No per-file atomic rename or fsync: the tree is swapped
    in whole, and a tree left by an interrupted run is deleted by the next one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_docs(out: Path, manifest: Manifest, store: Store) -> int:
    """Write ``OUT/docs`` and ``OUT/mkdocs.yml`` for ``manifest``; returns the number of pages.

    Images come from the store's lossless masters (renders) and reference thumbnails.
    """
    out = Path(out)
    staging = out / "docs.new"
    shutil.rmtree(staging, ignore_errors=True)
    pages = 0

    def page(relative: str, text: str) -> None:
        nonlocal pages
        write_staged(staging / relative, text.encode("utf-8"))
        pages += 1

    page("index.md", render_home(manifest))
    for asset in ("reportgen.css", "reportgen.js"):
        write_staged(staging / "assets" / asset, resources.files("reportgen.templates").joinpath(asset).read_bytes())
    for model in manifest.models:
        m = model.slug
        page(f"{m}/index.md", render_model(model))
        for entry in model.classes:
            stored = store.get_render(entry.key) if entry.key else None
            if stored is not None:
                write_staged(staging / m / "classes" / f"{entry.class_}.webp",
                             webp_bytes(stretch(stored.image())[0], UNIT_IMAGE_SIDE))
        photos, originals = {}, {}
        for ref in model.references.images:
            photo = store.get_image(ref.image)
            write_staged(staging / m / "refs" / ref.thumb, webp_bytes(photo, REF_THUMB_SIDE))
            photos[ref.index] = shrink(photo, MAP_THUMB_SIDE)
            originals[ref.index] = photo
        for i, layer in enumerate(model.layers):
            folder = staging / m / layer.slug
            page(f"{m}/{layer.slug}/index.md", render_layer(model, i))
            for name, image in layer_images(layer, photos, store, model.preprocess["input_size"][1], originals):
                quality = MAP_QUALITY if name.startswith("maps/") else WEBP_QUALITY
                write_staged(folder / name, webp_bytes(image, UNIT_IMAGE_SIDE, quality))
            for group in ("units", "drivers"):
                for position, unit in enumerate(getattr(layer, group)):
                    page(f"{m}/{layer.slug}/{unit.channel}/index.md", render_unit(model, layer, position, group))
    atomic_write(out / "mkdocs.yml", render_mkdocs_yml(manifest).encode("utf-8"))
    old = out / "docs.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / "docs").exists():
        (out / "docs").rename(old)
    staging.rename(out / "docs")
    shutil.rmtree(old, ignore_errors=True)
    return pages
