"""Speed (and the image quality that goes with it) against the peers, in one run.

Renders the same units of tf_efficientnet_lite0 (real weights) with reportgen, torch-lucent,
torch-dreams and horama at the same canvas size and step budget, alternating tools over several
repetitions, and prints units per second, the ratio to reportgen, and two quality measures of the
final images, all measured the same way for every tool:

- activation ratio: the unit's mean activation on the render / its best mean activation over the
  scikit-image reference photographs (higher: the render excites the unit more);
- high-frequency energy: the share of spectral power above a quarter of the sampling rate,
  relative to the reference photographs (about 1: as smooth as photos; higher: noisier).

Then reportgen alone: how time grows with units per layer, canvas size and layer depth.
Peers install in a venv of their own: see benchmarks/requirements-peers.txt.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/speed.py [--steps 64] [--size 128] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # horama's progress bars
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reportgen.analysis.activations import analyze_references  # noqa: E402
from reportgen.analysis.references import center_crop, load_rgb, skimage_references  # noqa: E402
from reportgen.config import PRESETS, RenderSettings  # noqa: E402
from reportgen.layers import FeatureTap  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.render import render_channels, unit_seed  # noqa: E402
from reportgen.optvis.transforms import normalize  # noqa: E402


def module(model, path):
    return dict(model.named_modules())[path]


# ------------------------------------------------------------------ the tools, one unit list each

def seed_peer(seed, layer, unit):
    """Seed every global generator a peer draws from (torch, numpy: lucent's transforms, random)
    for one unit's render, so its image depends only on (seed, layer, unit), not on what ran before."""
    value = unit_seed(seed, layer, unit) % 2**32
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def run_reportgen(loaded, layer, units, size, steps, seed=0, samples=PRESETS["quick"].samples):
    """reportgen's render loop with ``samples`` random transforms a step (by default the quick preset's)."""
    settings = RenderSettings(size=size, steps=steps, samples=samples)
    results = render_channels(loaded, layer, units, settings, seed=seed)
    return [r.image for r in results]


def run_lucent(loaded, layer, units, size, steps, seed=0):
    from lucent.optvis import param, render

    images = []
    for c in units:  # lucent's documented use: one render_vis call per unit
        seed_peer(seed, layer, c)
        out = render.render_vis(loaded.module, f"{layer.replace('.', '_')}:{c}", param_f=lambda: param.image(size),
                                thresholds=(steps,), show_image=False, progress=False)
        images.append((out[0][0] * 255).round().astype(np.uint8))
    return images


def run_torch_dreams(loaded, layer, units, size, steps, seed=0):
    from torch_dreams import Dreamer

    dreamer = Dreamer(loaded.module, quiet=True, device="cpu")
    # torch-dreams normalizes with ImageNet mean and std by default, which is what lite0 expects.
    target = module(loaded.module, layer)
    images = []
    for c in units:
        seed_peer(seed, layer, c)
        image_param = dreamer.render(layers=[target], width=size, height=size, iters=steps,
                                     custom_func=lambda outputs, c=c: -outputs[0][:, c].mean())
        rgb = image_param.to_chw_tensor().detach().clamp(0, 1).permute(1, 2, 0).numpy()
        images.append((rgb * 255).round().astype(np.uint8))
    return images


def run_horama(loaded, layer, units, size, steps, seed=0):
    from horama import fourier

    target = module(loaded.module, layer)
    images = []
    for c in units:
        seed_peer(seed, layer, c)
        captured = {}
        handle = target.register_forward_hook(lambda _m, _i, out: captured.__setitem__("x", out))

        def objective(crops):
            loaded.module(crops)  # horama's crops are already in the model's value range
            return captured["x"][:, c].mean()

        try:
            image, _alpha = fourier(objective, total_steps=steps, image_size=size, model_input_size=size,
                                    device="cpu")
        finally:
            handle.remove()
        rgb = image.detach()
        rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min() + 1e-8)  # horama returns model-space values
        images.append((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return images


TOOLS = {"reportgen": run_reportgen, "torch-lucent": run_lucent, "torch-dreams": run_torch_dreams,
         "horama": run_horama}


# ------------------------------------------------------------------ measures, the same for every tool

def activations(loaded, layer, units, images):
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad(), FeatureTap(loaded.module, [layer], stop=True, pre_activation=True) as tap:
        feats = tap.run(normalize(x, loaded.preprocess.mean, loaded.preprocess.std))[layer]
    return [float(feats[i, c].mean()) for i, c in enumerate(units)]


def _channels(loaded, layer, size):
    with torch.no_grad(), FeatureTap(loaded.module, [layer], stop=True) as tap:
        return tap.run(torch.zeros(1, 3, size, size))[layer].shape[1]


def high_frequency_share(image):
    grey = image.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = grey.shape
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    return power[np.hypot(fy, fx) > 0.25].sum() / max(power.sum(), 1e-12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="blocks.2.1")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--no-scaling", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    loaded = load_model("tf_efficientnet_lite0", "auto", "cpu")
    units = list(range(args.units))
    refs = skimage_references()
    tools = [t for t in args.tools.split(",") if t]
    if tools:
        compare(loaded, units, refs, args, tools)
    if not args.no_scaling:
        scaling(loaded, units, args)


def compare(loaded, units, refs, args, tools):
    ref_max = analyze_references(loaded, [args.layer], refs).layers[args.layer].max_mean
    photos = [center_crop(load_rgb(r), args.size, 0.875) for r in refs.images]
    hf_photos = statistics.median(high_frequency_share(p) for p in photos)
    seconds = {t: [] for t in tools}
    quality = {}
    for rep in range(args.reps):  # alternate tools within each repetition: noise hits them alike
        for tool in tools:
            started = time.perf_counter()
            images = TOOLS[tool](loaded, args.layer, units, args.size, args.steps)
            seconds[tool].append(time.perf_counter() - started)
            if rep == 0:
                acts = activations(loaded, args.layer, units, images)
                ratios = [a / ref_max[c] for a, c in zip(acts, units) if ref_max[c] > 0]
                hf = statistics.median(high_frequency_share(im) for im in images) / hf_photos
                quality[tool] = (statistics.median(ratios) if ratios else float("nan"), hf)
    base = len(units) / statistics.median(seconds["reportgen"]) if "reportgen" in seconds else None
    print(f"tf_efficientnet_lite0 {args.layer}, {len(units)} units, {args.size} px, {args.steps} steps, "
          f"{args.reps} alternating repetitions, {torch.get_num_threads()} threads")
    print("| tool | units/s (median) | reportgen is × faster | median activation ratio | high-frequency energy vs photos |")
    print("|---|---|---|---|---|")
    for tool in tools:
        ups = len(units) / statistics.median(seconds[tool])
        speedup = f"{base / ups:.1f}" if base else "—"
        ratio, hf = quality[tool]
        print(f"| {tool} | {ups:.3f} | {speedup} | {ratio:.2f} | {hf:.2f} |")


def scaling(loaded, units, args):
    print("\nreportgen alone: seconds per unit")
    print("| varied | value | s/unit |\n|---|---|---|")
    width = _channels(loaded, args.layer, args.size)  # more units than channels: ids repeat (timing only)
    for n in (1, 8, 32, 128):
        started = time.perf_counter()
        run_reportgen(loaded, args.layer, [i % width for i in range(n)], args.size, args.steps)
        print(f"| units optimized together (one batch) | {n} | {(time.perf_counter() - started) / n:.3f} |")
    for size in (64, 128, 224):
        started = time.perf_counter()
        run_reportgen(loaded, args.layer, units, size, args.steps)
        print(f"| canvas px | {size} | {(time.perf_counter() - started) / len(units):.3f} |")
    for layer in ("bn1", "blocks.2.1", "blocks.4.1", "blocks.5.3", "bn2"):
        started = time.perf_counter()
        run_reportgen(loaded, layer, units, args.size, args.steps)
        print(f"| layer depth | {layer} | {(time.perf_counter() - started) / len(units):.3f} |")


if __name__ == "__main__":
    main()
