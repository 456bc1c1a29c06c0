"""What the circuit parts of a report cost: seconds of a build and bytes of its site, part by part.

Reads a built report (by default the default build: `reportgen build --out report`) and prints two
tables:

- seconds: the renders each part adds (from the seconds stored with every render: drivers' channel
  renders, neuron groups, accentuations), and the analysis steps it adds, timed again here on a
  fresh store (circuits: attributions and votes; groups: the NMF pass);
- bytes of the built site per shown unit: driver pages and their pictures, the Circuit section of
  unit pages, top images' crops, the neuron groups (renders, presence maps, their section of the
  layer pages) and accentuations (pictures and their section).

    python benchmarks/parts.py [REPORT]
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

from reportgen.analysis import stage  # noqa: E402
from reportgen.analysis.references import skimage_references  # noqa: E402
from reportgen.layers import catalogue, select_layers  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.store import Store  # noqa: E402


def section(html: str, heading_id: str) -> int:
    """Bytes of the section whose ``<h2>`` has the id ``heading_id``, to the next ``<h2``."""
    found = re.search(rf'<h2[^>]* id="{re.escape(heading_id)}"', html)
    if found is None:
        return 0
    start = found.start()
    end = html.find("<h2", start + 4)
    return len(html[start:end if end > 0 else len(html)].encode())


def render_seconds(out: Path, model: dict) -> dict[str, tuple[int, float]]:
    """(count, seconds) of the renders each part added, from the metadata stored with each render."""
    layers = model["layers"]
    keys = {"drivers' channel renders": [u["key"] for layer in layers for u in layer.get("drivers", [])],
            "neuron groups": [g["key"] for layer in layers for g in layer.get("groups", [])],
            "accentuations": [(u.get("accentuation") or {}).get("key") for layer in layers for u in layer["units"]]}
    seconds = {}
    for part, found in keys.items():  # only this report's renders (a store can hold others)
        metas = [json.loads((out / ".cache" / "renders" / key[:2] / f"{key}.json").read_text()) for key in found if key]
        seconds[part] = (len(metas), sum(meta.get("seconds", 0.0) for meta in metas))
    return seconds


def analysis_seconds(model: dict) -> dict[str, float]:
    """The analysis steps of the circuit parts, timed on a fresh store."""
    loaded = load_model(model["name"], model["settings"]["weights"], "cpu")
    layers = select_layers(catalogue(loaded.module, loaded.preprocess.input_size),
                           ",".join(layer["module"] for layer in model["layers"]))
    modules = [layer.module for layer in layers]
    units = {layer["module"]: [u["channel"] for u in layer["units"]] for layer in model["layers"]}
    refs = skimage_references()
    used = list(range(model["references"]["used"]))
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        started = time.perf_counter()
        stage.circuits(loaded, layers, units, refs, used, store)
        circuits = time.perf_counter() - started
        started = time.perf_counter()
        stage.groups(loaded, modules, model["settings"]["groups"], refs, used, store)
        groups = time.perf_counter() - started
    return {"circuits (inputs of every shown unit, votes of the late layers' units)": circuits,
            "neuron groups (the NMF of every layer)": groups}


def site_bytes(out: Path, model: dict) -> dict[str, int]:
    """Bytes of the built site by part."""
    site = out / "site" / model["slug"]
    parts = dict.fromkeys(["driver pages", "drivers' pictures (renders, maps)", "Circuit sections of unit pages",
                           "crops beside top images", "neuron groups: renders and presence maps",
                           "neuron groups: their section of the layer pages", "accentuations: pictures",
                           "accentuations: their section of unit pages"], 0)
    for layer in model["layers"]:
        folder = site / layer["slug"]
        shown = {u["channel"] for u in layer["units"]}
        for driver in layer.get("drivers", []):
            c = driver["channel"]
            parts["driver pages"] += (folder / str(c) / "index.html").stat().st_size
            pictures = [folder / "img" / f"{c}.webp", *(folder / "maps").glob(f"*-{c}.webp")]
            parts["drivers' pictures (renders, maps)"] += sum(p.stat().st_size for p in pictures
                                                             if p.is_file() and not p.name.startswith("group-"))
        for c in shown:
            html = (folder / str(c) / "index.html").read_text()
            parts["Circuit sections of unit pages"] += section(html, "circuit")
            parts["accentuations: their section of unit pages"] += section(html, "what-it-sees-in-its-top-image")
            accent = folder / "img" / f"{c}-accentuation.webp"
            parts["accentuations: pictures"] += accent.stat().st_size if accent.is_file() else 0
        parts["crops beside top images"] += sum(p.stat().st_size for p in (folder / "crops").glob("*.webp")
                                                if int(p.stem.split("-")[1]) in shown)
        parts["neuron groups: renders and presence maps"] += sum(
            p.stat().st_size for p in [*(folder / "groups").glob("*.webp"), *(folder / "maps").glob("group-*.webp")])
        parts["neuron groups: their section of the layer pages"] += section(
            (folder / "index.html").read_text(), "neuron-groups")
    return parts


def main(out: Path) -> None:
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    shown = sum(len(layer["units"]) for layer in model["layers"])
    print(f"{model['name']}: {len(model['layers'])} layers, {shown} shown units, "
          f"{sum(len(layer.get('drivers', [])) for layer in model['layers'])} driver pages\n")
    print("| part | renders | seconds |\n|---|---|---|")
    for part, (count, seconds) in render_seconds(out, model).items():
        print(f"| {part} | {count} | {seconds:.1f} |")
    for part, seconds in analysis_seconds(model).items():
        print(f"| analysis: {part} | | {seconds:.1f} |")
    parts = site_bytes(out, model)
    total = sum(file.stat().st_size for file in (out / "site").rglob("*") if file.is_file())
    print("\n| part | site kB | per shown unit (kB) |\n|---|---|---|")
    for part, size in parts.items():
        print(f"| {part} | {size / 1e3:.0f} | {size / 1e3 / shown:.1f} |")
    added = sum(parts.values())
    print(f"| all of them | {added / 1e3:.0f} | {added / 1e3 / shown:.1f} |")
    print(f"| the whole site | {total / 1e3:.0f} | {total / 1e3 / shown:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "report"))
