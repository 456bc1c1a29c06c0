"""Where the time of a build goes, and what a repeated build costs.

Runs the same ``reportgen build`` twice into a fresh folder (the second run should find every
render in the cache) and prints a table of seconds per stage. Defaults to the default build
(tf_efficientnet_lite0, real weights, quick preset); pass build flags to change it, e.g.

    python benchmarks/pipeline.py --layers 0,-1 --units 4
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads collapse on a shared box
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")

from reportgen.cli import main  # noqa: E402
from reportgen.config import resolve_build_config  # noqa: E402
from reportgen.pipeline import build  # noqa: E402


def flags_from(argv: list[str]) -> dict:
    """Parse build flags with the real CLI parser, without running the command."""
    ctx = main.commands["build"].make_context("build", list(argv))
    p = ctx.params
    return {"model": list(p["models"]), "weights": p["weights"], "preset": p["preset"], "size": p["size"],
            "steps": p["steps"], "device": p["device"], "seed": p["seed"], "layers": p["layers"],
            "units": p["units"], "neurons": p["neurons"], "images": p["images"], "batch": p["batch"]}


def run(argv: list[str]) -> None:
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_build_config({**flags_from(argv), "out": Path(tmp) / "report"})
        started = time.perf_counter()
        first = build(config)
        first_wall = time.perf_counter() - started
        started = time.perf_counter()
        second = build(config)
        second_wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stages = ["load", "analysis", "render", "pages", "mkdocs"]
    print(f"build {' '.join(argv) or '(defaults)'}: {first.rendered} renders made, then {second.cached} from cache")
    print("| stage | first build (s) | repeated build (s) |")
    print("|---|---|---|")
    for stage in stages:
        print(f"| {stage} | {first.timings.get(stage, 0):.1f} | {second.timings.get(stage, 0):.1f} |")
    print(f"| total (wall) | {first_wall:.1f} | {second_wall:.1f} |")
    print(f"repeated / first: {second_wall / first_wall:.1%}; peak resident memory {peak_mb:.0f} MB; "
          f"site {first.site.bytes / 1e6:.1f} MB, {first.site.pages} pages")


if __name__ == "__main__":
    run(sys.argv[1:])
