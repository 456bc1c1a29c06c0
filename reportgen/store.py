"""The content-addressed store under ``OUT/.cache`` and atomic file writes.

A render is stored as ``renders/<k[:2]>/<k>.png`` (lossless master) plus ``<k>.json`` (its
facts). The JSON is written last and carries the PNG's sha256, so it is the "done" marker: an entry
whose JSON is missing, unreadable or does not match its PNG is a miss and is rendered again.
Keys hash everything that changes the pixels (see ``render_key``), so a repeated build is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .images import decode, png_bytes

# Bump when the meaning of a render changes (parameterization, transforms, objective, loop).
RENDER_ALGO_VERSION = 2


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


TMP_SUFFIX = ".tmp"


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; a second holder is refused at once, not queued.

    Inside, temporary files left by a killed writer are removed: only finished files remain.

    Raises:
        OutputDirError: another process holds the lock.
    """
    import fcntl

    from .errors import OutputDirError

    handle = open(Path(folder) / ".reportgen.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirError(
                f"--out {folder} is busy: another reportgen process is writing into it; "
                "wait for it to finish or choose another --out"
            ) from None
        for stale in Path(folder).rglob(f".*{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        handle.close()  # closing releases the lock


def canonical_key(spec: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``spec``."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredRender:
    """A render found in (or just written to) the store."""

    key: str
    meta: dict[str, Any]
    png: Path

    def image(self) -> np.ndarray:
        return decode(self.png.read_bytes())


class Store:
    """Content-addressed results under ``root`` (normally ``OUT/.cache``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def render_key(model: str, weights_digest: str, layer: str, channel: int, settings: dict, seed: int,
                   preprocess: dict, unit: dict | None = None) -> str:
        """The key of one unit render: every input that changes its pixels, and the algorithm version.
        ``unit`` says what is optimized (default: the whole channel)."""
        return canonical_key({
            "v": RENDER_ALGO_VERSION, "model": model, "weights": weights_digest, "layer": layer,
            "unit": unit or {"kind": "channel", "index": channel}, "settings": settings, "seed": seed,
            "preprocess": preprocess,
        })

    def _paths(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_render(self, key: str) -> StoredRender | None:
        """The stored render for ``key``, or ``None`` when it is missing or corrupt."""
        meta_path, png_path = self._paths("renders", key, ".json"), self._paths("renders", key, ".png")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = png_path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("png_sha256") != hashlib.sha256(data).hexdigest():
            return None
        return StoredRender(key, meta, png_path)

    def put_render(self, key: str, image: np.ndarray, meta: dict[str, Any]) -> StoredRender:
        """Store a render: the PNG master first, then its JSON (the done marker)."""
        data = png_bytes(image)
        png_path = self._paths("renders", key, ".png")
        atomic_write(png_path, data)
        meta = {**meta, "png_sha256": hashlib.sha256(data).hexdigest(), "reportgen": __version__}
        atomic_write(self._paths("renders", key, ".json"), json.dumps(meta, indent=1).encode())
        return StoredRender(key, meta, png_path)

    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """Stored arrays (analysis results) for ``key``, or ``None`` if missing or corrupt."""
        path = self._paths("analysis", key, ".npz")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError):
            return None

    def put_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(self._paths("analysis", key, ".npz"), buffer.getvalue())

    def put_image(self, image: np.ndarray) -> str:
        """Store a picture (e.g. a reference image thumbnail) by content; returns its key."""
        data = png_bytes(image)
        key = hashlib.sha256(data).hexdigest()
        path = self._paths("images", key, ".png")
        if not path.exists():
            atomic_write(path, data)
        return key

    def image_path(self, key: str) -> Path:
        return self._paths("images", key, ".png")
