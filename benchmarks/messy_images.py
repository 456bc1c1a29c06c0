"""Image folders like a user's: distinct photographs, plus the odd and broken files found beside them.

Shared by ``benchmarks/references_memory.py`` and ``tests/test_robustness.py``:

- ``write_photos``: distinct, real-ish photographs (crops, flips, colour shifts and noise of
  scikit-image's bundled photographs) of varied sizes and formats, in nested folders;
- ``write_odd_files``: unusual but valid images that must be used (grayscale, 16-bit, RGBA, CMYK);
- ``write_bad_files``: files with an image suffix that must be skipped (corrupt, empty, truncated,
  a decompression bomb, too small).

Each returns the names it wrote, relative to the folder given, as reportgen names them.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
FORMATS = (("jpg", "JPEG", {"quality": 90}), ("png", "PNG", {}), ("webp", "WEBP", {"quality": 85}))


def write_photos(folder: Path, count: int, seed: int = 0, sides: tuple[int, int] = (160, 640)) -> list[str]:
    """Write ``count`` distinct photographs below ``folder``; image ``i`` is the same for every count.

    Each is a random crop of one of scikit-image's photographs, maybe flipped, resized to a random
    width and height within ``sides``, colour-shifted per channel, with Gaussian noise, saved as JPEG,
    PNG or WebP in one of 40 nested folders.
    """
    from skimage import data

    sources = [getattr(data, name)() for name in PHOTOS]
    names = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        source = sources[rng.integers(len(sources))]
        h, w = source.shape[:2]
        ch, cw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = source[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.2:
            crop = crop[::-1]
        size = (int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[0], sides[1] + 1)))
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BILINEAR), np.float32)
        pixels = pixels * rng.uniform(0.7, 1.3, 3) + rng.uniform(-30, 30, 3)
        pixels += rng.normal(0, rng.uniform(2, 12), pixels.shape)
        suffix, fmt, options = FORMATS[rng.integers(len(FORMATS))]
        name = f"set{i % 4}/part{i % 10}/photo{i:05d}.{suffix}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name, fmt, **options)
        names.append(name)
    return names


def write_odd_files(folder: Path, rng: np.random.Generator, side: int = 70) -> list[str]:
    """Valid images in unusual modes, which must be used: grayscale, 16-bit, RGBA, CMYK TIFF and JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    noise = lambda *shape: rng.random((side, side, *shape))  # noqa: E731
    Image.fromarray((noise() * 255).astype(np.uint8), "L").save(folder / "grey.png")
    Image.fromarray((noise() * 65535).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray((noise(4) * 255).astype(np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray((noise(3) * 255).astype(np.uint8)).convert("CMYK").save(folder / "print.tif")
    Image.fromarray((noise(3) * 255).astype(np.uint8)).convert("CMYK").save(folder / "print.jpg")
    return sorted(["grey.png", "deep16.png", "alpha.png", "print.tif", "print.jpg"])


def write_bad_files(folder: Path, rng: np.random.Generator) -> list[str]:
    """Files with an image suffix that must be skipped: truncated, empty, not an image, a corrupt PNG,
    a decompression bomb (header only) and an image too small to measure (2×2 px)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((90, 90, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    bad = {
        "truncated.jpg": buffer.getvalue()[: len(buffer.getvalue()) // 3],
        "empty.png": b"",
        "notes.webp": b"these are not pixels",
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "bomb.png": png_header_only(40000, 40000),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "tiny.png")
    return sorted([*bad, "tiny.png"])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size (a decompression bomb) without the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
