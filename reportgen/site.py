"""Build, serve and publish the static site: the only module that imports mkdocs."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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


@contextmanager
def _mkdocs_log(on_info: Callable[[str], None] | None = None,
                on_problem: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Listen to mkdocs' logger for the block; yields the warnings and errors it logged (mkdocs
    logs what is wrong, then raises a bare ``Abort``). ``on_info`` gets its INFO lines and
    ``on_problem`` its warnings and errors (``"warning: ..."``) as they come."""
    logger, messages = logging.getLogger("mkdocs"), []

    class Listen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                messages.append(text)
                if on_problem:
                    on_problem(f"{record.levelname.lower()}: {text}")
            elif on_info:
                on_info(text)

    handler, level = Listen(logging.INFO if on_info else logging.WARNING), logger.level
    logger.addHandler(handler)
    if on_info:
        logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _config(out: Path, **overrides):
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # silence Material's MkDocs 2.0 banner
    from mkdocs.config import load_config

    config_file = Path(out) / "mkdocs.yml"
    if not config_file.is_file():
        raise StoreError(f"{config_file} is missing; run `reportgen build --out {out}` first")
    from mkdocs.exceptions import Abort, ConfigurationError

    with _mkdocs_log() as messages:
        try:
            return load_config(config_file=str(config_file), **overrides)
        except (Abort, ConfigurationError) as exc:
            raise StoreError(f"{config_file} does not describe a usable site ({'; '.join(messages[:2]) or exc}); "
                             f"run `reportgen build --out {out}` again") from None


def build_site(out: Path, strict: bool = True, site_url: str | None = None) -> SiteInfo:
    """``mkdocs build`` of ``OUT/mkdocs.yml`` into ``OUT/site``: built in ``OUT/site.new``, then
    swapped in whole, so an interrupted build leaves the last complete site in place. ``site_url``
    (where the site will be published) overrides the one in ``mkdocs.yml``, which comes from the
    ``REPORTGEN_SITE_URL`` environment variable; the 404 page's links need it.

    Raises:
        SiteBuildError: with ``strict``, any MkDocs warning (broken link, missing image).
    """
    import shutil

    from mkdocs.commands.build import build
    from mkdocs.exceptions import Abort, ConfigurationError

    started = time.perf_counter()
    site, staging, old = (Path(out) / name for name in ("site", "site.new", "site.old"))
    overrides = {"site_url": site_url} if site_url else {}
    config = _config(out, strict=strict, site_dir=str(staging.resolve()), **overrides)
    with _mkdocs_log() as messages:
        try:
            build(config)
        except (Abort, ConfigurationError) as exc:
            raise SiteBuildError(f"mkdocs build failed: {'; '.join(messages[:3]) or exc}") from None
    write_file_index(staging)
    shutil.rmtree(old, ignore_errors=True)
    if site.exists():
        site.rename(old)
    staging.rename(site)
    shutil.rmtree(old, ignore_errors=True)
    files = [p for p in site.rglob("*") if p.is_file()]
    pages = sum(1 for p in files if p.suffix == ".html" and p.name != "404.html")
    return SiteInfo(site, pages, sum(p.stat().st_size for p in files), time.perf_counter() - started)


FILE_INDEX_TEXT = 200  # characters of a page's text kept in the file:// search index


def write_file_index(site: Path) -> Path | None:
    """Write ``search/search_index.js``, the script the theme loads in place of its search index
    when the site is opened from ``file://`` (where browsers refuse a fetch): one entry per page
    (its title and the first words of its text), as ``var __index = {...}``. The theme cannot search there
    (its web worker is refused too); ``reportgen.js`` searches these entries instead. Returns its
    path, or ``None`` when the site has no search index."""
    import html
    import json
    import re

    index = site / "search" / "search_index.json"
    if not index.is_file():
        return None
    data = json.loads(index.read_text(encoding="utf-8"))
    tag = re.compile(r"<[^>]+>")
    pages: dict[str, dict] = {}  # the theme indexes a page by sections; here, one entry a page
    for d in data["docs"]:
        page = pages.setdefault(d["location"].split("#")[0], {"location": d["location"].split("#")[0],
                                                              "title": html.unescape(tag.sub("", d["title"])), "text": ""})
        if len(page["text"]) < FILE_INDEX_TEXT:
            page["text"] = " ".join((page["text"] + " " + html.unescape(tag.sub(" ", d["text"]))).split())[:FILE_INDEX_TEXT]
    docs = list(pages.values())
    path = site / "search" / "search_index.js"
    text = json.dumps({"config": data["config"], "docs": docs}, ensure_ascii=False, separators=(",", ":"))
    path.write_text(f"var __index = {text};\n", encoding="utf-8")
    return path


def serve_site(out: Path, address: str = "127.0.0.1:8000", announce=print) -> None:
    """Serve the site locally with live reload (``mkdocs serve``) until interrupted. ``announce``
    is told where to browse once the server listens, and when it stops.

    Raises:
        UsageError: the address is malformed or cannot be listened on.
    """
    import errno
    import socket

    from mkdocs.commands.serve import serve
    from mkdocs.exceptions import Abort, ConfigurationError

    _config(out)  # fail early with a clear message when there is nothing to serve
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address {address!r}: give host:port with a port from 1 to 65535, such as 127.0.0.1:8000")

    serving = []

    def info(text: str) -> None:  # mkdocs says where it serves, and when it stops, in its log
        if "Serving on " in text:  # its server's lines start with a [HH:MM:SS] stamp
            serving.append(True)
            announce(f"serving {out} on {text.split('Serving on ', 1)[1]} (Ctrl-C stops)")
        elif "Shutting down" in text:
            announce("stopped")

    def problem(text: str) -> None:  # once serving, a rebuild's warnings and errors are the user's to see
        if serving:
            announce(text)

    with _mkdocs_log(on_info=info, on_problem=problem) as messages:
        try:
            serve(config_file=str(Path(out) / "mkdocs.yml"), dev_addr=address)
        except (Abort, ConfigurationError) as exc:  # mkdocs refused the address (its config checks it)
            raise UsageError(f"--address {address}: {'; '.join(messages[-1:]) or exc}") from None
        except RuntimeError as exc:
            # Ctrl-C inside the server loop's ``with condition: condition.wait_for(...)`` can interrupt
            # the lock's re-acquisition; leaving the block then raises this instead of the
            # KeyboardInterrupt that mkdocs catches (it has shut the server down on its way out).
            if not serving or "un-acquired lock" not in str(exc):
                raise
            announce("stopped")
        except OSError as exc:
            if not isinstance(exc, socket.gaierror) and exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL,
                                                                           errno.EACCES):
                raise
            raise UsageError(f"--address {address}: cannot listen there ({exc.strerror or exc}); try another "
                             "port, e.g. --address 127.0.0.1:8001") from None


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
    # before the build and the push, whose git output would go to the terminal (a credential
    # prompt, on the terminal itself, still works)
    reach = subprocess.run(["git", "ls-remote", "--heads", remote], capture_output=True, text=True, cwd=top)
    if reach.returncode != 0:
        said = " ".join(line.removeprefix("fatal: ") for line in reach.stderr.strip().splitlines()[:1])
        raise DeployError(f"--remote {remote} cannot be reached ({said or f'git exit {reach.returncode}'}); "
                          "check `git remote -v` and your access")
    url = os.environ.get("REPORTGEN_SITE_URL") or pages_url(
        subprocess.run(["git", "remote", "get-url", remote], capture_output=True, text=True, cwd=top).stdout)
    config = _config(out, remote_name=remote, remote_branch=branch)
    build_site(out, site_url=url)
    with _mkdocs_log() as messages:
        try:
            gh_deploy(config, force=True, ignore_version=True, no_history=True)
        except (Abort, subprocess.CalledProcessError) as exc:
            reason = " ".join(" ".join(messages[-1:]).split()) or str(exc)  # git's own words, on one line
            raise DeployError(f"publishing to {remote} {branch} failed ({reason[:300]}); check `git remote -v` "
                              "and your access") from None


def pages_url(remote_url: str) -> str | None:
    """The GitHub Pages address of a GitHub remote (``https://OWNER.github.io/REPO/``, or
    ``https://OWNER.github.io/`` for the ``OWNER.github.io`` repository); ``None`` for any other
    host. A custom domain is not known here: set ``REPORTGEN_SITE_URL`` for it."""
    import re

    found = re.match(r"^(?:https?://(?:[^@/]+@)?|ssh://git@|git@)github\.com[:/]([^/]+)/([^/]+?)(?:\.git)?/?$",
                     remote_url.strip())
    if not found:
        return None
    owner, repo = found.groups()
    if repo.lower() == f"{owner.lower()}.github.io":
        return f"https://{owner.lower()}.github.io/"
    return f"https://{owner.lower()}.github.io/{repo}/"


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
