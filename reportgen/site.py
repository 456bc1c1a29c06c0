"""Build, serve and publish the static site: the only module that imports mkdocs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ReportgenError, StoreError


class SiteBuildError(ReportgenError):
    """``mkdocs build --strict`` failed (a broken link or image in the generated pages)."""

    exit_code = 1


@dataclass(frozen=True)
class SiteInfo:
    """What a site build produced: its folder, page count, total bytes and build seconds."""

    path: Path
    pages: int
    bytes: int
    seconds: float


def _config(out: Path, **overrides):
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # silence Material's MkDocs 2.0 banner
    from mkdocs.config import load_config

    config_file = Path(out) / "mkdocs.yml"
    if not config_file.is_file():
        raise StoreError(f"{config_file} is missing; run `reportgen build --out {out}` first")
    return load_config(config_file=str(config_file), **overrides)


def build_site(out: Path, strict: bool = True) -> SiteInfo:
    """``mkdocs build`` of ``OUT/mkdocs.yml`` into ``OUT/site``.

    Raises:
        SiteBuildError: with ``strict``, any MkDocs warning (broken link, missing image).
    """
    from mkdocs.commands.build import build
    from mkdocs.exceptions import Abort, ConfigurationError

    started = time.perf_counter()
    config = _config(out, strict=strict)
    logger = logging.getLogger("mkdocs")
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        build(config)
    except (Abort, ConfigurationError) as exc:
        detail = "; ".join(messages[:3]) or str(exc)
        raise SiteBuildError(f"mkdocs build failed: {detail}") from None
    finally:
        logger.removeHandler(handler)
    site = Path(out) / "site"
    files = [p for p in site.rglob("*") if p.is_file()]
    pages = sum(1 for p in files if p.suffix == ".html" and p.name != "404.html")
    return SiteInfo(site, pages, sum(p.stat().st_size for p in files), time.perf_counter() - started)


def serve_site(out: Path, address: str = "127.0.0.1:8000") -> None:
    """Serve the site locally with live reload (``mkdocs serve``) until interrupted."""
    from mkdocs.commands.serve import serve

    _config(out)  # fail early with a clear message when there is nothing to serve
    serve(config_file=str(Path(out) / "mkdocs.yml"), dev_addr=address)


def deploy_site(out: Path, remote: str = "origin", branch: str = "gh-pages") -> None:
    """Publish to the ``gh-pages`` branch like ``mkdocs gh-deploy --force --no-history``."""
    from mkdocs.commands.gh_deploy import gh_deploy

    config = _config(out, remote_name=remote, remote_branch=branch)
    build_site(out)
    gh_deploy(config, force=True, ignore_version=True, no_history=True)
