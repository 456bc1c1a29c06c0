"""A whole-model site: is the search index small and a layer page light at 10,000 units?

Takes a built report (``reportgen build --out REPORT``), clones its unit pages to ``--units``
pages (each copy renamed to a new channel, as a ``full`` inception_v3 report has about 10,400) and
builds the site with mkdocs in a scratch folder. Prints the build's wall and CPU time, the size of
``search/search_index.json`` (which a reader's first search downloads; also gzipped, as Pages serves
it) and of the ``file://`` index,
and, for a layer page of ``--tiles`` units rendered by reportgen's own template, its HTML bytes, its
images and how many of them load lazily with their size given.

    python benchmarks/site_scale.py REPORT [--units 10000] [--tiles 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

from reportgen import pages  # noqa: E402
from reportgen.manifest import read_manifest  # noqa: E402
from reportgen.site import build_site  # noqa: E402


def clone_units(report: Path, work: Path, count: int) -> int:
    """Copy REPORT's docs and mkdocs.yml into ``work``, then add unit pages until there are
    ``count``: copies of the existing ones, each under a new channel number. Returns the count."""
    shutil.copytree(report / "docs", work / "docs")
    shutil.copy(report / "mkdocs.yml", work / "mkdocs.yml")
    units = sorted(p for p in (work / "docs").glob("*/*/*/index.md"))
    made, channel = len(units), 100000
    while made < count:
        for source in units:
            if made >= count:
                break
            old = source.parent.name
            text = re.sub(rf"\bunit {old}\b", f"unit {channel}", source.read_text(encoding="utf-8"))
            target = source.parent.parent / str(channel) / "index.md"
            target.parent.mkdir()
            target.write_text(text.replace(f"../{old}/", f"../{channel}/"), encoding="utf-8")
            made, channel = made + 1, channel + 1
    return made


def big_layer_page(report: Path, tiles: int) -> dict:
    """A layer page of ``tiles`` units from REPORT's manifest (its first layer's units repeated under
    new channels), rendered by reportgen's template: bytes, images, lazy and sized images."""
    manifest = read_manifest(report)
    if manifest is None:
        sys.exit(f"no manifest of this reportgen version in {report}: run `reportgen build --out {report}` first")
    model = manifest.models[0]
    layer = model.layers[0]
    base = layer.units
    layer.units = [dataclasses.replace(base[i % len(base)], channel=i) for i in range(tiles)]
    layer.channels = max(layer.channels, tiles)
    text = pages.render_layer(model, 0)
    import markdown

    html = markdown.markdown(text.split("---", 2)[2], extensions=["attr_list", "md_in_html", "tables", "admonition"])
    images = re.findall(r"<img [^>]*>", html)
    lazy = sum(1 for i in images if 'loading="lazy"' in i and "width=" in i and "height=" in i)
    return {"bytes": len(html.encode()), "images": len(images), "lazy_sized": lazy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--tiles", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = clone_units(args.report, work, args.units)
        cpu = time.process_time()
        info = build_site(work, strict=False)
        cpu = time.process_time() - cpu
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        index = work / "site" / "search" / "search_index.json"
        file_index = work / "site" / "search" / "search_index.js"
        gzipped = len(gzip.compress(index.read_bytes(), 6))
        print("| unit pages | pages built | mkdocs wall s | CPU s | peak RSS MB | search_index.json MB | gzipped MB "
              "| file:// index MB |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {made} | {info.pages} | {info.seconds:.0f} | {cpu:.0f} | {peak_mb:.0f} | {index.stat().st_size / 1e6:.1f} "
              f"| {gzipped / 1e6:.2f} | {file_index.stat().st_size / 1e6:.1f} |")
    page = big_layer_page(args.report, args.tiles)
    print(f"\n| layer page tiles | HTML KB | images | lazy, with width and height |\n|---|---|---|---|\n"
          f"| {args.tiles} | {page['bytes'] / 1e3:.0f} | {page['images']} | {page['lazy_sized']} |")


if __name__ == "__main__":
    sys.exit(main())
