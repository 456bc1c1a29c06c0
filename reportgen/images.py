"""Image encoding: lossless PNG masters, WebP for the site, and small picture helpers."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

WEBP_QUALITY = 88


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 [H, W, 3] array (the master kept in the cache)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def webp_bytes(rgb: np.ndarray, max_side: int | None = None, quality: int = WEBP_QUALITY) -> bytes:
    """WebP for the site, optionally downscaled so its longer side is at most ``max_side``."""
    image = Image.fromarray(rgb)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes to uint8 RGB [H, W, 3]."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
