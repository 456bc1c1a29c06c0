"""Lighthouse and axe on a built report site, served compressed as GitHub Pages serves it.

Serves SITE over HTTP with gzip (as Pages does), runs Lighthouse (mobile, its default: a
throttled phone) on each page and axe-core in headless Chromium, and prints one table row a page:
Lighthouse performance, accessibility, best practices and SEO scores, largest contentful paint,
cumulative layout shift, bytes transferred, and axe's violations by impact (light and dark scheme).

Needs Node with Lighthouse and axe-core (``npm install lighthouse@12 axe-core@4`` in a folder of its
own, named by ``--node-modules``) and Debian's chromium:

    python benchmarks/site_audit.py REPORT/site --node-modules /path/node_modules \
        [--pages tf_efficientnet_lite0/index.html tf_efficientnet_lite0/blocks.3.1/index.html]
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402

COMPRESSED = {".html", ".css", ".js", ".json", ".svg", ".xml", ".txt"}  # Pages gzips text, not images


class _GzipHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, text gzipped when the client accepts it (as GitHub Pages does)."""

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if (path.suffix not in COMPRESSED or "gzip" not in self.headers.get("Accept-Encoding", "")
                or not path.is_file()):
            return super().send_head()
        body = gzip.compress(path.read_bytes(), 6)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=600")  # Pages' own
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, *args):
        pass


def lighthouse(url: str, node_modules: Path) -> dict:
    """One Lighthouse run (mobile preset); returns its scores and the metrics we report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "lh.json"
        env = {**os.environ, "CHROME_PATH": CHROMIUM}
        subprocess.run(
            [str(node_modules / ".bin" / "lighthouse"), url, "--quiet", "--output=json",
             f"--output-path={report}", "--only-categories=performance,accessibility,best-practices,seo",
             "--chrome-flags=--headless=new " + " ".join(CHROMIUM_ARGS)],
            check=True, env=env, capture_output=True, timeout=300)
        data = json.loads(report.read_text())
    audits = data["audits"]
    return {
        **{name: round(100 * cat["score"]) for name, cat in data["categories"].items()},
        "lcp_s": audits["largest-contentful-paint"]["numericValue"] / 1000,
        "cls": audits["cumulative-layout-shift"]["numericValue"],
        "kib": audits["total-byte-weight"]["numericValue"] / 1024,
        "failed": [a for a, v in audits.items() if v.get("score") is not None and v["score"] < 0.9
                   and v.get("scoreDisplayMode") == "binary"],
    }


def axe(url: str, node_modules: Path) -> dict:
    """axe-core's violations on the page at 1440 px, in the light and the dark scheme, counted by
    impact, with their rule ids and where they were found."""
    from playwright.sync_api import sync_playwright

    source = (node_modules / "axe-core" / "axe.min.js").read_text()
    violations = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
            page.goto(url)
            page.wait_for_load_state("networkidle")
            page.add_script_tag(content=source)
            violations += [[scheme, *v] for v in page.evaluate(
                "async () => (await axe.run(document)).violations"
                ".map(v => [v.id, v.impact, v.nodes.length, v.nodes.slice(0, 2).map(n => n.target.join(' '))])")]
            page.close()
        browser.close()
    counts: dict[str, int] = {}
    for _, _, impact, _, _ in violations:
        counts[impact] = counts.get(impact, 0) + 1
    return {"axe": counts, "rules": [f"{rule} ({scheme}, {impact}, {n}: {', '.join(where)})"
                                     for scheme, rule, impact, n, where in violations]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--node-modules", type=Path, required=True)
    parser.add_argument("--pages", nargs="+", default=["tf_efficientnet_lite0/index.html",
                                                       "tf_efficientnet_lite0/blocks.3.1/index.html"])
    args = parser.parse_args()
    print("| page | performance | accessibility | best practices | SEO | LCP s | CLS | KiB | axe violations |")
    print("|---|---|---|---|---|---|---|---|---|")
    details = []
    with serve(args.site, _GzipHandler) as base:
        for page in args.pages:
            lh, ax = lighthouse(base + page, args.node_modules), axe(base + page, args.node_modules)
            impacts = ", ".join(f"{n} {k}" for k, n in sorted(ax["axe"].items())) or "none"
            print(f"| {page} | {lh['performance']} | {lh['accessibility']} | {lh['best-practices']} | {lh['seo']} "
                  f"| {lh['lcp_s']:.1f} | {lh['cls']:.3f} | {lh['kib']:.0f} | {impacts} |", flush=True)
            details.append((page, lh["failed"], ax["rules"]))
    for page, failed, rules in details:
        print(f"\n{page}\n  Lighthouse audits failed: {', '.join(failed) or 'none'}\n  axe: {'; '.join(rules) or 'none'}")


if __name__ == "__main__":
    main()
