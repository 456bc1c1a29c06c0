"""Reference image sets: scikit-image's bundled photographs by default, or a user's folder.

Images are listed first and decoded lazily, batch by batch, so a large folder never sits in
memory. Files that cannot be decoded are skipped and counted.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UsageError

# Real photographs that ship inside scikit-image (no download needed), in display order.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "clock",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ReferenceImage:
    """One reference image: a display name and where to read it from."""

    name: str
    source: str  # "skimage:<name>" or a file path


@dataclass
class ReferenceSet:
    """The listed images, a digest of the listing, and how many files were skipped as unreadable."""

    images: list[ReferenceImage]
    digest: str
    label: str
    skipped: list[str] = field(default_factory=list)

    def subset(self, indices: list[int]) -> "ReferenceSet":
        """The images ``indices`` of this set, in that order (for passes over the few images shown)."""
        return ReferenceSet([self.images[i] for i in indices], self.digest, self.label)


def skimage_references() -> ReferenceSet:
    """scikit-image's bundled photographs that load without a network."""
    import skimage
    from skimage import data

    images = []
    for name in SKIMAGE_PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(data, name)()
        except Exception:  # a data file that would need a download
            continue
        images.append(ReferenceImage(name, f"skimage:{name}"))
    digest = hashlib.sha256(f"skimage {skimage.__version__} {[i.name for i in images]}".encode()).hexdigest()[:16]
    return ReferenceSet(images, digest, f"scikit-image photographs ({len(images)})")


def folder_references(folder: Path) -> ReferenceSet:
    """All images below ``folder`` (recursively), sorted by path.

    Raises:
        UsageError: the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--images {folder} is a file; give a folder of images (searched recursively)")
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: no such folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UsageError(f"--images {folder}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    h = hashlib.sha256()
    for p in paths:
        stat = p.stat()
        h.update(f"{p.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    images = [ReferenceImage(str(p.relative_to(folder)), str(p)) for p in paths]
    return ReferenceSet(images, h.hexdigest()[:16], f"{folder} ({len(images)} files)")


MIN_SIDE = 16  # smaller images carry too little to measure a unit on


def load_rgb(ref: ReferenceImage) -> np.ndarray:
    """Decode one reference image as uint8 RGB [H, W, 3].

    Raises:
        OSError / ValueError / SyntaxError: unreadable, truncated or not an image.
        Image.DecompressionBombError: larger than Pillow's pixel limit.
    """
    if ref.source.startswith("skimage:"):
        from skimage import data

        array = np.asarray(getattr(data, ref.source.split(":", 1)[1])())
        image = Image.fromarray(array)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # half the limit is already too big
            with Image.open(ref.source) as opened:
                opened.load()
                image = opened
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"too small ({image.width}x{image.height} px)")
    if image.mode == "I;16" or image.mode == "I":
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 256).clip(0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"))


def center_crop(rgb: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    """timm's evaluation crop: resize the short side to size / crop_pct (bicubic), crop the centre."""
    image = Image.fromarray(rgb)
    scale = (size / crop_pct) / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def iter_batches(refs: ReferenceSet, size: int, crop_pct: float, batch: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (indices, uint8 [b, size, size, 3]) batches; unreadable images are skipped and
    appended to ``refs.skipped``."""
    indices: list[int] = []
    arrays: list[np.ndarray] = []
    for i, ref in enumerate(refs.images):
        try:
            arrays.append(center_crop(load_rgb(ref), size, crop_pct))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            refs.skipped.append(f"{ref.name}: {exc if isinstance(exc, ValueError) else type(exc).__name__}")
            continue
        indices.append(i)
        if len(arrays) == batch:
            yield indices, np.stack(arrays)
            indices, arrays = [], []
    if arrays:
        yield indices, np.stack(arrays)
