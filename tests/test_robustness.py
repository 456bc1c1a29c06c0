"""Nothing lost, nobody in: killed builds, concurrent builds, messy image folders, hostile names,
full disks and NaNs. Each user-facing failure is one line and an exit code."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from messy_images import write_bad_files, write_odd_files  # noqa: E402  (shared with the memory benchmark)

from reportgen.config import resolve_build_config
from reportgen.pipeline import build

from helpers import assert_one_line_error, run

TINY = ["--model", "test_efficientnet", "--weights", "none", "--layers", "0,2,-1", "--units", "4",
        "--variants", "0", "--classes", "0", "--dreams", "0", "--drivers", "0", "--groups", "0", "--steps", "60", "--size", "48",
        "--batch", "2", "-q"]


def reportgen(*args):
    # A suite started in the background by a non-interactive shell hands its children SIGINT ignored
    # (and then Python never raises KeyboardInterrupt): give the build the default, as a terminal would.
    return subprocess.Popen([sys.executable, "-m", "reportgen", "build", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def count(out: Path, pattern: str) -> int:
    return sum(1 for _ in out.glob(pattern)) if out.exists() else 0


def assert_nothing_partial(out: Path):
    """Every file is whole: no temporaries, every image decodes, every JSON parses."""
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.endswith(".tmp"), path
        if path.suffix in (".png", ".webp"):
            Image.open(path).load()
        elif path.suffix == ".json":
            json.loads(path.read_text())


def snapshot(out: Path) -> dict:
    """What a reader sees: every unit's render bytes and numbers, and the list of pages."""
    manifest = json.loads((out / "manifest.json").read_text())
    units = {}
    for layer in manifest["models"][0]["layers"]:
        for u in layer["units"]:
            units[(layer["module"], u["channel"])] = (
                u["key"], u["activation_ratio"], hashlib.sha256((out / u["render"]).read_bytes()).hexdigest())
    pages = sorted(str(p.relative_to(out)) for p in (out / "site").rglob("*.html"))
    return {"units": units, "pages": pages}


@pytest.mark.slow  # subprocess builds
def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_build(tmp_path):
    reference = tmp_path / "reference"
    assert reportgen(*TINY, "--out", str(reference)).wait(timeout=600) == 0

    out = tmp_path / "killed"
    renders = out / ".cache" / "renders"
    # Kill with SIGKILL: after the first renders are stored, mid-way, and while pages/site are written.
    for condition in (lambda: count(renders, "*/*.json") >= 2,
                      lambda: count(renders, "*/*.json") >= 7,
                      lambda: (out / "docs.new").exists() or (out / "site").exists()):
        proc = reportgen(*TINY, "--out", str(out))
        deadline = time.time() + 300
        while not condition() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = reportgen(*TINY, "--out", str(out))
    output = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, output
    assert "from cache" in output
    assert_nothing_partial(out)
    assert snapshot(out) == snapshot(reference)


@pytest.mark.slow  # subprocess builds
def test_a_second_build_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "out"
    first = reportgen(*TINY, "--out", str(out))
    deadline = time.time() + 120
    while not (out / ".reportgen.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    try:
        code, output = run("build", *TINY, "--out", str(out))
        assert code == 2
        assert_one_line_error(output, "busy", "another reportgen process")
    finally:
        first.kill()
        first.wait()


def _messy_folder(folder: Path, good: int = 6) -> tuple[int, list[str]]:
    """``good`` colour photos plus the odd files (used) and the bad ones (skipped) the memory
    benchmark also writes; returns (how many files are usable, the bad names)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(good):
        Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(folder / f"good{i}.png")
    return good + len(write_odd_files(folder, rng)), write_bad_files(folder, rng)


def test_messy_image_folder_skips_only_the_bad_files(tmp_path):
    usable, bad = _messy_folder(tmp_path / "images")
    out = tmp_path / "out"
    code, output = run("build", *TINY[:-1], "--steps", "4", "--images", str(tmp_path / "images"), "--out", str(out))
    assert code == 0, output
    refs = json.loads((out / "manifest.json").read_text())["models"][0]["references"]
    assert sorted(s.split(":")[0] for s in refs["skipped"]) == bad
    assert refs["used"] == usable == 11  # 6 colour + grey, 16-bit, RGBA, CMYK TIFF and CMYK JPEG
    assert f"{len(bad)} file(s) skipped" in (out / "docs" / "test_efficientnet" / "index.md").read_text()


@pytest.mark.parametrize("setup,needles", [
    (lambda d: None, ["no such folder"]),
    (lambda d: d.mkdir(), ["no image files"]),
    (lambda d: (d.mkdir(), (d / "a.png").write_bytes(b"nope")), ["none of the 1 reference images could be used", "a.png"]),
])
def test_unusable_image_folders(tmp_path, setup, needles):
    folder = tmp_path / "images"
    setup(folder)
    code, output = run("build", *TINY, "--images", str(folder), "--out", str(tmp_path / "out"))
    assert code == 2
    assert_one_line_error(output, *needles)


def test_unwritable_out(tmp_path):
    code, output = run("build", *TINY, "--out", "/proc/reportgen-out")
    assert code == 2
    assert_one_line_error(output, "cannot be written")


def test_malicious_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"conv_stem.weight": Payload()}, tmp_path / "evil.pth")
    code, output = run("build", *TINY[:4], "--weights", str(tmp_path / "evil.pth"), "--out", str(tmp_path / "out"))
    assert code == 2
    assert_one_line_error(output, "cannot be read as a safe state dict")
    assert not marker.exists()


def test_disk_full_is_one_line_and_the_cache_stays_valid(tmp_path, monkeypatch):
    import reportgen.pages

    out = tmp_path / "out"
    real_write = reportgen.pages.write_staged

    def full_disk(path, data):
        if "docs.new" in str(path):  # the renders are stored; the disk fills while pages are written
            raise OSError(28, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(reportgen.pages, "write_staged", full_disk)
    code, output = run("build", *TINY, "--out", str(out))
    assert code == 2
    assert_one_line_error(output, "disk is full", "run the same command again")
    assert_nothing_partial(out / ".cache")
    monkeypatch.undo()
    code, output = run("build", *TINY, "--out", str(out))
    assert code == 0 and "0 rendered, 24 from cache" in output  # 12 units and their 12 centre neurons


def test_nan_units_fail_alone_and_the_rest_is_published(tmp_path, monkeypatch):
    import reportgen.models

    real_load = reportgen.models.load_model

    def poisoned(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        act = dict(loaded.module.named_modules())["bn2"].act  # where bn2's units are measured

        def nan_channel_1(_module, inputs):
            poisoned = inputs[0].clone()
            poisoned[:, 1] = float("nan")
            return (poisoned,)

        act.register_forward_pre_hook(nan_channel_1)
        return loaded

    monkeypatch.setattr(reportgen.models, "load_model", poisoned)
    out = tmp_path / "out"
    report = build(resolve_build_config({"model": ["test_efficientnet"], "weights": "none", "layers": "-1",
                                         "units": "3", "steps": 6, "size": 48, "out": out,
                                         "variants": "0", "classes": 0, "dreams": 0, "groups": 0}))
    assert report.exit_code == 1
    assert report.failed == ["test_efficientnet bn2 unit 1", "test_efficientnet bn2 unit 1 (centre neuron)"]
    units = json.loads((out / "manifest.json").read_text())["models"][0]["layers"][0]["units"]
    assert [u["failed"] for u in units] == [False, True, False] and units[1]["render"] is None
    page = (out / "docs" / "test_efficientnet" / "bn2" / "1" / "index.md").read_text()
    assert "Render failed" in page and "render of this unit's centre neuron failed" in page
    assert (out / "site" / "test_efficientnet" / "bn2" / "index.html").is_file()  # strict build passed


class HostileNet(torch.nn.Module):
    """A model whose module names try to inject Markdown, HTML and JavaScript."""

    def __init__(self, **kwargs):
        super().__init__()
        self.add_module("<script>alert(1)</script>", torch.nn.Conv2d(3, 4, 3, stride=2))
        self.add_module("x](javascript:alert(1))", torch.nn.Conv2d(4, 4, 3, stride=2))
        self.add_module("`tick`|pipe*em*<img src=x onerror=alert(2)>", torch.nn.Conv2d(4, 4, 3))
        self.num_classes = 0

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def test_hostile_names_are_inert_and_stay_inside_out(tmp_path):
    import timm
    from timm.models import register_model

    def factory(pretrained=False, **kwargs):
        return HostileNet()

    factory.__name__ = "hostile_<b>net"
    if not timm.is_model(factory.__name__):
        register_model(factory)
    out = tmp_path / "out"
    report = build(resolve_build_config({"model": [factory.__name__], "weights": "none", "layers": "all",
                                         "units": "2", "steps": 3, "size": 48, "out": out,
                                         "variants": "0", "classes": 0, "dreams": 0, "drivers": 0}))
    layers = json.loads((out / "manifest.json").read_text())["models"][0]["layers"]
    drivers = sum(len(layer["drivers"]) for layer in layers)  # pages of the channels the units name
    assert report.exit_code == 0 and report.site.pages == 1 + 1 + 3 + 6 + drivers
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing written beside --out
    for page in (out / "site").rglob("*.html"):
        text = page.read_text()
        assert "<script>alert" not in text and 'href="javascript' not in text.lower()
        assert "onerror=alert" not in text.replace("onerror=alert(2)&gt;", "")
        assert "<b>net" not in text
    for path in out.rglob("*"):
        assert out in path.resolve().parents


@pytest.mark.slow  # subprocess builds
def test_ctrl_c_exits_cleanly_with_a_resume_hint(tmp_path):
    out = tmp_path / "out"
    proc = reportgen(*TINY, "--out", str(out))
    deadline = time.time() + 300
    while count(out / ".cache" / "renders", "*/*.json") < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130
    assert "Traceback" not in output and "run the same command again to resume" in output
    assert_nothing_partial(out)
