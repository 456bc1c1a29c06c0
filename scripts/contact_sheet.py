"""A contact sheet of a built report: for an early, a middle and a late layer, each unit that has
every kind of render, in columns channel, centre neuron, negative and diversity (3 variants).

    python scripts/contact_sheet.py OUT docs/images/contact-sheet.webp

A centre neuron is shown as its receptive-field box, enlarged (outside the box its canvas is grey
by design). It reads the manifest and the cache's lossless masters only, and prints each tile's
contrast (pixel standard deviation; a neuron's inside its box) so a flat tile cannot pass unnoticed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reportgen.images import is_flat
from reportgen.manifest import UnitEntry, read_manifest
from reportgen.store import Store

TILE = 128
LABEL_W = 120  # the row labels' column
HEADER = ("channel", "neuron, field zoomed", "negative", "diversity: 3 variants")


def tiles_of(store: Store, unit: UnitEntry) -> list[np.ndarray]:
    """The unit's channel, neuron (cropped to its box), negative and diversity renders."""
    channel, neuron, negative, diversity = (store.get_render(key).image() for key in (
        unit.key, unit.neuron.key, unit.negative.key, unit.diversity.key))
    top, left, bottom, right = unit.neuron.box
    return [channel, neuron[top:bottom + 1, left:right + 1], negative, diversity]


def main(out: Path, target: Path) -> None:
    manifest = read_manifest(out)
    if manifest is None:
        sys.exit(f"no manifest of this reportgen version in {out}: run `reportgen build --out {out}` first")
    store = Store(manifest.store or out / ".cache")
    layers = manifest.models[0].layers
    rows, labels, flat = [], [], 0
    for layer in (layers[1], layers[len(layers) // 2], layers[-1]):
        for unit in layer.units:
            if unit.failed or not (unit.neuron and unit.neuron.key and unit.negative and unit.diversity):
                continue
            tiles = tiles_of(store, unit)
            contrast = [round(float(t.std()), 1) for t in tiles]
            flat += any(is_flat(t) for t in tiles)
            print(f"{layer.module} unit {unit.channel}: std {contrast}{'  FLAT' if any(is_flat(t) for t in tiles) else ''}")
            rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize(
                (TILE * t.shape[1] // t.shape[0], TILE), Image.LANCZOS)) for t in tiles], axis=1))
            labels.append(f"{layer.module}\nunit {unit.channel}")
    gap, header_h = 4, 16
    width = LABEL_W + rows[0].shape[1]
    sheet = Image.new("RGB", (width, header_h + len(rows) * (TILE + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(HEADER):
        draw.text((LABEL_W + i * TILE + 2, 2), text, fill="black")
    for r, (row, label) in enumerate(zip(rows, labels)):
        top = header_h + r * (TILE + gap)
        sheet.paste(Image.fromarray(row), (LABEL_W, top))
        draw.multiline_text((4, top + TILE // 2 - 12), label, fill="black")
    sheet.save(target, **({"quality": 85} if target.suffix.lower() in (".webp", ".jpg", ".jpeg") else {}))
    print(f"wrote {target}: {len(rows)} rows ({' | '.join(HEADER)}); flat rows: {flat}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
