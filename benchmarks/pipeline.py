"""Where the time of a build goes, and what a repeated build costs.

Runs the same ``reportgen build`` twice into a fresh folder (the second run should find every
render in the cache) and prints a table of seconds per stage. Defaults to the default build
(tf_efficientnet_lite0, real weights, quick preset) under the command line's own OpenMP default
(a short spin, unless ``OMP_WAIT_POLICY`` is set: docs/performance.md#shared-cpus); pass build
flags to change it, e.g.

    python benchmarks/pipeline.py --layers 0,-1 --units 4
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

from reportgen.cli import main  # noqa: E402  (first: sets the command line's OpenMP default before torch loads)
from reportgen.config import resolve_build_config  # noqa: E402
from reportgen.pipeline import build  # noqa: E402


def flags_from(argv: list[str]) -> dict:
    """Parse build flags with the real CLI parser, without running the command."""
    ctx = main.commands["build"].make_context("build", list(argv))
    p = ctx.params
    return {"model": list(p["models"]), "weights": p["weights"], "preset": p["preset"], "size": p["size"],
            "steps": p["steps"], "device": p["device"], "seed": p["seed"], "layers": p["layers"],
            "units": p["units"], "neurons": p["neurons"], "variants": p["variants"], "classes": p["classes"],
            "dreams": p["dreams"], "images": p["images"], "batch": p["batch"]}


def kinds_of(report) -> dict[str, int]:
    """How many renders of each kind the build's manifest holds."""
    import json

    model = json.loads((report.out / "manifest.json").read_text())["models"][0]
    counts = {"channel": 0, "neuron": 0, "second-seed": 0, "negative": 0, "diversity": 0, "dream": 0, "inversion": 0}
    for layer in model["layers"]:
        for unit in layer["units"]:
            counts["channel"] += unit["key"] is not None
            counts["neuron"] += bool(unit["neuron"] and unit["neuron"].get("key"))
            for kind in ("second_seed", "negative", "diversity"):
                counts[kind.replace("_", "-")] += unit[kind] is not None
        for dream in layer["dreams"]:
            counts["dream"] += dream["dream"] is not None
            counts["inversion"] += dream["inversion"] is not None
    counts["class"] = sum(entry["key"] is not None for entry in model["classes"])
    return counts


def run(argv: list[str]) -> None:
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_build_config({**flags_from(argv), "out": Path(tmp) / "report"})
        started = time.perf_counter()
        first = build(config)
        first_wall = time.perf_counter() - started
        counts = kinds_of(first)
        started = time.perf_counter()
        second = build(config)
        second_wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = ["load", "analysis", "render", "partial sites", "pages", "mkdocs"]
    print(f"build {' '.join(argv) or '(defaults)'}: {first.rendered} renders made, then {second.cached} from cache")
    print("| stage | first build (s) | repeated build (s) |")
    print("|---|---|---|")
    for stage in stages:
        print(f"| {stage} | {first.timings.get(stage, 0):.1f} | {second.timings.get(stage, 0):.1f} |")
    print(f"| total (wall) | {first_wall:.1f} | {second_wall:.1f} |")
    print(f"repeated / first: {second_wall / first_wall:.1%}; peak resident memory {peak_mb:.0f} MB; "
          f"site {first.site.bytes / 1e6:.1f} MB, {first.site.pages} pages")
    print("\n| kind of render (first build) | renders | seconds | s/render |\n|---|---|---|---|")
    for kind, seconds in first.kind_seconds.items():
        print(f"| {kind} | {counts.get(kind, 0)} | {seconds:.1f} | {seconds / max(counts.get(kind, 0), 1):.2f} |")



if __name__ == "__main__":
    run(sys.argv[1:])
