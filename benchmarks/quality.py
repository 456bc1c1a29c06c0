"""Render quality against the peers: early, middle and late layers, with held-out perturbations.

Renders the same units of tf_efficientnet_lite0 (real weights) with reportgen (its ``standard``
preset's recipe: two random transforms a step), torch-lucent, torch-dreams and horama, each peer
called as benchmarks/speed.py calls it (as its documentation shows), at the same canvas size and
step budget (by default the ``standard`` preset's: 224 px, 512 steps), and measures the final
uint8 images the same way for every tool:

- activation ratio: the unit's mean activation (pre-activation) on the render / its best mean
  activation over the scikit-image reference photographs (higher: the render excites it more);
- perturbed ratio: the same ratio after each held-out perturbation of
  ``reportgen.optvis.trust.perturb`` (crop, shift, blur: the ones the site's trust panel applies),
  averaged over the three; a pattern survives them, adversarial pixel noise does not;
- both again with the render shown at the model's input size (bilinear resize, as the reference
  photographs are seen), when the canvas is another size: a render should excite its unit at the
  model's own resolution too;
- high-frequency energy: the share of spectral power above a quarter of the sampling rate,
  relative to the reference photographs (about 1: as smooth as photos; higher: noisier);
- seconds per unit: wall time of the tool's renders / units (tools alternate within each
  seed, so background load hits them alike).

Each of ``--seeds N`` renders every unit again from another seed (reportgen's build seed; the
peers' global torch, numpy and random generators, seeded per unit), and the medians pool every
unit of every seed: with 4 units a layer, a median moved by a fifth between two unseeded runs.

The table has one row per tool and layer, plus an "all layers" row per tool (medians over every
unit of every layer; seconds summed over layers). Ratios are medians over the units whose best
photograph mean is positive. Peers install in a venv of their own: see
benchmarks/requirements-peers.txt.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 peers/bin/python benchmarks/quality.py \\
        [--layers blocks.1.0,blocks.3.1,blocks.5.3] [--units 8] [--size 224] [--steps 512] \\
        [--seeds 1] [--tools reportgen,torch-lucent,torch-dreams,horama] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import statistics
import sys
import time
import traceback

from speed import TOOLS, activations, high_frequency_share, run_reportgen  # also sets OMP_WAIT_POLICY, quiets warnings

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reportgen.analysis.activations import analyze_references  # noqa: E402
from reportgen.analysis.references import center_crop, load_rgb, skimage_references  # noqa: E402
from reportgen.config import PRESETS  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.trust import PERTURBATIONS, perturb, to_tensor  # noqa: E402

# reportgen as its standard preset renders: two random transforms a step; and, to compare, with its
# random scales kept at the canvas's (as before they reached the model's input size, RenderSettings).
TOOLS = {**TOOLS, "reportgen": functools.partial(run_reportgen, samples=PRESETS["standard"].samples),
         "reportgen-canvas-scale": functools.partial(run_reportgen, samples=PRESETS["standard"].samples,
                                                     reach_input=False)}


def perturbed_images(images, kind):
    """``images`` (uint8 [H, W, 3]) after the held-out perturbation ``kind``, back as uint8."""
    batch = perturb(to_tensor(images), kind).clamp(0, 1)
    return list((batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def at_size(images, side):
    """``images`` (uint8 [H, W, 3]) resized to ``side`` px (bilinear), back as uint8."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=side < x.shape[-1])
    return list((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def measure(loaded, layer, units, images, ref_max):
    """Per unit (those with a positive photograph best): plain ratio, perturbed ratio, and both at the
    model's input size; per image: hf."""
    side = loaded.preprocess.input_size[1]
    ratios, perturbed, hf = measure_at(loaded, layer, units, images, ref_max)
    if images[0].shape[0] == side:
        return ratios, perturbed, ratios, perturbed, hf
    ratios_in, perturbed_in, _ = measure_at(loaded, layer, units, at_size(images, side), ref_max)
    return ratios, perturbed, ratios_in, perturbed_in, hf


def measure_at(loaded, layer, units, images, ref_max):
    """Per unit (those with a positive photograph best): plain ratio, perturbed ratio; per image: hf."""
    plain = activations(loaded, layer, units, images)
    moved = [activations(loaded, layer, units, perturbed_images(images, kind)) for kind in PERTURBATIONS]
    ratios, perturbed = [], []
    for i, c in enumerate(units):
        if ref_max[c] > 0:
            ratios.append(plain[i] / ref_max[c])
            perturbed.append(statistics.fmean(m[i] for m in moved) / ref_max[c])
    return ratios, perturbed, [high_frequency_share(im) for im in images]


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="blocks.1.0,blocks.3.1,blocks.5.3")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--size", type=int, default=PRESETS["standard"].size)
    parser.add_argument("--steps", type=int, default=PRESETS["standard"].steps)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tools", default=",".join(t for t in TOOLS if t != "reportgen-canvas-scale"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core); 1 lets two runs share a 2-core machine")
    args = parser.parse_args()
    layers = [layer for layer in args.layers.split(",") if layer]
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; use some of {', '.join(TOOLS)}")
    torch.set_num_threads(args.threads)

    loaded = load_model("tf_efficientnet_lite0", "auto", "cpu")
    units = list(range(args.units))
    refs = skimage_references()
    ref_max = {layer: analyze_references(loaded, [layer], refs).layers[layer].max_mean for layer in layers}
    photos = [center_crop(load_rgb(r), args.size, 0.875) for r in refs.images]
    hf_photos = statistics.median(high_frequency_share(p) for p in photos)

    seconds = {(t, layer): [] for t in tools for layer in layers}
    results = {}  # (tool, layer) -> (ratios, perturbed ratios, hf shares), pooled over seeds
    failures = {}  # (tool, layer) -> the error it raised
    for seed in range(args.seeds):
        for layer in layers:
            for tool in tools:  # alternate tools within each seed: noise hits them alike
                if (tool, layer) in failures:
                    continue
                started = time.perf_counter()
                try:
                    images = TOOLS[tool](loaded, layer, units, args.size, args.steps, seed=seed)
                except Exception as error:  # a peer that fails on this model: report it, run the rest
                    failures[(tool, layer)] = f"{type(error).__name__}: {error}"
                    traceback.print_exc(file=sys.stderr)
                    continue
                seconds[(tool, layer)].append(time.perf_counter() - started)
                measured = measure(loaded, layer, units, images, ref_max[layer])
                for into, values in zip(results.setdefault((tool, layer), ([], [], [], [], [])), measured):
                    into.extend(values)
                ratios, perturbed, _, perturbed_in, hf = measured
                print(f"[seed {seed + 1}/{args.seeds}] {tool} {layer}: {seconds[(tool, layer)][-1]:.1f} s; "
                      f"ratio {median(ratios):.2f}, perturbed {median(perturbed):.2f} ({median(perturbed_in):.2f} "
                      f"at the input size), hf {median(hf) / hf_photos:.2f}", file=sys.stderr, flush=True)

    versions = ", ".join(f"{t} {version(t)}" for t in tools)
    print(f"tf_efficientnet_lite0 (real weights); layers {', '.join(layers)}; {len(units)} units each "
          f"(channels 0–{len(units) - 1}); {args.size} px; {args.steps} steps; {args.seeds} seed(s), "
          f"tools alternating; {torch.get_num_threads()} threads; torch {torch.__version__}; {versions}")
    side = loaded.preprocess.input_size[1]
    print(f"| tool | layer | units measured | median activation ratio | median ratio under held-out "
          f"perturbations (crop, shift, blur) | the same two shown at {side} px | high-frequency energy vs "
          "photos | s/unit |")
    print("|---|---|---|---|---|---|---|---|")
    for tool in tools:
        rows = [layer for layer in layers if (tool, layer) in results]
        pooled = ([], [], [], [], [])
        for layer in rows:
            measured = results[(tool, layer)]
            for into, values in zip(pooled, measured):
                into.extend(values)
            ratios, perturbed, ratios_in, perturbed_in, hf = measured
            per_unit = statistics.median(seconds[(tool, layer)]) / len(units)
            print(f"| {tool} | {layer} | {len(ratios)}/{len(units) * args.seeds} | {median(ratios):.2f} | "
                  f"{median(perturbed):.2f} | {median(ratios_in):.2f} / {median(perturbed_in):.2f} | "
                  f"{median(hf) / hf_photos:.2f} | {per_unit:.2f} |")
        if rows:
            seeds_done = min(len(seconds[(tool, layer)]) for layer in rows)
            total = statistics.median(sum(seconds[(tool, layer)][r] for layer in rows) for r in range(seeds_done))
            print(f"| {tool} | all layers | {len(pooled[0])}/{len(units) * len(layers) * args.seeds} | "
                  f"{median(pooled[0]):.2f} | {median(pooled[1]):.2f} | {median(pooled[2]):.2f} / "
                  f"{median(pooled[3]):.2f} | {median(pooled[4]) / hf_photos:.2f} | "
                  f"{total / (len(units) * len(rows)):.2f} |")
    for (tool, layer), error in failures.items():
        print(f"\n{tool} failed on {layer}: {error}")


if __name__ == "__main__":
    main()
