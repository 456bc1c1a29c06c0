"""Walk a built report site in headless Chromium as a person would, checking each page.

Used by ``test_browser.py``; also runnable to take the screenshots in the docs:

    python tests/browser.py report/site docs/images
"""

from __future__ import annotations

import functools
import re
import http.server
import io
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def serve(folder: Path, handler_class=None):
    """Serve ``folder`` over HTTP on a free localhost port (with ``handler_class``, a
    ``SimpleHTTPRequestHandler``; default: the plain one, quiet); yields the base URL."""
    handler = functools.partial(handler_class or _QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _PagesHandler(_QuietHandler):
    """As GitHub Pages serves a project site: under ``/<prefix>/``, and its 404.html (with status
    404) for any path that is not a file."""

    prefix = "/repo"

    def send_head(self):
        path = self.path.split("?", 1)[0]
        if path.startswith(self.prefix + "/"):
            self.path = path[len(self.prefix):]
            local = Path(self.translate_path(self.path))
            if local.is_file() or (local / "index.html").is_file():
                return super().send_head()
        body = (Path(self.directory) / "404.html").read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def check_layout(page, layer_url: str, urls: list[str]) -> None:
    """At 1440×900: no table on ``urls`` is wider than the column it sits in (no column hidden
    behind a scroll), and the first screen of the layer page shows renders."""
    page.set_viewport_size({"width": 1440, "height": 900})
    for url in urls:
        page.goto(url)
        hidden = page.evaluate(
            """() => Array.from(document.querySelectorAll('article table')).map(table => {
                   const box = table.closest('.md-typeset__scrollwrap') || table.parentElement;
                   return [table.scrollWidth, box.clientWidth, table.rows[0].innerText.slice(0, 60)];
               }).filter(([wide, room]) => wide > room + 1)""")
        assert not hidden, f"tables wider than their column on {url}: {hidden}"
    page.goto(layer_url)
    tops = page.locator(".rg-tile img").evaluate_all(
        "images => images.map(i => i.getBoundingClientRect()).filter(r => r.width > 100 && r.bottom <= innerHeight).length")
    assert tops >= 1, f"no render fully in the first screen of {layer_url}"


def check_file_search(site: Path, query: str, expected: str) -> list[str]:
    """Open the site from the file system, type ``query`` in the search box; assert a result links
    to a URL ending in ``expected`` and no console error. Returns the result URLs."""
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.goto((site / "index.html").resolve().as_uri())
        expect(page.locator(".md-search__input")).to_be_visible()
        page.locator(".md-search__input").click()
        page.keyboard.type(query, delay=20)
        expect(page.locator(f'.md-search-result__item a[href$="{expected}"]').first).to_be_visible(timeout=10000)
        found = page.locator(".md-search-result__item a").evaluate_all("links => links.map(a => a.href)")
        browser.close()
    assert not errors, errors
    return found


def check_404_under_subpath(site: Path) -> None:
    """Served as a GitHub Pages project site (under /repo/), a missing page gets the styled 404
    page: its stylesheet and script load (the site was built with its address)."""
    from playwright.sync_api import sync_playwright

    failed: list[str] = []
    with serve(site, _PagesHandler) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "/no/such/" not in r.url else None)
        response = page.goto(f"{base}repo/no/such/page.html")
        assert response.status == 404
        page.wait_for_load_state("networkidle")
        styled = page.evaluate("getComputedStyle(document.querySelector('.md-header')).position")
        browser.close()
    assert not failed, f"the 404 page's assets did not load: {failed[:5]}"
    assert styled == "sticky", f"the 404 page is unstyled (header position {styled!r})"


def check_images(page) -> int:
    """Load every image on the page (lazy ones too) and assert each decoded; returns the count."""
    sizes = page.evaluate(
        """async () => {
            const images = Array.from(document.images);
            images.forEach(img => { img.loading = 'eager'; });
            await Promise.all(images.map(img => img.decode().catch(() => null)));
            return images.map(img => [img.currentSrc || img.src, img.naturalWidth]);
        }"""
    )
    broken = [src for src, width in sizes if width == 0]
    assert not broken, f"images that did not load on {page.url}: {broken[:5]}"
    return len(sizes)


def walk(site: Path, model: str, layer: str, shots: Path) -> dict:
    """Home -> model -> layer -> unit by clicking; lightbox and search; the layout at 1440 px
    (``check_layout``); screenshots into ``shots``.

    Returns what was seen: page URLs and image counts. Raises AssertionError on any problem,
    including console errors.
    """
    from playwright.sync_api import expect, sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    errors: list[str] = []
    with serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

        page.goto(base)
        seen["home"] = check_images(page)
        page.screenshot(path=str(shots / "home.png"))

        page.locator("article").get_by_role("link", name=model, exact=True).first.click()
        page.wait_for_load_state()
        assert page.url.endswith(f"{model}/index.html"), page.url
        seen["model"] = check_images(page)
        page.screenshot(path=str(shots / "model.png"))

        page.locator("article table").get_by_role("link", name=layer, exact=True).click()
        page.wait_for_load_state()
        assert page.url.endswith(f"{layer}/index.html"), page.url
        seen["layer"] = check_images(page)
        expect(page.locator(".rg-controls")).to_be_visible()
        page.screenshot(path=str(shots / "layer.png"))
        page.set_viewport_size({"width": 1200, "height": 1150})  # README's picture: the layer's unit grid
        page.locator("h2#units").evaluate("element => window.scrollTo(0, element.offsetTop - 60)")
        page.wait_for_timeout(500)  # the header's title changes as the page scrolls
        page.screenshot(path=str(shots / "layer-page.png"))
        page.set_viewport_size({"width": 1280, "height": 900})

        page.locator(".rg-sort").select_option("ratio-desc")  # the grid re-orders by ratio
        ratios = page.locator("[data-rg-sortable] .rg-tile").evaluate_all("tiles => tiles.map(t => parseFloat(t.dataset.ratio) || -1e9)")
        assert ratios == sorted(ratios, reverse=True), ratios

        page.locator(".rg-tile img").first.click()  # the lightbox opens on a render
        expect(page.locator(".glightbox-container")).to_be_visible()
        expect(page.locator(".gslide-image img").first).to_be_visible()
        page.wait_for_timeout(700)  # let the opening animation finish before the screenshot
        page.screenshot(path=str(shots / "lightbox.png"))
        page.keyboard.press("Escape")
        expect(page.locator(".glightbox-container")).to_have_count(0)

        page.locator(".rg-tile a.rg-caption").first.click()
        page.wait_for_load_state()
        assert "/index.html" in page.url and page.url.count("/") > base.count("/") + 2, page.url
        seen["unit"] = check_images(page)
        page.screenshot(path=str(shots / "unit.png"), full_page=True)
        seen["unit_url"] = page.url

        stable = f"{base}{model}/{layer}/{seen['unit_url'].split('/')[-2]}/"  # <model>/<layer>/<channel>/
        assert page.goto(stable).status == 200 and "unit" in page.title(), stable
        layer_url = f"{base}{model}/{layer}/index.html"
        page.goto(layer_url)  # the sort chosen before is still chosen when one comes back
        expect(page.locator(".rg-sort")).to_have_value("ratio-desc")
        check_layout(page, layer_url, [base, f"{base}{model}/index.html", layer_url, seen["unit_url"]])

        page.goto(base)  # search finds a layer by name
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.keyboard.type(layer, delay=30)  # typed, as Material searches on key events
        result = page.locator(f'.md-search-result__item:has(a[href*="/{layer}/index.html"])').first
        expect(result).to_be_visible(timeout=15000)
        seen["search"] = result.inner_text()
        channel = seen["unit_url"].split("/")[-2]  # a unit by name: its pages rank above the layers'
        page.goto(base)
        page.locator(".md-search__input").click()
        page.keyboard.type(f"unit {channel}", delay=30)
        # results update as one types: wait for those of the whole query (the theme puts its words in ?h=)
        done = page.locator(f'.md-search-result__item > a[href*="h={channel}+unit"], '
                            f'.md-search-result__item > a[href*="h=unit+{channel}"]')
        expect(done.first).to_be_visible(timeout=15000)
        hrefs = page.locator(".md-search-result__item > a").evaluate_all("links => links.map(a => a.href)")[:3]
        assert all(re.search(r"/\d+/index\.html", h) for h in hrefs), hrefs  # unit pages first, layer pages
        # (whose captions name the unit too) after them; the theme also matches prefixes (unit 1 finds unit 14)
        page.screenshot(path=str(shots / "search.png"))
        browser.close()
    assert not errors, errors
    return seen


VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


def screenshots(site: Path, model: str, layer: str, shots: Path) -> list[Path]:
    """The first screen of the home, model, layer and a unit page, on a desktop (1440×900) and a
    phone (390×844), in the light and the dark scheme (the reader's system preference): 16 WebP
    files named ``{page}-{viewport}-{scheme}.webp`` in ``shots``. Returns their paths."""
    from io import BytesIO

    from PIL import Image
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    manifest_units = {}
    written = []
    with serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for view, size in VIEWPORTS.items():
            for scheme in ("light", "dark"):
                page = browser.new_page(viewport=size, color_scheme=scheme, device_scale_factor=1)
                page.goto(f"{base}{model}/{layer}/index.html")
                unit = page.locator(".rg-tile a.rg-caption").first.get_attribute("href")
                manifest_units[layer] = unit
                urls = {"home": base, "model": f"{base}{model}/index.html", "layer": f"{base}{model}/{layer}/index.html",
                        "unit": f"{base}{model}/{layer}/{unit}"}
                for name, url in urls.items():
                    page.goto(url)
                    page.wait_for_load_state("networkidle")
                    check_images(page)
                    page.evaluate("window.scrollTo(0, 0)")
                    page.wait_for_timeout(300)
                    path = shots / f"{name}-{view}-{scheme}.webp"
                    Image.open(BytesIO(page.screenshot())).convert("RGB").save(path, "WEBP", quality=80, method=4)
                    written.append(path)
                page.close()
        browser.close()
    return written


if __name__ == "__main__":
    import json
    import tempfile

    site_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = json.loads((site_dir.parent / "manifest.json").read_text())
    first = manifest["models"][0]
    middle = first["layers"][len(first["layers"]) // 2]["module"]
    with tempfile.TemporaryDirectory() as tmp:  # the walk's own screenshots: the guide shows three
        print(walk(site_dir, first["name"], middle, Path(tmp)))
        for name in ("layer-page.png", "lightbox.png", "search.png"):
            shutil.copy(Path(tmp) / name, out_dir / name)
    print(len(screenshots(site_dir, first["name"], middle, out_dir)), "screenshots of each page kind")
