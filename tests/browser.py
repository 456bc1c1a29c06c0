"""Walk a built report site in headless Chromium as a person would, checking each page.

Used by ``test_browser.py``; also runnable to take the screenshots in the docs:

    python tests/browser.py report/site docs/images
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` over HTTP on a free localhost port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
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
    """Home -> model -> layer -> unit by clicking; lightbox and search; screenshots into ``shots``.

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
        ratios = page.locator(".rg-tile").evaluate_all("tiles => tiles.map(t => parseFloat(t.dataset.ratio) || -1e9)")
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

        page.goto(base)  # search finds a layer by name
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.keyboard.type(layer, delay=30)  # typed, as Material searches on key events
        result = page.locator(f'.md-search-result__item:has(a[href*="/{layer}/index.html"])').first
        expect(result).to_be_visible(timeout=15000)
        seen["search"] = result.inner_text()
        page.screenshot(path=str(shots / "search.png"))
        browser.close()
    assert not errors, errors
    return seen


if __name__ == "__main__":
    site_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    import json

    manifest = json.loads((site_dir.parent / "manifest.json").read_text())
    first = manifest["models"][0]
    print(walk(site_dir, first["name"], first["layers"][len(first["layers"]) // 2]["module"], out_dir))
