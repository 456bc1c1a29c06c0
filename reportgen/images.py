"""Image encoding: lossless PNG masters, WebP for the site, and small picture helpers."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

WEBP_QUALITY = 88
WEBP_METHOD = 2  # encoder effort: 2 encodes a 224 px image in half the time of 4 for 2% more bytes


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 [H, W, 3] array (the master kept in the cache)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


ENCODED_KEPT = 20_000  # WebP encodings remembered in a process (a build writes its site after each phase)
_encoded: dict[tuple, bytes] = {}


def webp_bytes(rgb: np.ndarray, max_side: int | None = None, quality: int = WEBP_QUALITY) -> bytes:
    """WebP for the site, optionally downscaled so its longer side is at most ``max_side``. The
    same pixels with the same options are encoded once per process: a build writes its site again
    after each phase, and most of its images have not changed."""
    import hashlib

    rgb = np.ascontiguousarray(rgb)
    key = (hashlib.blake2b(rgb.data, digest_size=16).digest(), rgb.shape, str(rgb.dtype), max_side, quality)
    if key not in _encoded:
        if len(_encoded) >= ENCODED_KEPT:
            _encoded.clear()
        _encoded[key] = _encode(rgb, max_side, quality)
    return _encoded[key]


def _encode(rgb: np.ndarray, max_side: int | None, quality: int) -> bytes:
    image = Image.fromarray(rgb)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=WEBP_METHOD)
    return buffer.getvalue()


def shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` downscaled (Lanczos) so its longer side is at most ``max_side``."""
    image = Image.fromarray(rgb)
    image.thumbnail((max_side, max_side), Image.LANCZOS)
    return np.asarray(image)


STRETCH_BELOW = 192  # a render whose 0.5-99.5 percentile range is narrower than this gets stretched
FLAT_STD = 6.0  # a render whose pixel standard deviation (0..255) is below this is flat


def is_flat(rgb: np.ndarray) -> bool:
    """True when a uint8 image has almost no contrast (a grey or single-colour field)."""
    return float(rgb.astype(np.float64).std()) < FLAT_STD


def stretch(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """For display: a low-contrast render stretched linearly so its 0.5-99.5 percentile range fills
    0..255 (all channels together, so hues keep their balance). Returns ``(image, stretched)``;
    full-range and flat images come back unchanged (stretching a flat field would only magnify
    noise and hide that it is flat)."""
    low, high = np.percentile(rgb, [0.5, 99.5])
    if high - low >= STRETCH_BELOW or is_flat(rgb):
        return rgb, False
    scaled = (rgb.astype(np.float64) - low) * (255.0 / max(high - low, 1.0))
    return scaled.round().clip(0, 255).astype(np.uint8), True


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes to uint8 RGB [H, W, 3]."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


# Anchors of a dark-to-bright perceptual colour map (close to matplotlib's "inferno"), interpolated.
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 255, 164]], dtype=np.float64)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB with a dark-to-bright colour map."""
    position = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(_HEAT) - 1)
    low = np.minimum(position.astype(int), len(_HEAT) - 2)
    frac = (position - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).round().astype(np.uint8)


def heat_overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Where a unit fires on a photo: the photo in grey, under the perceptual colour map of
    ``heat_colors`` with an opacity equal to the heat. ``heat`` (values in [0, 1], any resolution)
    is upsampled bilinearly to the photo's size; 0 leaves the grey photo, 1 is the map's top colour."""
    h, w = rgb.shape[:2]
    resized = np.asarray(Image.fromarray(np.nan_to_num(heat).astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    alpha = np.clip(resized, 0.0, 1.0)[..., None]
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # luma: colour is left to the map
    base = np.repeat(grey[..., None], 3, axis=-1) * 0.8 + 25  # a little flattened, so the map stands out
    return (base * (1 - alpha) + heat_colors(alpha[..., 0]) * alpha).round().clip(0, 255).astype(np.uint8)


def draw_box(rgb: np.ndarray, box: tuple[int, int, int, int], color=(0, 255, 255), width: int = 1) -> np.ndarray:
    """A copy of ``rgb`` with the outline of the inclusive box (top, left, bottom, right), clipped to
    the image, drawn on it."""
    out = rgb.copy()
    h, w = out.shape[:2]
    top, left = min(max(box[0], 0), h - 1), min(max(box[1], 0), w - 1)
    bottom, right = min(max(box[2], top), h - 1), min(max(box[3], left), w - 1)
    for t in range(width):
        out[max(top - t, 0), left:right + 1] = color
        out[min(bottom + t, h - 1), left:right + 1] = color
        out[top:bottom + 1, max(left - t, 0)] = color
        out[top:bottom + 1, min(right + t, w - 1)] = color
    return out


def zoom(rgb: np.ndarray, box: tuple[int, int, int, int], side: int = 256) -> np.ndarray:
    """The inclusive box of ``rgb``, enlarged so its longer side is ``side`` (nearest-neighbour for
    small crops, so single pixels stay visible; Lanczos otherwise)."""
    top, left, bottom, right = box
    crop = Image.fromarray(np.ascontiguousarray(rgb[top:bottom + 1, left:right + 1]))
    scale = side / max(crop.size)
    method = Image.NEAREST if max(crop.size) * 4 <= side else Image.LANCZOS
    return np.asarray(crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), method))


def boxes_on_window(rgb: np.ndarray, window: tuple[int, int, int, int], boxes: list[tuple[tuple[int, int, int, int], tuple]],
                    side: int = 256) -> np.ndarray:
    """The inclusive ``window`` of ``rgb`` enlarged to ``side`` px (as ``zoom``), with each
    ``(box, colour)`` of ``boxes`` (in ``rgb``'s pixels) outlined on the enlargement in 2 px lines,
    so a field a few pixels wide stays visible."""
    top, left, bottom, right = window
    out = zoom(rgb, window, side)
    scale = out.shape[0] / (bottom - top + 1)
    for (b_top, b_left, b_bottom, b_right), colour in boxes:
        scaled = (round((b_top - top) * scale), round((b_left - left) * scale),
                  round((b_bottom - top + 1) * scale) - 1, round((b_right - left + 1) * scale) - 1)
        out = draw_box(out, scaled, color=colour, width=2)
    return out
