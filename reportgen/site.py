"""Build, serve and publish the static site: the only module that imports mkdocs."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ReportgenError, StoreError, UsageError


class DeployError(ReportgenError):
    """The site cannot be published from here (no git repository, a failed push)."""


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
    from mkdocs.exceptions import Abort, ConfigurationError

    logger, messages = logging.getLogger("mkdocs"), []

    class Collect(logging.Handler):  # mkdocs logs what is wrong, then raises a bare Abort
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logger.addHandler(handler)
    try:
        return load_config(config_file=str(config_file), **overrides)
    except (Abort, ConfigurationError) as exc:
        raise StoreError(f"{config_file} does not describe a usable site ({'; '.join(messages[:2]) or exc}); "
                         f"run `reportgen build --out {out}` again") from None
    finally:
        logger.removeHandler(handler)


def build_site(out: Path, strict: bool = True) -> SiteInfo:
    """``mkdocs build`` of ``OUT/mkdocs.yml`` into ``OUT/site``: built in ``OUT/site.new``, then
    swapped in whole, so an interrupted build leaves the last complete site in place.

    Raises:
        SiteBuildError: with ``strict``, any MkDocs warning (broken link, missing image).
    """
    import shutil

    from mkdocs.commands.build import build
    from mkdocs.exceptions import Abort, ConfigurationError

    started = time.perf_counter()
    site, staging, old = (Path(out) / name for name in ("site", "site.new", "site.old"))
    config = _config(out, strict=strict, site_dir=str(staging.resolve()))
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
    shutil.rmtree(old, ignore_errors=True)
    if site.exists():
        site.rename(old)
    staging.rename(site)
    shutil.rmtree(old, ignore_errors=True)
    files = [p for p in site.rglob("*") if p.is_file()]
    pages = sum(1 for p in files if p.suffix == ".html" and p.name != "404.html")
    return SiteInfo(site, pages, sum(p.stat().st_size for p in files), time.perf_counter() - started)


def serve_site(out: Path, address: str = "127.0.0.1:8000", announce=print) -> None:
    """Serve the site locally with live reload (``mkdocs serve``) until interrupted. ``announce``
    is told where to browse once the server listens, and when it stops.

    Raises:
        UsageError: the address is malformed or cannot be listened on.
    """
    from mkdocs.commands.serve import serve

    _config(out)  # fail early with a clear message when there is nothing to serve
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: give host:port, such as 127.0.0.1:8000")

    class Announce(logging.Handler):  # mkdocs says where it serves, and when it stops, in its log
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()  # the server's lines start with a [HH:MM:SS] stamp
            if "Serving on " in text:
                announce(f"serving {out} on {text.split('Serving on ', 1)[1]} (Ctrl-C stops)")
            elif "Shutting down" in text:
                announce("stopped")

    logger, handler = logging.getLogger("mkdocs"), Announce()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        serve(config_file=str(Path(out) / "mkdocs.yml"), dev_addr=address)
    except OSError as exc:
        raise UsageError(f"--address {address}: cannot listen there ({exc.strerror or exc}); try another port, "
                         "e.g. --address 127.0.0.1:8001") from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def deploy_site(out: Path, remote: str = "origin", branch: str = "gh-pages") -> None:
    """Build, then publish ``OUT/site`` to ``branch`` of ``remote`` of the git repository in the
    current folder, as ``mkdocs gh-deploy --force --no-history`` does: the branch is replaced by one
    commit, so old images never pile up in its history.

    Raises:
        DeployError: not inside a git repository, or the push failed.
    """
    from mkdocs.commands.gh_deploy import gh_deploy
    from mkdocs.exceptions import Abort

    import subprocess

    top = _git_top_level()
    known = subprocess.run(["git", "remote"], capture_output=True, text=True, cwd=top).stdout.split()
    if remote not in known:
        raise DeployError(f"--remote {remote}: this repository has no such remote (it has: "
                          f"{', '.join(known) or 'none'}); add it with `git remote add {remote} URL`")
    config = _config(out, remote_name=remote, remote_branch=branch)
    build_site(out)
    try:
        gh_deploy(config, force=True, ignore_version=True, no_history=True)
    except (Abort, subprocess.CalledProcessError) as exc:
        raise DeployError(f"publishing to {remote} {branch} failed ({exc}); check `git remote -v` and your "
                          "access") from None


def write_workflow(out: Path, branch: str = "main") -> Path:
    """Write a GitHub Actions workflow that builds the committed pages of ``out`` and publishes them
    with GitHub's Pages artifact actions; returns its path.

    Raises:
        DeployError: not inside a git repository, or ``out`` lies outside it.
    """
    import jinja2

    top = _git_top_level()
    try:
        relative = Path(out).resolve().relative_to(top)
    except ValueError:
        raise DeployError(f"--out {out} is outside the git repository at {top}") from None
    text = jinja2.Template(_template_text("pages-workflow.yml.j2"), undefined=jinja2.StrictUndefined,
                           keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                           ).render(out=relative.as_posix(), branch=branch)
    path = top / ".github" / "workflows" / "reportgen-pages.yml"
    from .store import atomic_write

    atomic_write(path, text.encode("utf-8"))
    return path


def _template_text(name: str) -> str:
    from importlib import resources

    return resources.files("reportgen.templates").joinpath(name).read_text(encoding="utf-8")


def _git_top_level() -> Path:
    import subprocess

    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    except FileNotFoundError:
        raise DeployError("git is not installed; publishing needs git") from None
    if result.returncode != 0:
        raise DeployError("this folder is not inside a git repository; run `reportgen deploy` in the repository "
                          "that should host the site (after `git init` and `git remote add origin URL`)")
    return Path(result.stdout.strip()).resolve()
