"""The content-addressed store (``OUT/.cache``, another folder, or an fsspec URL) and atomic file writes.

A render is stored as ``renders/<k[:2]>/<k>.png`` (lossless master) plus ``<k>.json`` (its
facts). The JSON is written last and carries the PNG's sha256, so it is the "done" marker: an entry
whose JSON is missing, unreadable or does not match its PNG is a miss and is rendered again.
Keys hash everything that changes the pixels (``renders.render_key``), so a repeated build is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .images import decode, png_bytes


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a
    part. The file gets the mode ``open()`` would give it (0666 less the umask; mkstemp's is 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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
    """A render found in (or just written to) the store; ``image()`` reads its lossless master."""

    key: str
    meta: dict[str, Any]
    store: "Store"

    def image(self) -> np.ndarray:
        return decode(self.store.read("renders", self.key, ".png"))


class Store:
    """Content-addressed results under ``root``: a folder (normally ``OUT/.cache``) or an fsspec URL
    (``s3://bucket/report-cache``, ``gs://...``) that workers on other machines write into too.

    A folder is written with ``atomic_write`` (a temporary file renamed into place). A URL is
    written with one ``pipe_file`` per file, which object stores make visible whole or not at all.
    Either way a reader sees no part of a file, and keys are content addresses, so a retried
    worker that writes the same entry twice writes the same bytes.

    Raises:
        StoreError: the URL's protocol is unknown or its fsspec package is not installed.
    """

    def __init__(self, root: str | Path):
        text = str(root)
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.root = text
        self._fs = _filesystem(text) if "://" in text else None

    @property
    def remote(self) -> bool:
        return self._fs is not None

    def location(self, kind: str, key: str, suffix: str) -> str:
        """Where an entry lives: ``<root>/<kind>/<key[:2]>/<key><suffix>``."""
        return f"{self.root.rstrip('/')}/{kind}/{key[:2]}/{key}{suffix}"

    def read(self, kind: str, key: str, suffix: str) -> bytes:
        """The bytes of an entry. Raises ``OSError`` (``FileNotFoundError``) when there are none."""
        where = self.location(kind, key, suffix)
        if self._fs is None:
            return Path(where).read_bytes()
        try:
            return self._fs.cat_file(where)
        except FileNotFoundError:
            raise
        except Exception as exc:  # fsspec back ends raise their own errors for a missing object
            raise FileNotFoundError(where) from exc

    def write(self, kind: str, key: str, suffix: str, data: bytes) -> None:
        """Write an entry whole (see the class docstring)."""
        where = self.location(kind, key, suffix)
        if self._fs is None:
            atomic_write(Path(where), data)
        else:
            self._fs.pipe_file(where, data)

    def exists(self, kind: str, key: str, suffix: str) -> bool:
        where = self.location(kind, key, suffix)
        return Path(where).exists() if self._fs is None else bool(self._fs.exists(where))

    def get_render(self, key: str) -> StoredRender | None:
        """The stored render for ``key``, or ``None`` when it is missing or corrupt."""
        try:
            meta = json.loads(self.read("renders", key, ".json").decode("utf-8"))
            data = self.read("renders", key, ".png")
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("png_sha256") != hashlib.sha256(data).hexdigest():
            return None
        return StoredRender(key, meta, self)

    def put_render(self, key: str, image: np.ndarray, meta: dict[str, Any]) -> StoredRender:
        """Store a render: the PNG master first, then its JSON (the done marker)."""
        data = png_bytes(image)
        self.write("renders", key, ".png", data)
        meta = {**meta, "png_sha256": hashlib.sha256(data).hexdigest(), "reportgen": __version__}
        self.write("renders", key, ".json", json.dumps(meta, indent=1).encode())
        return StoredRender(key, meta, self)

    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """Stored arrays (analysis results) for ``key``, or ``None`` if missing or corrupt."""
        import io
        import zipfile

        try:
            with np.load(io.BytesIO(self.read("analysis", key, ".npz")), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None

    def put_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write("analysis", key, ".npz", buffer.getvalue())

    def put_image(self, image: np.ndarray) -> str:
        """Store a picture (e.g. a reference image thumbnail) by content; returns its key."""
        data = png_bytes(image)
        key = hashlib.sha256(data).hexdigest()
        if not self.exists("images", key, ".png"):
            self.write("images", key, ".png", data)
        return key

    def get_image(self, key: str) -> np.ndarray:
        """A picture stored by ``put_image``."""
        return decode(self.read("images", key, ".png"))


def _filesystem(url: str):
    """The fsspec file system behind ``url`` (``s3://...`` needs s3fs, ``gs://...`` gcsfs, ...)."""
    from .errors import StoreError

    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with huggingface_hub
        raise StoreError(f"--store {url}: URLs need fsspec; pip install fsspec") from None
    protocol = url.split("://", 1)[0]
    try:
        return fsspec.filesystem(protocol)
    except ValueError:
        raise StoreError(f"--store {url}: unknown protocol {protocol!r}; use a folder or a URL such as "
                         "s3://bucket/cache (pip install s3fs) or gs://bucket/cache (pip install gcsfs)") from None
    except ImportError as exc:
        raise StoreError(f"--store {url}: the {protocol} file system needs a package that is not installed "
                         f"({exc}); e.g. pip install s3fs for s3://") from None
