"""Timed builds at the ``standard`` preset on a GPU: renders a second and peak GPU memory.

Two builds, each into a fresh folder and a cold cache, in this process (so that torch's peak
memory counters see them):

1. ``tf_efficientnet_lite0`` with its bundled real weights, the default layers, 16 units each;
2. ``inception_v3`` with random weights, every catalogue layer (16), 32 units each.

Both use the standard preset's canvas (224 px) and its two random transforms a step; ``--steps``
(default 128, a quarter of the preset's 512) keeps the two together under ten minutes on one GPU,
and the extras (centre neurons, variants, dreams, class visualizations) are off by default so
that the figure is the channel renders' own. A render's time grows linearly with its steps.
``scripts/gpu-check.sh`` runs this after the CUDA tests.

    python benchmarks/gpu.py [--steps 128] [--extras] [--device cuda]
    python benchmarks/gpu.py --device cpu --smoke     # the code path, at toy scale, anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from reportgen.config import resolve_build_config  # noqa: E402
from reportgen.pipeline import build  # noqa: E402

BUILDS = {  # label -> build flags (as resolve_build_config takes them)
    "tf_efficientnet_lite0, real weights, default layers x 16 units": {
        "model": ["tf_efficientnet_lite0"], "weights": "auto", "units": "16"},
    "inception_v3, random weights, all 16 layers x 32 units": {
        "model": ["inception_v3"], "weights": "none", "layers": "all", "units": "32"},
}
NO_EXTRAS = {"neurons": "0", "variants": "0", "dreams": 0, "classes": 0}
SMOKE = {"test_efficientnet, random weights (smoke)": {
    "model": ["test_efficientnet"], "weights": "none", "layers": "0,-1", "units": "4"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--extras", action="store_true", help="the preset's neurons, variants, dreams and classes too")
    parser.add_argument("--smoke", action="store_true", help="one tiny model at 32 px and 4 steps")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; run with --device cpu --smoke to check the code path")
    builds = SMOKE if args.smoke else BUILDS
    extra = {} if args.extras else NO_EXTRAS
    size = {"size": 32, "steps": 4} if args.smoke else {"steps": args.steps}
    device = torch.cuda.get_device_name(args.device) if cuda else "CPU"
    print(f"standard preset (2 transforms a step), {size.get('size', 224)} px, {size['steps']} steps, "
          f"{'with' if args.extras else 'without'} the extras, on {device}")
    print("| build | renders | render s | renders/s | units/s | total s | peak GPU memory (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for label, flags in builds.items():
        with tempfile.TemporaryDirectory() as tmp:
            config = resolve_build_config({**flags, **extra, **size, "preset": "standard", "device": args.device,
                                           "site": False, "out": Path(tmp) / "report"})
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(args.device)
            started = time.perf_counter()
            report = build(config)
            total = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated(args.device) / 2**30 if cuda else float("nan")
            unit_count = json.loads((Path(tmp) / "report" / "manifest.json").read_text())["models"][0]["unit_count"]
        seconds = report.timings.get("render", float("nan"))
        print(f"| {label} | {report.rendered} | {seconds:.1f} | {report.rendered / seconds:.2f} | "
              f"{unit_count / seconds:.2f} | {total:.1f} | {peak:.2f} |", flush=True)
        if report.exit_code:
            print(f"  failed: {', '.join(report.failed[:5])}", file=sys.stderr)


if __name__ == "__main__":
    main()
