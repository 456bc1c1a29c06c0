"""Executors: a build on a local Ray cluster equals the local build; a killed Ray worker is
replaced and the build completes; shards into a shared store, then one build (or, in one output
folder, ``reportgen site``), equal one build."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from reportgen.config import resolve_build_config
from reportgen.errors import StoreError, UsageError
from reportgen.pipeline import build, rebuild_site
from reportgen.store import Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray cluster per module


def config(out: Path, **flags):
    base = {"model": ["test_efficientnet"], "weights": "none", "layers": "0,-1", "units": "4", "neurons": "1",
            "variants": "1", "classes": 2, "dreams": 1, "steps": 8, "size": 32, "batch": 2, "out": out, "drivers": 0}
    return resolve_build_config({**base, **flags})


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs (one worker of 2 threads), and the local build's thread count
    set to match: CPU kernels round differently with a different number of threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _system_config={"worker_niceness": 0})  # as RayExecutor starts a cluster
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, cluster):
    out = tmp_path_factory.mktemp("local") / "report"
    report = build(config(out))
    assert report.exit_code == 0 and report.cached == 0
    return out, report


def units_of(out: Path):
    """Every render of a report: (layer, channel, kind) -> (key, activation)."""
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    found = {}
    for layer in model["layers"]:
        for unit in layer["units"]:
            found[layer["module"], unit["channel"], "channel"] = (unit["key"], unit["activation"])
            for kind in ("neuron", "second_seed", "negative", "diversity"):
                if unit[kind]:
                    found[layer["module"], unit["channel"], kind] = (unit[kind]["key"], unit[kind]["activation"])
        for dream in layer["dreams"]:
            found[layer["module"], dream["image"], "dream"] = (dream["dream"]["key"], dream["dream"]["activation"])
    for c in model["classes"]:
        found["logits", c["class"], "class"] = (c["key"], c["logit"])
    return model, found


def assert_same_renders(found: dict, expected: dict):
    """The same renders (keys, to the character) reporting the same activations up to float32
    rounding: a render's activation is measured in a batch, and a shard batches other renders."""
    assert {unit: key for unit, (key, _) in found.items()} == {unit: key for unit, (key, _) in expected.items()}
    for unit, (_, activation) in found.items():
        assert activation == pytest.approx(expected[unit][1], rel=1e-5, abs=1e-6), unit


def pages(out: Path) -> dict[str, str]:
    """Layer and unit pages (home and model pages carry the build's timings)."""
    docs = out / "docs"
    return {str(p.relative_to(docs)): p.read_text() for p in docs.rglob("*.md") if len(p.relative_to(docs).parts) > 2}


def assert_same_report(out: Path, reference: Path):
    model, found = units_of(out)
    _, expected = units_of(reference)
    assert_same_renders(found, expected)
    store, reference_store = Store(out / ".cache"), Store(reference / ".cache")
    for key, _ in found.values():  # the same images, to the byte
        assert store.read("renders", key, ".png") == reference_store.read("renders", key, ".png")
    drivers = sum(len(layer["drivers"]) for layer in model["layers"])  # pages of the channels the units name
    assert pages(out) == pages(reference) and len(pages(out)) == 2 + 2 * 4 + drivers
    assert sorted(p.relative_to(out / "site") for p in (out / "site").rglob("*.html")) == \
        sorted(p.relative_to(reference / "site") for p in (reference / "site").rglob("*.html"))
    return model


def assert_store_intact(root: Path):
    """Every stored render's JSON names its PNG's hash, and no temporary file is left."""
    store = Store(root)
    metas = list((root / "renders").rglob("*.json"))
    assert metas and not list(root.rglob("*.tmp"))
    for meta in metas:
        assert store.get_render(meta.stem) is not None, meta


def test_ray_builds_the_same_report_as_local(tmp_path, local_build):
    reference, local_report = local_build
    out = tmp_path / "ray"
    report = build(config(out, executor="ray"))
    assert report.exit_code == 0 and report.rendered == local_report.rendered and report.cached == 0
    model = assert_same_report(out, reference)
    assert model["executor"] == "ray"
    assert "renders and analysis on Ray workers" in (out / "docs" / model["slug"] / "index.md").read_text()


def _worker_pids() -> list[int]:
    """Processes of reportgen's Ray workers (Ray names them after the actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"RenderWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_killed_worker_is_replaced_and_the_build_completes(tmp_path, local_build):
    reference, _ = local_build
    out = tmp_path / "ray-killed"
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(report=build(config(out, executor="ray"))))
    runner.start()
    renders = out / ".cache" / "renders"
    deadline = time.time() + 240
    while runner.is_alive() and time.time() < deadline and not (renders.is_dir() and any(renders.rglob("*.json"))):
        time.sleep(0.05)  # until the driver has stored a first job's renders
    victims = _worker_pids()
    assert runner.is_alive() and victims, "the build ended before a worker could be killed"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=600)
    assert not runner.is_alive() and outcome["report"].exit_code == 0
    assert set(_worker_pids()).isdisjoint(victims)  # a new worker took over
    assert_same_report(out, reference)
    assert_store_intact(out / ".cache")


def test_shards_into_a_shared_store_then_one_build_equal_one_build(tmp_path, local_build):
    reference, local_report = local_build
    shared = tmp_path / "shared-store"
    shard_reports = [build(config(tmp_path / f"shard{i}", store=str(shared), shard=f"{i}/2")) for i in range(2)]
    assert sum(r.rendered for r in shard_reports) == local_report.rendered  # each job in one shard only
    assert all(r.rendered > 0 and r.pages == 0 for r in shard_reports)
    assert not (tmp_path / "shard0" / "manifest.json").exists()
    out = tmp_path / "final"
    final = build(config(out, store=str(shared)))
    assert final.exit_code == 0 and final.rendered == 0 and final.cached == local_report.rendered
    model, found = units_of(out)
    _, expected = units_of(reference)
    assert_same_renders(found, expected)
    assert_store_intact(shared)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["store"] == str(shared)
    assert not (out / ".cache" / "renders").exists()  # everything lives in the shared store


def test_shards_into_one_out_then_reportgen_site_equal_one_build(tmp_path, local_build):
    reference, local_report = local_build
    out = tmp_path / "report"  # every shard writes here (a shared folder), store in OUT/.cache
    assert build(config(out, shard="1/2")).exit_code == 0
    with pytest.raises(StoreError, match=r"shard\(s\) 0/2 have not finished"):
        rebuild_site(out, site=False)
    record = json.loads((out / "shards" / "1-of-2.json").read_text())
    fake = out / "shards" / "0-of-2.json"  # a shard that claims to be done but stored nothing
    fake.write_text(json.dumps({**record, "shard": [0, 2]}))
    with pytest.raises(StoreError, match="renders of test_efficientnet are not in the store"):
        rebuild_site(out, site=False)
    fake.write_text(json.dumps({**record, "shard": [0, 2], "seed": 1}))
    with pytest.raises(StoreError, match="different settings"):
        rebuild_site(out, site=False)
    fake.unlink()
    assert build(config(out, shard="0/2")).exit_code == 0
    assert not (out / "manifest.json").exists()
    final = rebuild_site(out, site=False)
    assert final.rendered == 0 and final.cached == local_report.rendered and final.pages > 0
    assert_same_renders(units_of(out)[1], units_of(reference)[1])
    assert not (out / "shards").exists()  # assembled: from now on `reportgen site` uses the manifest
    assert rebuild_site(out, site=False).pages == final.pages


@pytest.mark.parametrize("flags,needle", [
    ({"shard": "2/2"}, "0 <= i < N"),
    ({"shard": "a/b"}, "i/N"),
    ({"ray_address": "auto"}, "--executor ray"),
    ({"executor": "ray", "ray_address": "auto"}, "needs --store"),
    ({"executor": "ray", "shard": "0/2"}, "without --executor ray"),
    ({"executor": "dask"}, "unknown"),
])
def test_executor_flags_are_checked(tmp_path, flags, needle):
    with pytest.raises(UsageError, match=needle):
        config(tmp_path / "out", **flags)


def test_ray_missing_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    from reportgen.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UsageError, match=r"pip install 'reportgen\[ray\]'"):
        make_executor("ray")
