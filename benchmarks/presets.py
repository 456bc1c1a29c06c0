"""What the presets' numbers buy: render quality against steps, canvas size and the diversity weight.

On tf_efficientnet_lite0 with its real weights, for early, middle and late layers, prints:

1. per step budget (and canvas size): the median activation ratio, the median ratio under the
   held-out perturbations of ``optvis.trust`` and seconds per unit — where more steps stop paying;
2. per diversity weight: how alike a unit's variants still are (mean pairwise Pearson correlation
   of their layer profiles, as ``trust.seed_agreement`` measures) against what their activation
   ratio costs — where the variants differ without losing the unit;
3. per channel objective (``--objective``) and image penalty (``--penalty``) at a few weights: the
   median ratio, the median perturbed ratio and the high-frequency energy of the renders relative
   to the reference photographs (as benchmarks/speed.py measures it): what each regularizer buys
   in smoothness and what it costs in activation.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/presets.py [--units 4] [--steps 32,64,128,256]
        [--penalties 'none;objective=l2norm;tv=1;tv=5'] [--skip steps,diversity,penalties]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from speed import high_frequency_share  # noqa: E402  (benchmarks/speed.py: the same measure for every table)

from reportgen.analysis.activations import analyze_references  # noqa: E402
from reportgen.analysis.references import center_crop, load_rgb, skimage_references  # noqa: E402
from reportgen.config import RenderSettings, parse_penalties  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.objectives import Channel  # noqa: E402
from reportgen.optvis.render import render_channels, render_diversity  # noqa: E402
from reportgen.optvis.trust import layer_profiles, perturbed_scores  # noqa: E402

LAYERS = ("blocks.1.0", "blocks.3.1", "blocks.5.3")


def ratios(loaded, layer, units, results, ref_max):
    plain = [r.activation / ref_max[c] for r, c in zip(results, units)]
    perturbed = perturbed_scores(loaded, Channel(layer, tuple(units)), [r.image for r in results])
    robust = [float(np.mean([perturbed[k][i] for k in perturbed])) / ref_max[c] for i, c in enumerate(units)]
    return plain, robust


def steps_table(loaded, ref_max, units, steps_list, sizes):
    print("| canvas px | steps | median ratio | median perturbed ratio | s/unit |\n|---|---|---|---|---|")
    for size in sizes:
        for steps in steps_list:
            plain, robust, seconds = [], [], 0.0
            for layer in LAYERS:
                started = time.perf_counter()
                results = render_channels(loaded, layer, units, RenderSettings(size=size, steps=steps))
                seconds += time.perf_counter() - started
                p, r = ratios(loaded, layer, units, results, ref_max[layer])
                plain += p
                robust += r
            print(f"| {size} | {steps} | {statistics.median(plain):.2f} | {statistics.median(robust):.2f} | "
                  f"{seconds / (len(units) * len(LAYERS)):.2f} |")


def diversity_table(loaded, ref_max, units, weights, size, steps):
    print("\n| diversity weight | variants' mean pairwise r | median ratio of the variants |\n|---|---|---|")
    for weight in weights:
        similarity, plain = [], []
        for layer in LAYERS:
            groups = render_diversity(loaded, layer, units, RenderSettings(size=size, steps=steps), weight=weight)
            for c, group in zip(units, groups):
                profiles = layer_profiles(loaded, layer, [r.image for r in group])
                keep = torch.ones(profiles.shape[1], dtype=torch.bool)
                keep[c] = False
                corr = np.corrcoef(profiles[:, keep].numpy())
                similarity.append(float(corr[np.triu_indices(len(group), 1)].mean()))
                plain += [r.activation / ref_max[layer][c] for r in group]
        print(f"| {weight:g} | {statistics.mean(similarity):.2f} | {statistics.median(plain):.2f} |")


PENALTY_ROWS = "none;objective=l2norm;tv=64;tv=256;l1=16;l2=16;l2=64;blur=256;blur=1024"


def penalties_table(loaded, ref_max, units, rows, size, steps):
    refs = skimage_references()
    hf_photos = statistics.median(high_frequency_share(center_crop(load_rgb(r), size, 0.875)) for r in refs.images)
    print("\n| objective and penalty | median ratio | median perturbed ratio | high-frequency energy vs photos |\n"
          "|---|---|---|---|")
    for row in rows.split(";"):
        settings = RenderSettings(size=size, steps=steps)
        if row.startswith("objective="):
            settings = dataclasses.replace(settings, objective=row.partition("=")[2])
        elif row != "none":
            settings = dataclasses.replace(settings, penalties=parse_penalties(row))
        plain, robust, hf = [], [], []
        for layer in LAYERS:
            results = render_channels(loaded, layer, units, settings)
            p, r = ratios(loaded, layer, units, results, ref_max[layer])
            plain += p
            robust += r
            hf += [high_frequency_share(result.image) for result in results]
        print(f"| {row} | {statistics.median(plain):.2f} | {statistics.median(robust):.2f} | "
              f"{statistics.median(hf) / hf_photos:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--steps", default="32,64,128,256")
    parser.add_argument("--sizes", default="128")
    parser.add_argument("--weights", default="0,1,4,8,16")
    parser.add_argument("--penalties", default=PENALTY_ROWS, help="rows of the penalty table, ';'-separated")
    parser.add_argument("--skip", default="", help="comma list of tables to skip: steps, diversity, penalties")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model("tf_efficientnet_lite0", "auto", "cpu")
    stats = analyze_references(loaded, list(LAYERS), skimage_references())
    ref_max = {layer: stats.layers[layer].max_mean for layer in LAYERS}
    units = list(range(args.units))
    print(f"tf_efficientnet_lite0, layers {', '.join(LAYERS)}, channels 0-{args.units - 1}, "
          f"{torch.get_num_threads()} threads")
    if "steps" not in args.skip:
        steps_table(loaded, ref_max, units, [int(s) for s in args.steps.split(",")],
                    [int(s) for s in args.sizes.split(",")])
    if "diversity" not in args.skip:
        diversity_table(loaded, ref_max, units, [float(w) for w in args.weights.split(",")], 128, 128)
    if "penalties" not in args.skip:
        penalties_table(loaded, ref_max, units, args.penalties, 128, 128)


if __name__ == "__main__":
    main()
