"""Speed against the peers, whole process from a cold start; and how reportgen's render time grows.

Against the peers (the default): the same units of tf_efficientnet_lite0 (real weights; by default
channels 0-3 of blocks.1.0, blocks.3.1 and blocks.5.3) at the same canvas size and step budget
(128 px, 128 steps), each tool run as a fresh process, tools alternating over ``--reps`` rounds:

- ``reportgen build`` with channel renders only (``--neurons 0 --variants 0 --classes 0 --dreams 0``),
  with the ``standard`` preset's recipe and with the ``quick`` one: everything the command does
  (imports, model load, reference analysis, receptive fields, renders, pages and the site);
- torch-lucent: load the model the same way, render ``--peer-batch`` units a call (``render_vis``
  with a batched image and a sum of channel objectives, as its docs show), save PNGs;
- torch-dreams and horama: one unit a call, as their docs show, save PNGs.

The peers normalize their images for ImageNet-trained models (lucent and torch-dreams with
ImageNet's mean and std, horama to (-2.5, 2.5)); tf_efficientnet_lite0 was trained on [-1, 1], so
each peer gets the model fed the way it was trained (a pre-hook maps lucent's and torch-dreams'
normalization to the model's own; horama's value range is set to the model's). Prints the median
wall time of each tool, every tool's time over each reportgen recipe's, and where reportgen's time
went (its manifest's stage timings; "rest" is process start, imports, pages and the site).

``--scaling``: reportgen alone, in this process: seconds per unit as the batch, the canvas and
the layer's depth grow.

Peers install in a venv of their own: see benchmarks/requirements-peers.txt.

    OMP_WAIT_POLICY=PASSIVE peers/bin/python benchmarks/speed.py [--reps 3] [--steps 128] [--size 128]
        [--tools reportgen-standard,reportgen-quick,torch-lucent] [--threads 2] [--scaling]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # horama's progress bars
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reportgen.config import PRESETS, RenderSettings  # noqa: E402
from reportgen.layers import FeatureTap  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.render import render_channels, unit_seed  # noqa: E402
from reportgen.optvis.transforms import normalize  # noqa: E402

MODEL = "tf_efficientnet_lite0"
LAYERS = "blocks.1.0,blocks.3.1,blocks.5.3"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # lucent's and torch-dreams' normalization


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


@contextmanager
def fed_as_trained(loaded, mean=IMAGENET[0], std=IMAGENET[1]):
    """While a peer that normalizes with ``mean``/``std`` runs, the model gets its input mapped to
    its own normalization (a forward pre-hook), so the peer optimizes the network fed the way it
    was trained."""
    m_in, s_in = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (loaded.preprocess.mean, loaded.preprocess.std))
    handle = loaded.module.register_forward_pre_hook(lambda _m, args: (((args[0] * s_in + m_in) - m) / s, *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def run_reportgen(loaded, layer, units, size, steps, seed=0, samples=PRESETS["quick"].samples, **overrides):
    """reportgen's render loop with ``samples`` random transforms a step (by default the quick
    preset's) and any other ``RenderSettings`` fields in ``overrides``."""
    settings = RenderSettings(size=size, steps=steps, samples=samples, **overrides)
    results = render_channels(loaded, layer, units, settings, seed=seed)
    return [r.image for r in results]


def run_lucent(loaded, layer, units, size, steps, seed=0, batch=1):
    """lucent, ``batch`` units a ``render_vis`` call (a batched image, one channel objective per item)."""
    from lucent.optvis import objectives, param, render

    images = []
    for start in range(0, len(units), batch):
        part = units[start:start + batch]
        seed_peer(seed, layer, part[0])
        name = layer.replace(".", "_")
        objective = sum((objectives.channel(name, c, batch=i) for i, c in enumerate(part)), start=0) \
            if len(part) > 1 else objectives.channel(name, part[0])
        with fed_as_trained(loaded):
            out = render.render_vis(loaded.module, objective, param_f=lambda: param.image(size, batch=len(part)),
                                    thresholds=(steps,), show_image=False, progress=False)
        images.extend((out[0] * 255).round().astype(np.uint8))
    return images


def run_torch_dreams(loaded, layer, units, size, steps, seed=0):
    from torch_dreams import Dreamer

    dreamer = Dreamer(loaded.module, quiet=True, device="cpu")
    target = module(loaded.module, layer)
    images = []
    for c in units:
        seed_peer(seed, layer, c)
        with fed_as_trained(loaded):  # torch-dreams normalizes with ImageNet's mean and std
            image_param = dreamer.render(layers=[target], width=size, height=size, iters=steps,
                                         custom_func=lambda outputs, c=c: -outputs[0][:, c].mean())
        rgb = image_param.to_chw_tensor().detach().clamp(0, 1).permute(1, 2, 0).numpy()
        images.append((rgb * 255).round().astype(np.uint8))
    return images


def run_horama(loaded, layer, units, size, steps, seed=0):
    from horama import fourier

    target = module(loaded.module, layer)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (loaded.preprocess.mean, loaded.preprocess.std))
    low, high = float(((0 - mean) / std).min()), float(((1 - mean) / std).max())  # the model's input range
    images = []
    for c in units:
        seed_peer(seed, layer, c)
        captured = {}
        handle = target.register_forward_hook(lambda _m, _i, out: captured.__setitem__("x", out))

        def objective(crops):
            loaded.module(crops)  # horama's crops are in the model's value range
            return captured["x"][:, c].mean()

        try:
            image, _alpha = fourier(objective, total_steps=steps, image_size=size, model_input_size=size,
                                    values_range=(low, high), device="cpu")
        finally:
            handle.remove()
        rgb = (image.detach() * std + mean).clamp(0, 1)  # model space back to [0, 1]
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


def high_frequency_share(image):
    grey = image.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = grey.shape
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
    return power[np.hypot(fy, fx) > 0.25].sum() / max(power.sum(), 1e-12)


# ------------------------------------------------------------------ whole processes, alternating

def peer_process(args) -> None:
    """``--child TOOL``: load the model, render every unit with TOOL, save PNGs into ``--out``."""
    from PIL import Image

    torch.set_num_threads(args.threads)
    loaded = load_model(MODEL, "auto", "cpu")
    units = list(range(args.units))
    extra = {"batch": args.peer_batch} if args.child == "torch-lucent" else {}
    for layer in args.layers.split(","):
        for c, image in zip(units, TOOLS[args.child](loaded, layer, units, args.size, args.steps, **extra)):
            Image.fromarray(image).save(os.path.join(args.out, f"{layer}-{c}.png"))


def tool_command(tool, args, out):
    if tool.startswith("reportgen-"):
        return [sys.executable, "-m", "reportgen", "build", "--preset", tool.removeprefix("reportgen-"),
                "--layers", args.layers, "--units", str(args.units), "--size", str(args.size), "--steps",
                str(args.steps), "--neurons", "0", "--variants", "0", "--classes", "0", "--dreams", "0",
                "--threads", str(args.threads), "--out", os.path.join(out, "report"), "-q"]
    return [sys.executable, os.path.abspath(__file__), "--child", tool, "--layers", args.layers, "--units",
            str(args.units), "--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
            "--peer-batch", str(args.peer_batch), "--out", out]


def compare(args) -> None:
    tools = [t for t in args.tools.split(",") if t]
    seconds = {t: [] for t in tools}
    stages = {t: [] for t in tools if t.startswith("reportgen-")}
    for rep in range(args.reps):
        for tool in tools:  # alternate: background load hits every tool alike
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                subprocess.run(tool_command(tool, args, out), check=True, stdout=subprocess.DEVNULL)
                seconds[tool].append(time.perf_counter() - started)
                if tool in stages:
                    timings = json.loads(open(os.path.join(out, "report", "manifest.json")).read())["models"][0]["timings"]
                    stages[tool].append(timings)
            print(f"[{rep + 1}/{args.reps}] {tool}: {seconds[tool][-1]:.1f} s", file=sys.stderr, flush=True)
    units = args.units * len(args.layers.split(","))
    print(f"{MODEL} (real weights), {units} units ({args.units} of each of {args.layers}), {args.size} px, "
          f"{args.steps} steps, a fresh process each run, {args.reps} alternating rounds, {args.threads} threads, "
          f"lucent {args.peer_batch} units a call; torch {torch.__version__}")
    recipes = [t for t in tools if t.startswith("reportgen-")]
    print("| tool | wall s (median) | s/unit | " + " | ".join(f"× {r}" for r in recipes) + " |")
    print("|---|---|---|" + "---|" * len(recipes))
    for tool in tools:
        median = statistics.median(seconds[tool])
        ratios = " | ".join(f"{median / statistics.median(seconds[r]):.2f}" for r in recipes)
        print(f"| {tool} | {median:.1f} | {median / units:.2f} | {ratios} |")
    for tool, runs in stages.items():
        parts = {k: statistics.median(r[k] for r in runs) for k in ("load", "analysis", "render")}
        rest = statistics.median(seconds[tool]) - sum(parts.values())
        print(f"{tool}: load {parts['load']:.1f} s, analysis {parts['analysis']:.1f} s, renders {parts['render']:.1f} s, "
              f"rest (process start, imports, pages, site) {rest:.1f} s")


# ------------------------------------------------------------------ reportgen alone, in process

def _channels(loaded, layer, size):
    with torch.no_grad(), FeatureTap(loaded.module, [layer], stop=True) as tap:
        return tap.run(torch.zeros(1, 3, size, size))[layer].shape[1]


def scaling(args) -> None:
    torch.set_num_threads(args.threads)
    loaded = load_model(MODEL, "auto", "cpu")
    units, layer = list(range(8)), "blocks.2.1"
    print(f"\nreportgen alone ({layer} unless varied, {args.size} px, {args.steps} steps, quick recipe): seconds per unit")
    print("| varied | value | s/unit |\n|---|---|---|")
    width = _channels(loaded, layer, args.size)  # more units than channels: ids repeat (timing only)
    for n in (1, 4, 8, 16, 32):
        started = time.perf_counter()
        run_reportgen(loaded, layer, [i % width for i in range(n)], args.size, args.steps)
        print(f"| units optimized together (one batch) | {n} | {(time.perf_counter() - started) / n:.3f} |", flush=True)
    for size in (64, 128, 224):
        started = time.perf_counter()
        run_reportgen(loaded, layer, units, size, args.steps)
        print(f"| canvas px | {size} | {(time.perf_counter() - started) / len(units):.3f} |", flush=True)
    for depth in ("bn1", "blocks.2.1", "blocks.4.1", "blocks.5.3", "bn2"):
        started = time.perf_counter()
        run_reportgen(loaded, depth, units, args.size, args.steps)
        print(f"| layer depth | {depth} | {(time.perf_counter() - started) / len(units):.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=LAYERS)
    parser.add_argument("--units", type=int, default=4, help="channels 0..N-1 of each layer")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tools", default="reportgen-standard,reportgen-quick,torch-lucent")
    parser.add_argument("--peer-batch", type=int, default=4, help="units a lucent call renders together")
    parser.add_argument("--scaling", action="store_true", help="reportgen alone: how time grows")
    parser.add_argument("--child", choices=[t for t in TOOLS if t != "reportgen"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peer_process(args)
    elif args.scaling:
        scaling(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
