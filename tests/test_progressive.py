"""A progressive build: the channel renders of every layer first, a browsable site written as soon
as they are done (pages saying what is still rendering), the site written again after each later
phase, and an interrupted build that leaves its last complete site and a valid cache to resume from."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from reportgen import pipeline
from reportgen.progress import Progress
from reportgen.renders import PHASES

from test_build import tiny_config


class Sites(Progress):
    """Records, at every note a build prints, what its site then held; can stop the build there."""

    def __init__(self, out: Path, stop_after: int | None = None):
        self.out, self.stop_after, self.seen, self.notes = out, stop_after, [], []

    def note(self, text):
        self.notes.append(text)
        manifest = json.loads((self.out / "manifest.json").read_text())
        self.seen.append((manifest["models"][0]["pending"], check_site(self.out)))
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise KeyboardInterrupt


def check_site(out: Path) -> dict:
    """Every page of the built site and every image a page shows: the images must decode. Returns
    {page path: its text} for the pages."""
    site = out / "site"
    pages = {str(p.relative_to(site)): p.read_text() for p in site.rglob("index.html")}
    for path, text in pages.items():
        for source in re.findall(r'<img[^>]+src="([^"]+)"', text):
            if source.startswith(("http", "data:")):
                continue
            image = (site / path).parent / source
            with Image.open(image) as opened:
                opened.load()  # decodes, or raises
    return pages


def test_a_site_is_written_after_each_phase_and_says_what_is_still_rendering(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SNAPSHOT_AFTER", 0.0)  # a toy build is quick: write every partial site
    out = tmp_path / "report"
    sites = Sites(out)
    report = pipeline.build(tiny_config(out, groups=2), sites)  # every phase has work
    assert report.exit_code == 0 and not report.failed  # nothing pending was counted as failed
    labels = [label for label, _ in PHASES]
    assert [pending for pending, _ in sites.seen] == [labels[i + 1:] for i in range(len(labels) - 1)]
    first_pending, first_pages = sites.seen[0]
    model_page = first_pages["test_efficientnet/index.html"]
    assert "Still rendering" in model_page and "centre neurons" in model_page
    layer_page = first_pages["test_efficientnet/blocks.1.0/index.html"]
    assert "Still rendering" in layer_page and layer_page.count('src="img/') >= 3  # the channel renders are there
    assert "img/0-neuron.webp" not in first_pages["test_efficientnet/blocks.1.0/0/index.html"]
    assert all("open" in note and "site/index.html" in note for note in sites.notes)
    final = check_site(out)
    assert not any("Still rendering" in text for text in final.values())
    assert "img/0-neuron.webp" in final["test_efficientnet/blocks.1.0/0/index.html"]
    assert 'src="groups/' not in layer_page and 'rg-failed">still rendering' in layer_page  # the groups' place
    assert final["test_efficientnet/blocks.1.0/index.html"].count('src="groups/') == 2
    assert json.loads((out / "manifest.json").read_text())["models"][0]["pending"] == []
    assert report.timings["partial sites"] > 0


def test_an_interrupted_build_keeps_its_last_site_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SNAPSHOT_AFTER", 0.0)
    out = tmp_path / "report"
    stopped = Sites(out, stop_after=2)  # Ctrl-C as the second partial site (after the centre neurons) is announced
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(tiny_config(out), stopped)
    pending, pages = stopped.seen[-1]
    assert check_site(out) == pages  # the site on disk is that complete partial site
    assert not (out / "site.new").exists() and not (out / "docs.new").exists()
    resumed = pipeline.build(tiny_config(out))
    units = 3 * 3  # 3 layers x 3 channel renders, then 3 centre neurons were stored before the stop
    assert resumed.exit_code == 0 and resumed.cached == units + 3 and resumed.rendered == 3 * (3 + 1 + 4 + 2) + 2 - 12
    assert not any("Still rendering" in text for text in check_site(out).values())


def test_a_small_build_writes_its_site_once(tmp_path):
    out = tmp_path / "report"
    sites = Sites(out)
    report = pipeline.build(tiny_config(out), sites)  # seconds of work: no partial site is worth writing
    assert report.exit_code == 0 and sites.notes == [] and "partial sites" not in report.timings
