"""Will a whole-model report fit GitHub Pages (1 GB)? Measure per-unit site bytes, then project.

Builds a small sample report (real tf_efficientnet_lite0 weights, 224 px renders as the standard and
full presets make them), measures what each unit adds to the built site (its WebP, its unit page,
its share of the search index) and what each layer page costs, and projects the size of a `full`
report (every unit of every catalogue layer) of the models named on the command line.

    python benchmarks/site_size.py [inception_v3 resnet50 ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

from reportgen.config import resolve_build_config  # noqa: E402
from reportgen.layers import catalogue  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.pipeline import build  # noqa: E402

PAGES_LIMIT = 1e9


def measure(out: Path) -> dict:
    """Bytes of the built site by kind: fixed theme assets, per unit, per layer."""
    site = out / "site"
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    units = [(layer, u) for layer in model["layers"] for u in layer["units"]]
    m = model["slug"]
    webp = [(site / m / layer["slug"] / "img" / f"{u['channel']}.webp").stat().st_size for layer, u in units]
    unit_pages = [(site / m / layer["slug"] / str(u["channel"]) / "index.html").stat().st_size for layer, u in units]
    layer_html = [(site / m / layer["slug"] / "index.html").read_text() for layer in model["layers"]]
    layer_pages = [len(html.encode()) for html in layer_html]
    # A tile's share of a layer page: the grid's bytes over its tiles (full builds have thousands).
    grid = [html[html.index('class="rg-grid"'):] for html in layer_html]
    tile = sum(len(g.split("</article>")[0].encode()) for g in grid) / len(units)
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    search = (site / "search" / "search_index.json").stat().st_size
    pages = len(units) + len(layer_pages) + 2
    variable = sum(webp) + sum(unit_pages) + sum(layer_pages) + search
    return {"total": total, "fixed": total - variable, "webp": sum(webp) / len(units),
            "unit_page": sum(unit_pages) / len(units), "tile": tile,
            "layer_page": sum(layer_pages) / len(layer_pages) - tile * len(units) / len(layer_pages),
            "search_per_page": search / pages, "units": len(units), "layers": len(layer_pages)}


def project(sizes: dict, units: int, layers: int) -> float:
    per_unit = sizes["webp"] + sizes["unit_page"] + sizes["search_per_page"] + sizes["tile"]
    return sizes["fixed"] + units * per_unit + layers * (sizes["layer_page"] + sizes["search_per_page"])


def main(models: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        build(resolve_build_config({"layers": "0,4,9,-1", "units": "8", "size": 224, "steps": 128, "out": out}))
        sizes = measure(out)
    print(f"sample: tf_efficientnet_lite0, {sizes['units']} units at 224 px in {sizes['layers']} layers; "
          f"site {sizes['total'] / 1e6:.1f} MB")
    print("| per | bytes |\n|---|---|")
    print(f"| render (WebP, 224 px) | {sizes['webp']:,.0f} |\n| unit page (HTML) | {sizes['unit_page']:,.0f} |")
    print(f"| layer page (HTML, without tiles) | {sizes['layer_page']:,.0f} |\n| tile on a layer page | {sizes['tile']:,.0f} |")
    print(f"| search index, per page | {sizes['search_per_page']:,.0f} |")
    print(f"| theme, assets, home (fixed) | {sizes['fixed']:,.0f} |\n")
    print("| model (`--preset full --layers all`) | layers | units | projected site | share of 1 GB |\n|---|---|---|---|---|")
    for name in models:
        loaded = load_model(name, "none", "cpu")
        layers = catalogue(loaded.module, loaded.preprocess.input_size)
        units = sum(layer.channels for layer in layers)
        size = project(sizes, units, len(layers))
        print(f"| {name} | {len(layers)} | {units:,} | {size / 1e6:,.0f} MB | {size / PAGES_LIMIT:.0%} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["inception_v3", "tf_efficientnet_lite0", "resnet50", "convnext_tiny"])
