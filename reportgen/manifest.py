"""The output folder and its manifest: what was built, the source every page is written from.

``OUT/manifest.json`` lists each model with its settings, weights, timings, references and, per
layer, its units (render path, activation ratio, statistics). Pages are made from it alone.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .errors import OutputDirError
from .store import atomic_write

MARKER = ".reportgen"  # marks a folder reportgen created; it refuses other non-empty folders
MANIFEST_SCHEMA = 8  # bump when manifest fields change: older manifests are then not reused


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a non-empty folder reportgen did not create.

    Raises:
        OutputDirError: with what to do instead.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file; give a folder (it will be created if missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise OutputDirError(
            f"--out {out} is a non-empty folder that reportgen did not create; choose an empty or new folder"
        )


def prepare_out(out: Path) -> Path:
    """Create or reuse ``out`` (after ``check_out``) and mark it as reportgen's.

    Raises:
        OutputDirError: the folder cannot be created or written.
    """
    out = Path(out)
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(f"reportgen {__version__}\n", encoding="utf-8")
        # Commit mkdocs.yml, docs/ and manifest.json to publish with a workflow; the rest is local.
        (out / ".gitignore").write_text(".cache/\nsite/\nsite.new/\nsite.old/\ndocs.new/\ndocs.old/\nshards/\n.reportgen.lock\n",
                                        encoding="utf-8")
    except OSError as exc:
        raise OutputDirError(f"--out {out} cannot be written ({exc.strerror or exc})") from None
    return out


def read_manifest(out: Path) -> dict | None:
    """The manifest in ``out`` if there is one of the current schema (else ``None``)."""
    try:
        manifest = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("schema") == MANIFEST_SCHEMA else None


def write_manifest(out: Path, manifest: dict) -> None:
    atomic_write(Path(out) / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))


def write_shard_record(out: Path, config: dict, shard: tuple[int, int]) -> None:
    """Mark shard ``i/N`` of a build as finished: ``OUT/shards/i-of-N.json`` holds its config
    (``BuildConfig.to_record``), from which ``reportgen site`` assembles the pages."""
    atomic_write(Path(out) / "shards" / f"{shard[0]}-of-{shard[1]}.json", json.dumps(config, indent=1).encode("utf-8"))


def read_shard_records(out: Path) -> list[dict]:
    """The configs of the finished shards in ``out`` (none: not a sharded build)."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted((Path(out) / "shards").glob("*-of-*.json"))]


def merge_model(manifest: dict | None, entry: dict, store: str | None = None) -> dict:
    """Put ``entry`` into ``manifest`` (replacing a model of the same name, keeping the others);
    ``store`` is where its renders are kept when not in ``OUT/.cache`` (``--store``)."""
    manifest = manifest or {"models": []}
    models = [m for m in manifest.get("models", []) if m["name"] != entry["name"]]
    models.append(entry)
    return {
        "schema": MANIFEST_SCHEMA,
        "reportgen": __version__,
        "title": "reportgen: " + ", ".join(m["name"] for m in models),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "store": store,
        "models": models,
    }
