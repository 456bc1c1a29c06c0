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

from .images import decode, webp_bytes
from .store import Store, atomic_write

UNIT_IMAGE_SIDE = 512  # published render size cap (the lossless master stays in the cache)
REF_THUMB_SIDE = 224
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
    return env


_ENV: jinja2.Environment | None = None


def _template(name: str) -> jinja2.Template:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name)


def unit_image(model: dict, layer: dict, channel: int) -> str:
    """Path (relative to OUT) of a unit's published render."""
    return f"docs/{model['slug']}/{layer['slug']}/img/{channel}.webp"


def render_home(manifest: dict) -> str:
    return _template("home.md.j2").render(manifest=manifest, models=manifest["models"])


def render_model(model: dict) -> str:
    return _template("model.md.j2").render(model=model)


def render_layer(model: dict, index: int) -> str:
    layers = model["layers"]
    return _template("layer.md.j2").render(
        model=model, layer=layers[index],
        prev=layers[index - 1] if index > 0 else None,
        next=layers[index + 1] if index + 1 < len(layers) else None,
    )


def render_unit(model: dict, layer: dict, position: int) -> str:
    units = layer["units"]
    unit = units[position]
    best = next((r for r in model["references"]["images"] if r["index"] == unit.get("ref_best_image")), None)
    return _template("unit.md.j2").render(
        model=model, layer=layer, unit=unit, best=best, curve=_curve_svg(unit["curve"]),
        prev=units[position - 1] if position > 0 else None,
        next=units[position + 1] if position + 1 < len(units) else None,
    )


def render_mkdocs_yml(manifest: dict) -> str:
    return _template("mkdocs.yml.j2").render(manifest=manifest, models=manifest["models"])


def _curve_svg(curve: list, width: int = 320, height: int = 120) -> str:
    """The optimization curve (score per step) as a small inline SVG."""
    if len(curve) < 2:
        return ""
    steps = [s for s, _ in curve]
    values = [v for _, v in curve]
    lo, hi = min(values), max(values)
    span, last = (hi - lo) or 1.0, max(steps[-1], 1)
    points = " ".join(f"{4 + (width - 8) * s / last:.1f},{height - 4 - (height - 8) * (v - lo) / span:.1f}" for s, v in curve)
    return (
        f'<svg class="rg-curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="score from {values[0]:.2f} to {values[-1]:.2f} over {steps[-1] + 1} steps">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{points}"/></svg>'
    )


def write_docs(out: Path, manifest: dict, store: Store) -> int:
    """Write ``OUT/docs`` and ``OUT/mkdocs.yml`` for ``manifest``; returns the number of pages.

    Images come from the store's lossless masters (renders) and reference thumbnails.
    """
    out = Path(out)
    staging = out / "docs.new"
    shutil.rmtree(staging, ignore_errors=True)
    pages = 0

    def page(relative: str, text: str) -> None:
        nonlocal pages
        atomic_write(staging / relative, text.encode("utf-8"))
        pages += 1

    page("index.md", render_home(manifest))
    for asset in ("reportgen.css", "reportgen.js"):
        atomic_write(staging / "assets" / asset, resources.files("reportgen.templates").joinpath(asset).read_bytes())
    for model in manifest["models"]:
        m = model["slug"]
        page(f"{m}/index.md", render_model(model))
        for ref in model["references"]["images"]:
            if ref.get("thumb"):
                rgb = decode(store.image_path(ref["image"]).read_bytes())
                atomic_write(staging / m / "refs" / ref["thumb"], webp_bytes(rgb, REF_THUMB_SIDE))
        for i, layer in enumerate(model["layers"]):
            page(f"{m}/{layer['slug']}/index.md", render_layer(model, i))
            for position, unit in enumerate(layer["units"]):
                page(f"{m}/{layer['slug']}/{unit['channel']}/index.md", render_unit(model, layer, position))
                stored = store.get_render(unit["key"]) if unit["key"] else None
                if stored is not None:
                    target = out / unit["render"]
                    relative = target.relative_to(out / "docs")
                    atomic_write(staging / relative, webp_bytes(stored.image(), UNIT_IMAGE_SIDE))
    atomic_write(out / "mkdocs.yml", render_mkdocs_yml(manifest).encode("utf-8"))
    old = out / "docs.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / "docs").exists():
        (out / "docs").rename(old)
    staging.rename(out / "docs")
    shutil.rmtree(old, ignore_errors=True)
    return pages
