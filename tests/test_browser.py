"""The built site in a real browser (Debian's chromium, driven by Playwright): click from home to a
unit, every image loads, no console errors, the lightbox opens, search finds a layer."""

import shutil

import pytest

from reportgen.config import resolve_build_config
from reportgen.pipeline import build

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")


def test_click_through_a_built_site(tmp_path, monkeypatch):
    out = tmp_path / "report"
    monkeypatch.setenv("REPORTGEN_SITE_URL", "https://owner.github.io/repo/")  # as the Pages workflow builds it
    build(resolve_build_config({"model": ["test_efficientnet"], "weights": "none", "layers": "0,2,-1", "units": "5",
                                "steps": 4, "size": 48, "out": out}))
    from browser import check_404_under_subpath, check_file_search, walk

    shots = tmp_path / "shots"
    seen = walk(out / "site", "test_efficientnet", "blocks.1.0", shots)
    assert seen["layer"] >= 5 and seen["unit"] >= 2 and seen["model"] >= 4
    assert "blocks.1.0" in seen["search"]
    assert sorted(p.name for p in shots.iterdir()) == ["home.png", "layer-page.png", "layer.png", "lightbox.png",
                                                        "model.png", "search.png", "unit.png"]

    base = out / "site"
    check_404_under_subpath(base)
    check_file_search(base, "blocks.1.0", "test_efficientnet/blocks.1.0/index.html")
    found = check_file_search(base, "unit 3", "test_efficientnet/blocks.1.0/3/index.html")
    assert all("/3/index.html" in url for url in found[:3]), found  # the units named 3 rank first
