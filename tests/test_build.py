"""Whole builds at toy scale: manifest, pages, strict site, cache reuse and repair, random-weight labels."""

import json
from pathlib import Path

import numpy as np
import pytest

from reportgen.config import resolve_build_config
from reportgen.pipeline import build, rebuild_site


def tiny_config(out: Path, **flags):
    base = {"model": ["test_efficientnet"], "weights": "none", "layers": "0,2,-1", "units": "3", "neurons": "1",
            "variants": "1", "classes": 2, "dreams": 1, "steps": 6, "size": 32, "out": out, "preset": "quick",
            "drivers": 0, "groups": 0}  # drivers and groups: their own tests (counts here are of the other kinds)
    return resolve_build_config({**base, **flags})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "report"
    report = build(tiny_config(out))
    return out, report


def test_manifest_pages_and_site(built):
    out, report = built
    # per layer: 3 channels, 1 centre neuron, 1 unit's second seed, negative, diversity and accentuation,
    # 1 photo's DeepDream and inversion; and 2 class visualizations
    assert report.exit_code == 0 and report.rendered == 3 * (3 + 1 + 4 + 2) + 2 and report.cached == 0
    manifest = json.loads((out / "manifest.json").read_text())
    model = manifest["models"][0]
    assert model["name"] == "test_efficientnet" and model["device"] == "cpu" and model["seed"] == 0
    assert set(model["versions"]) >= {"reportgen", "torch", "timm"} and model["timings"]["render"] > 0
    assert [layer["module"] for layer in model["layers"]] == ["bn1", "blocks.1.0", "bn2"]
    for layer in model["layers"]:
        assert [u["channel"] for u in layer["units"]] == [0, 1, 2]
        for unit in layer["units"]:
            assert (out / unit["render"]).is_file()
            assert "activation_ratio" in unit
            assert (out / "site" / model["slug"] / layer["slug"] / str(unit["channel"]) / "index.html").is_file()
    drivers = sum(len(layer["drivers"]) for layer in model["layers"])  # pages of channels the units name
    assert (out / "site" / "index.html").is_file() and report.site.pages == 1 + 1 + 3 + 9 + drivers
    fields = [layer["rf"] for layer in model["layers"]]
    assert fields[0]["size"] == 3 and fields[1]["size"] > 3  # bn1 follows the 3x3 stem conv
    assert fields[2]["global"]  # test_efficientnet has squeeze-excite gates: bn2 sees the whole image
    assert "Receptive field (theoretical) | 3 px" in (out / "docs" / "test_efficientnet" / "bn1" / "index.md").read_text()
    assert "Random weights" in (out / "docs" / "test_efficientnet" / "index.md").read_text()


def test_variants_dreams_and_classes_reach_the_pages(built):
    out, _ = built
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    site = out / "site" / model["slug"]
    assert [c["class"] for c in model["classes"]] == [1, 130] and model["classes"][1]["label"] == "flamingo"
    # class visualizations render with the stronger class transforms, and the model page says which
    assert model["class_render"] == {**model["settings"]["render"], "scales": [0.4, 1.6], "max_angle": 45.0}
    assert "scale\n0.4–1.6, rotation up to ±45.0°" in (out / "docs" / model["slug"] / "index.md").read_text()
    for entry in model["classes"]:
        assert (site / "classes" / f"{entry['class']}.webp").is_file() and 0 <= entry["prob"] <= 1
    assert "flamingo" in (out / "docs" / model["slug"] / "index.md").read_text()
    defined = False
    for layer in model["layers"]:
        first, *others = layer["units"]
        assert all(u[k] is None for u in others for k in ("second_seed", "negative", "diversity", "accentuation"))
        accent = first["accentuation"]  # more of the unit than its top reference image gives
        assert accent["activation"] > accent["start"]
        page = (site / layer["slug"] / str(first["channel"]) / "index.html").read_text()
        assert f'src="../../refs/{accent["image"]}.webp"' in page and f'src="../img/{first["channel"]}-accentuation.webp"' in page
        assert -1 <= first["second_seed"]["agreement"] <= 1 and -1 <= layer["seed_baseline"] <= 1
        assert first["negative"]["activation"] < first["activation"]
        diversity, ref_max = first["diversity"], first["ref_max"]
        if ref_max is not None and ref_max > 0:  # each variant's ratio; together they average to the strip's
            defined = True
            assert len(diversity["ratios"]) == 3
            assert sum(diversity["ratios"]) / 3 == pytest.approx(diversity["activation"] / ref_max)
        else:
            assert diversity["ratios"] is None
        for unit in layer["units"]:
            assert set(unit["perturbed"]) in ({"crop", "shift", "blur"}, set())
            assert unit["perturbed_ratio"] is None or unit["perturbed_ratio"] == pytest.approx(
                sum(unit["perturbed"].values()) / 3)
        folder = site / layer["slug"]
        for name in ("img/0-second_seed.webp", "img/0-negative.webp", "img/0-diversity.webp"):
            assert (folder / name).is_file(), name
        (dream,) = layer["dreams"]
        assert dream["image"] == model["references"]["images"][0]["index"]
        assert (folder / "dreams" / f"{dream['image']}-dream.webp").is_file()
        assert (folder / "dreams" / f"{dream['image']}-inversion.webp").is_file()
        assert dream["dream"]["activation"] > dream["dream"]["start"]  # DeepDream amplified what the layer saw
        assert dream["inversion"]["error"] < dream["inversion"]["start"]  # the inversion moved toward the photo
    assert defined  # some unit's photographs excite it: its variants' ratios were checked
    unit_page = (out / "docs" / model["slug"] / "bn1" / "0" / "index.md").read_text()
    assert "Perturbed ratio" in unit_page and "Seed agreement" in unit_page and "## Variants" in unit_page
    assert "## DeepDream and inversion" in (out / "docs" / model["slug"] / "bn1" / "index.md").read_text()


def test_real_images_units_and_receptive_fields_reach_the_pages(built):
    from reportgen.images import decode

    out, _ = built
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    site = out / "site" / model["slug"]
    used = model["references"]["used"]
    assert used == len(model["references"]["images"]) and used >= 10  # scikit-image's offline photographs
    for layer in model["layers"]:
        folder = site / layer["slug"]
        assert (folder / "erf.webp").is_file() and 1 <= layer["erf"]["size"] <= 160
        assert set(layer["dead"]) <= set(range(layer["channels"]))
        for pair in layer["redundant"]:
            assert pair["r"] >= layer["redundant_r"] and pair["partner"] != pair["channel"]
        for unit in layer["units"]:
            values = [t["value"] for t in unit["top"]]
            assert len(values) == 5 and values == sorted(values, reverse=True)
            assert values[0] == pytest.approx(unit["ref_max"])
            for t in unit["top"]:
                assert (folder / "maps" / f"{t['image']}-{unit['channel']}.webp").is_file()
        for i in layer["maps"]["images"][:16]:
            assert (folder / "maps" / f"{i}-{layer['units'][0]['channel']}.webp").is_file()
        first, *others = layer["units"]
        assert all(u["neuron"] is None for u in others)  # --neurons 1
        neuron = first["neuron"]
        top, left, bottom, right = neuron["box"]
        whole = neuron["box"] == [0, 0, 31, 31]  # the field covers the canvas: nothing to enlarge
        assert (folder / "img" / "0-neuron.webp").is_file() and (folder / "img" / "0-neuron-zoom.webp").is_file() != whole
        assert 0 <= top <= bottom < 32 and 0 <= left <= right < 32
        master = out / ".cache" / "renders" / neuron["key"][:2] / f"{neuron['key']}.png"
        pixels = decode(master.read_bytes()).astype(int)
        outside = np.ones(pixels.shape[:2], bool)
        outside[top:bottom + 1, left:right + 1] = False
        if outside.any():  # deep layers see the whole canvas
            assert (pixels[outside] == pixels[outside][0]).all()  # only the receptive field was optimized
        assert pixels[~outside].std() > 0
    bn1 = (out / "docs" / model["slug"] / "bn1" / "index.md").read_text()
    assert "## Activation maps" in bn1 and "## Dead and redundant units" in bn1 and "Effective receptive field" in bn1
    unit_page = (out / "docs" / model["slug"] / "bn1" / "0" / "index.md").read_text()
    assert "Reference images that excite it most" in unit_page and "## Centre neuron" in unit_page


def test_repeated_build_renders_nothing(built):
    out, _ = built
    report = build(tiny_config(out))
    assert report.rendered == 0 and report.cached == 32


def test_corrupt_cache_entry_is_rendered_again(built):
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    key = manifest["models"][0]["layers"][1]["units"][0]["key"]
    png = out / ".cache" / "renders" / key[:2] / f"{key}.png"
    png.write_bytes(b"not a png")
    report = build(tiny_config(out))
    assert report.rendered == 1 and report.cached == 31


def test_site_command_needs_no_model(built, monkeypatch):
    out, _ = built
    import reportgen.models

    monkeypatch.setattr(reportgen.models, "load_model", lambda *a, **k: pytest.fail("site loaded a model"))
    written = {path: path.read_bytes() for path in (out / "docs").rglob("*.md")}  # by the build, from its entry
    report = rebuild_site(out)
    layers = json.loads((out / "manifest.json").read_text())["models"][0]["layers"]
    assert report.pages == 14 + sum(len(layer["drivers"]) for layer in layers) and (out / "site" / "index.html").is_file()
    # from the manifest read back: the same pages, word for word
    assert {path: path.read_bytes() for path in (out / "docs").rglob("*.md")} == written


def test_a_model_entry_is_what_reading_its_json_back_gives(tmp_path):
    """Pages are written from the entry in memory during a build and from manifest.json by
    `reportgen site`: the two must be the same records (lists, not tuples; nothing dropped)."""
    from reportgen import pipeline
    from reportgen.manifest import ModelEntry, from_json, to_json
    from reportgen.progress import Progress
    from reportgen.store import Store

    config = tiny_config(tmp_path / "out", layers="1,-1", units="2", classes=1, steps=2, drivers=2, groups=2)
    plan = pipeline._plan("test_efficientnet", config)
    entry = pipeline.build_model(plan, config, Store(tmp_path / "store"), Progress(), pipeline.BuildReport(tmp_path))
    assert from_json(ModelEntry, json.loads(json.dumps(to_json(entry)))) == entry


def test_site_refuses_a_manifest_of_another_version(tmp_path):
    from reportgen.errors import StoreError
    from reportgen.manifest import MANIFEST_SCHEMA

    (tmp_path / "manifest.json").write_text(json.dumps({"models": [{"name": "old"}]}))
    with pytest.raises(StoreError, match="another reportgen version"):
        rebuild_site(tmp_path)
    # this schema's number, but not its fields (a hand-edited file): the same one line, no traceback
    for models in ([{"name": "old"}], 3):
        (tmp_path / "manifest.json").write_text(json.dumps({"schema": MANIFEST_SCHEMA, "reportgen": "0", "title": "t",
                                                            "updated": "", "models": models}))
        with pytest.raises(StoreError, match="another reportgen version"):
            rebuild_site(tmp_path)


def test_the_manifest_reads_back_as_typed_records_and_writes_the_same_json(built, tmp_path):
    from reportgen import manifest as records

    out, _ = built
    manifest = records.read_manifest(out)
    model = manifest.models[0]
    unit = model.layers[0].units[0]  # the first unit has every kind of further render
    assert isinstance(model, records.ModelEntry) and isinstance(model.layers[0], records.LayerEntry)
    assert isinstance(unit.second_seed, records.SecondSeed) and isinstance(unit.diversity, records.Diversity)
    assert isinstance(unit.accentuation, records.Accentuation) and type(unit.negative) is records.Variant
    assert isinstance(unit.neuron, records.Neuron) and isinstance(unit.top[0], records.TopImage)
    assert isinstance(model.classes[0], records.ClassEntry) and model.classes[1].label == "flamingo"
    assert isinstance(model.layers[1].units[0].inputs[0], records.Link) and model.layers[2].rf.global_
    records.write_manifest(tmp_path, manifest)  # nothing lost or renamed on the way through the types
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()



def test_a_second_model_is_added_without_touching_the_first(built):
    out, _ = built
    first_renders = {p: p.stat().st_mtime_ns for p in (out / ".cache" / "renders").rglob("*.png")}
    report = build(tiny_config(out, model=["test_resnet"], layers="-1", units="2", variants="0", classes=0, dreams=0))
    assert report.rendered == 2 + 1 and report.cached == 0  # only the new model's units (and one neuron)
    assert all(p.stat().st_mtime_ns == t for p, t in first_renders.items())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["test_efficientnet", "test_resnet"]
    home = (out / "site" / "index.html").read_text()
    assert 'href="test_efficientnet/index.html"' in home and 'href="test_resnet/index.html"' in home


@pytest.mark.slow  # a full-size inception_v3
def test_inception_v3_random_weights_uses_its_own_preprocessing(tmp_path):
    out = tmp_path / "inc"
    report = build(resolve_build_config({"model": ["inception_v3"], "weights": "none", "layers": "0,-1", "units": "2",
                                         "variants": "0", "classes": 0, "dreams": 0, "steps": 2, "size": 96,
                                         "out": out}))
    assert report.exit_code == 0
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    assert model["preprocess"]["input_size"] == [3, 299, 299]
    assert model["preprocess"]["mean"] == [0.5, 0.5, 0.5] and model["preprocess"]["std"] == [0.5, 0.5, 0.5]
    assert [len(layer["units"]) for layer in model["layers"]] == [2, 2]
    for page in ["index.md", "inception_v3/index.md", "inception_v3/Mixed_7c/index.md"]:
        assert "random" in (out / "docs" / page).read_text().lower()


@pytest.mark.e2e
def test_real_lite0_weights_end_to_end(tmp_path):
    out = tmp_path / "lite0"
    report = build(resolve_build_config({"layers": "2,-1", "units": "2", "variants": "1", "classes": 0, "dreams": 0,
                                         "steps": 24, "size": 64, "out": out, "drivers": 0,
                                         "groups": 0}))
    # per layer 2 channels, 2 centre neurons, 1 second seed, negative, diversity and accentuation (class
    # visualizations need more than 24 steps at 64 px: benchmarks/classes.py measures them)
    assert report.exit_code == 0 and report.rendered == 2 * (2 + 2 + 4)
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    assert model["weights"]["pretrained"] and model["weights"]["source"].startswith("bundled:")
    fit = model["normalization"]  # the bundled weights are fed as trained: no warning, and the page says why
    assert fit["used"]["stem"] <= 0.6 < fit["imagenet"]["stem"] and fit["better"] is None
    assert "trained with TensorFlow" in (out / "docs" / "tf_efficientnet_lite0" / "index.md").read_text()
    chelsea = next(r for r in model["references"]["images"] if r["name"] == "chelsea")
    assert "cat" in chelsea["predictions"][0]["label"]
    units = [u for layer in model["layers"] for u in layer["units"]]
    for u in units:  # render vs. best photograph; undefined where no photograph has a positive mean
        expected = u["activation"] / u["ref_max"] if u["ref_max"] > 0 else None
        assert u["activation_ratio"] == pytest.approx(expected) if expected else u["activation_ratio"] is None
    assert sum(u["activation_ratio"] is not None and u["activation_ratio"] > 1 for u in units) >= 2
    assert all(u["neuron"]["ratio"] is not None and u["neuron"]["activation"] > 0 for u in units)
    assert not any(u["flat"] for u in units) and not report.flat  # pretrained units never go grey
    for layer in model["layers"]:  # two seeds of a pretrained unit agree more than two different units
        first = layer["units"][0]
        assert first["second_seed"]["agreement"] > layer["seed_baseline"], (first["second_seed"], layer["seed_baseline"])
    assert (out / "site" / "tf_efficientnet_lite0" / "index.html").is_file()


def test_own_image_folder_best_images_and_skipped_files(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        pixels = (rng.random((40 + i, 50, 3)) * 255 * (i % 4 + 1) / 4).astype(np.uint8)
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else "") / f"img{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    report = build(tiny_config(out, images=folder, layers="-1", units="4"))
    assert report.exit_code == 0
    model = json.loads((out / "manifest.json").read_text())["models"][0]
    refs = {r["index"]: r for r in model["references"]["images"]}
    assert model["references"]["skipped"] and "broken.jpg" in model["references"]["skipped"][0]
    for unit in model["layers"][0]["units"]:
        best = refs[unit["ref_best_image"]]
        page = (out / "docs" / "test_efficientnet" / "bn2" / str(unit["channel"]) / "index.md").read_text()
        assert f"maps/{best['index']}-{unit['channel']}.webp" in page  # its best image, with the unit's heat map
        assert best["name"].replace(".", "\\.").split("/")[-1] in page
    assert "1 file(s) skipped" in (out / "docs" / "test_efficientnet" / "index.md").read_text()
    shown = [r["index"] for r in model["references"]["images"]]  # the first 16 readable, then each unit's top images
    assert len(shown) == len(set(shown)) and shown[:16] == sorted(shown[:16])
    assert {t["image"] for u in model["layers"][0]["units"] for t in u["top"]} <= set(shown)


def test_drivers_of_the_next_layer_get_pages_and_the_strongest_a_render(tmp_path):
    from reportgen.analysis.circuits import driver_channels

    out = tmp_path / "report"
    report = build(tiny_config(out, drivers=2))
    assert report.exit_code == 0
    layers = json.loads((out / "manifest.json").read_text())["models"][0]["layers"]
    for layer, after in zip(layers, layers[1:]):
        shown = {u["channel"] for u in layer["units"]}
        named = {d["channel"] for u in after["units"] for d in u["inputs"]}  # every driver a page names
        drivers = {d["channel"]: d for d in layer["drivers"]}
        assert set(drivers) == named - shown and named  # each has an entry, none of them a shown unit
        rendered = [c for c, d in drivers.items() if d["key"]]
        assert len(rendered) == min(2, len(drivers)) and all(not d["failed"] for d in drivers.values())
        counts = {c: sum(c in {d["channel"] for d in u["inputs"]} for u in after["units"]) for c in drivers}
        assert min(counts[c] for c in rendered) >= max([counts[c] for c in drivers if c not in rendered], default=0)
        for c, driver in drivers.items():  # a page each, saying which units it drives
            assert {f["channel"] for f in driver["feeds"]} == {u["channel"] for u in after["units"]
                                                                if c in {d["channel"] for d in u["inputs"]}}
            page = (out / "site" / "test_efficientnet" / layer["slug"] / str(c) / "index.html").read_text()
            assert ("Not rendered" in page) == (c not in rendered)
    assert layers[-1]["drivers"] == []  # no layer after the last
    assert driver_channels(None, [0]) == []
