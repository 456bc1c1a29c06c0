"""Generated Markdown against golden files, escaping of model-supplied names, a strict site build.

Set REPORTGEN_UPDATE_GOLDEN=1 to rewrite the golden files after an intended template change.
"""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from reportgen import pages
from reportgen.manifest import MANIFEST_SCHEMA, ERFEntry, Manifest, RFEntry, from_json
from reportgen.store import Store

GOLDEN = Path(__file__).parent / "golden"


def sample_manifest(store: Store | None = None) -> Manifest:
    """A two-layer, three-unit manifest as the pipeline writes it (keys point into ``store``),
    read from its JSON as ``reportgen site`` reads one."""
    image_key = store.put_image(np.full((16, 16, 3), 120, np.uint8)) if store else "0" * 64
    maps_key, erf_key = "m" * 64, "e" * 64
    if store:
        store.put_arrays(maps_key, {"pairs|stem": np.array([[3, 0], [3, 1]]), "scale|stem": np.array([1.0, 2.0]),
                                   "maps|stem": np.linspace(-1, 1, 2 * 4 * 4).reshape(2, 4, 4).astype(np.float16),
                                   "pairs|blocks.1": np.array([[3, 0]]), "scale|blocks.1": np.array([1.0]),
                                   "maps|blocks.1": np.zeros((1, 4, 4), np.float16)})
        store.put_arrays(erf_key, {"erf|stem": np.eye(64, dtype=np.float32), "erf|blocks.1": np.ones((64, 64), np.float32)})

    def put(key, width=32):
        if store:
            store.put_render(key, np.tile(np.arange(0, 256, 8, dtype=np.uint8)[:, None, None], (1, width, 3)), {})
        return key

    def variant(key, ratio, **extra):
        return {"key": put(key, 96 if "ratios" in extra else 32), "activation": 2.0 * ratio, "flat": False,
                "ratio": ratio, "objective": "o", "seed": 9, **extra}

    def unit(layer, channel, ratio, neuron=False):
        key = f"{layer}-{channel}".ljust(64, "0")
        if store:
            store.put_render(key, np.full((32, 32, 3), 40 * channel, np.uint8), {"activation": 2.0})
            if neuron:
                store.put_render(key[::-1], np.full((32, 32, 3), 128, np.uint8), {"activation": 3.0})
        alive = ratio is not None
        variants = neuron  # the first unit has every kind of render
        return {"channel": channel, "key": key, "render": f"docs/toy/{layer}/img/{channel}.webp", "activation": 2.0,
                "ref_max": 2.0 / ratio if ratio else 0.0, "ref_mean": 0.5, "ref_peak": 4.0 if alive else -1.0,
                "fire_rate": 0.75 if alive else 0.0, "dead": not alive,
                "partner": {"channel": 1 - channel, "r": 0.97} if layer == "stem" else None,
                "redundant": layer == "stem",
                "top": [{"image": 3, "value": 2.0 / ratio}] if ratio else [],
                "ref_best_image": 3, "activation_ratio": ratio, "seed": 42, "objective": f"mean of channel {channel} at {layer}",
                "curve": [[0, 0.1], [5, 1.0], [9, 2.0]], "seconds": 1.5, "failed": False,
                "neuron": {"failed": False, "key": key[::-1], "box": [10, 11, 20, 21], "activation": 3.0, "ratio": 0.75,
                           "objective": f"neuron (centre) of channel {channel} at {layer}", "seed": 7} if neuron else None,
                "perturbed": {"crop": 1.25, "shift": 1.0, "blur": 0.75} if ratio else {},
                "perturbed_ratio": 1.0 if ratio else None, "flat": channel == 1,
                "second_seed": variant("s" * 64, 1.25, agreement=0.8) if variants else None,
                "negative": variant("n" * 64, -0.5) if variants else None,
                "diversity": variant("d" * 64, 1.0, ratios=[1.25, 1.0, 0.75]) if variants else None,
                "inputs": [{"layer": "stem", "channel": 1, "score": 0.5}, {"layer": "stem", "channel": 2, "score": -0.25}]
                if layer == "blocks.1" else None,
                "promotes": [{"class": 1, "label": "goldfish", "score": 0.75}] if layer == "blocks.1" else None}

    layers = []
    for index, (name, units) in enumerate([("stem", [unit("stem", 0, 1.5, neuron=True), unit("stem", 1, 0.5)]),
                                           ("blocks.1", [unit("blocks.1", 0, None)])]):
        ratios = [u["activation_ratio"] for u in units if u["activation_ratio"] is not None]
        layers.append({"index": index, "module": name, "slug": name, "kind": "Conv2d", "out_shape": [4, 8, 8],
                       "channels": 4, "stride": 2 * (index + 1), "layout": "nchw", "pre_activation": index == 0, "units": units,
                       "rf": {"size": 3 + 4 * index, "padding": 1 + 2 * index, "global": False},
                       "erf": {"size": 3 + 2 * index, "images": 1, "key": erf_key},
                       "maps": {"key": maps_key, "images": [3], "units": [0, 1] if index == 0 else [0]},
                       "median_ratio": float(np.median(ratios)) if ratios else None,
                       "median_perturbed_ratio": 1.0 if ratios else None, "seed_baseline": 0.25 if index == 0 else None,
                       "dreams": [{"image": 3, "dream": {"key": put("q" * 64), "start": 1.0, "activation": 2.0},
                                   "inversion": {"key": put("i" * 64), "error": 0.25, "start": 1.5}}] if index == 0 else [],
                       "dead": [u["channel"] for u in units if u["dead"]] + [3], "redundant_r": 0.95,
                       "redundant": [{"channel": 0, "partner": 1, "r": 0.97}, {"channel": 1, "partner": 0, "r": 0.97}]
                       if index == 0 else []})
    model = {
        "name": "toy", "slug": "toy",
        "weights": {"source": "random-init", "digest": "sd-sha256:abc", "pretrained": False,
                    "description": "random initialization (no pretrained weights)",
                    "matched": "12 tensors matched by name (3 num_batches_tracked counters not in the file)",
                    "why": "toy weights, trained as toy"},
        "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [3, 64, 64],
                       "interpolation": "bicubic", "crop_pct": 0.9},
        "fixed_input": True,
        "normalization": {
            "used": {"mean": [0.5] * 3, "std": [0.5] * 3, "stem": 1.3, "middle": 0.4, "late": 0.3, "layers": 9, "images": 2},
            "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "stem": 0.25, "middle": 0.2,
                         "late": 0.2, "layers": 9, "images": 2},
            "inception": {"mean": [0.5] * 3, "std": [0.5] * 3, "stem": 1.3, "middle": 0.4, "late": 0.3, "layers": 9,
                          "images": 2},
            "unit": {"mean": [0.0] * 3, "std": [1.0] * 3, "stem": 2.5, "middle": 0.8, "late": 0.5, "layers": 9,
                     "images": 2},
            "better": "imagenet"},
        "device": "cpu", "threads": 2, "executor": "local", "seed": 0, "rendered": 4, "cached": 0, "unit_count": 3, "neuron_count": 1, "variant_count": 1, "median_ratio": 1.0,
        "median_perturbed_ratio": 1.0,
        "classes": [{"class": 1, "label": "goldfish", "key": put("c" * 64), "logit": 9.0, "flat": False, "prob": 0.75,
                     "top": 1, "top_label": "goldfish"},
                    {"class": 2, "label": "great white shark", "key": None, "logit": None, "flat": False}],
        "class_render": {"size": 32, "steps": 10, "lr": 0.05, "param": "fft", "decorrelate": True, "decay_power": 1.0,
                         "pad": 4, "jitter": 6, "scales": [0.4, 1.6], "max_angle": 45.0},
        "render_seconds": 4.5, "pending": [], "unit_scales": [0.9, 1.1],
        "settings": {"preset": "quick", "units": "2", "drivers": 8, "render": {"size": 32, "steps": 10, "lr": 0.05, "param": "fft", "decorrelate": True,
                                                    "decay_power": 1.0, "pad": 4, "jitter": 2, "scales": [0.9, 1.1],
                                                    "max_angle": 10.0, "average": 0.2, "samples": 2,
                                                    "objective": "l2norm", "penalties": [["tv", 0.25], ["l2", 0.01]]}},
        "versions": {"reportgen": "0.1.0", "torch": "2", "timm": "1", "python": "3"},
        "timings": {"load": 1.0, "analysis": 2.0, "render": 3.0, "total": 6.0},
        "references": {"label": "toy images (2)", "digest": "d", "skipped": ["bad.png: OSError"], "used": 1,
                       "images": [{"index": 3, "name": "grey", "image": image_key, "thumb": "3.webp",
                                   "predictions": [{"class": 1, "label": "goldfish", "prob": 0.5}]}]},
        "layers": layers,
    }
    return from_json(Manifest, {"schema": MANIFEST_SCHEMA, "reportgen": "0.1.0", "title": "reportgen: toy",
                                "updated": "2026-01-01T00:00:00+00:00", "models": [model]})


@pytest.mark.parametrize("name,render", [
    ("home.md", lambda m: pages.render_home(m)),
    ("model.md", lambda m: pages.render_model(m.models[0])),
    ("layer.md", lambda m: pages.render_layer(m.models[0], 0)),
    ("unit.md", lambda m: pages.render_unit(m.models[0], m.models[0].layers[0], 0)),
    ("mkdocs.yml", lambda m: pages.render_mkdocs_yml(m)),
])
def test_golden_markdown(name, render):
    text = render(sample_manifest())
    path = GOLDEN / name
    if os.environ.get("REPORTGEN_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_pages_say_what_the_numbers_mean():
    manifest = sample_manifest()
    model = manifest.models[0]
    weak_unit = pages.render_unit(model, model.layers[0], 1)
    assert "Weaker than real images" in weak_unit and "×0.50" in weak_unit
    strong_unit = pages.render_unit(model, model.layers[0], 0)
    assert "Weaker than real images" not in strong_unit and "×1.50" in strong_unit
    assert "Random weights" in pages.render_model(model)
    warned = pages.render_model(model)
    assert "may expect another input normalization" in warned and "mean 0.485, 0.456, 0.406" in warned
    assert "resized to it on the way in" in warned and "stem 1.3, middle layers 0.4" in warned
    fitting = replace(model, fixed_input=False, normalization={**model.normalization, "better": None})
    assert "another input normalization" not in pages.render_model(fitting)
    assert "resized" not in pages.render_model(fitting)
    assert "Normalization check" not in pages.render_model(replace(model, normalization=None))
    dead = pages.render_unit(model, model.layers[1], 0)
    assert "never fires" in dead and "| **—** |" in dead.replace("**—** (", "**—** |")
    fragile = replace(model.layers[0].units[0], perturbed_ratio=0.5)
    text = pages.render_unit(model, replace(model.layers[0], units=[fragile]), 0)
    assert "Fragile render" in text and "×0.50" in text
    assert "Fragile render" not in strong_unit
    model_page = pages.render_model(model)
    assert "Class visualizations" in model_page and "goldfish" in model_page and "render failed" in model_page


def test_names_from_models_are_inert():
    hostile = '<script>alert(1)</script>](javascript:x) *b* `c`'
    import markdown

    rendered = markdown.markdown(f"[{pages.md_escape(hostile)}](x.md) {pages.md_escape(hostile)}")
    assert "<script" not in rendered and "javascript:x\"" not in rendered and 'href="javascript' not in rendered
    assert "<code>" not in rendered and "<em>" not in rendered and rendered.count("<a ") == 1
    assert pages.slug("../../etc") == "_.._.._etc"
    assert pages.slug("..") == "_.." and pages.slug("blocks.1.0") == "blocks.1.0"
    assert "/" not in pages.slug("a/b") and pages.slug("a b<c>") == "a_b_c_"


def test_strict_site_build(tmp_path):
    from reportgen.site import build_site

    store = Store(tmp_path / ".cache")
    manifest = sample_manifest(store)
    count = pages.write_docs(tmp_path, manifest, store)
    assert count == 1 + 1 + 2 + 3  # home, model, layers, units
    info = build_site(tmp_path)
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "toy" / "stem" / "1" / "index.html").is_file()
    assert (site / "toy" / "stem" / "img" / "1.webp").is_file()
    for picture in ("img/0-neuron.webp", "img/0-neuron-zoom.webp", "maps/3-0.webp", "maps/3-1.webp", "erf.webp",
                    "img/0-second_seed.webp", "img/0-negative.webp", "img/0-diversity.webp", "dreams/3-dream.webp",
                    "dreams/3-inversion.webp"):
        assert (site / "toy" / "stem" / picture).is_file(), picture
    for absent in ("1-neuron", "1-second_seed", "1-negative", "1-diversity"):  # unit 1 has only its channel render
        assert not (site / "toy" / "stem" / "img" / f"{absent}.webp").exists(), absent
    assert (site / "toy" / "classes" / "1.webp").is_file() and not (site / "toy" / "classes" / "2.webp").exists()
    unit_html = (site / "toy" / "stem" / "0" / "index.html").read_text()
    for words in ("Perturbed ratio", "crop ×1.25", "r = 0.80", "Another seed", "Negative", "Diversity"):
        assert words in unit_html, words
    flat_html = (site / "toy" / "stem" / "1" / "index.html").read_text()
    assert "Flat render" in flat_html and "Flat render" not in unit_html
    layer_html = (site / "toy" / "stem" / "index.html").read_text()
    assert 'href="1/index.html"' in layer_html  # tiles link to unit pages
    home_html = (site / "index.html").read_text()
    assert "toy/stem/1/index.html" not in home_html  # unit pages stay out of the nav
    assert info.pages == 7


def test_rewriting_docs_drops_stale_pages(tmp_path):
    store = Store(tmp_path / ".cache")
    manifest = sample_manifest(store)
    pages.write_docs(tmp_path, manifest, store)
    manifest.models[0].layers.pop()
    pages.write_docs(tmp_path, manifest, store)
    assert not (tmp_path / "docs" / "toy" / "blocks.1").exists()
    assert not (tmp_path / "docs.new").exists() and not (tmp_path / "docs.old").exists()


def test_ratios_that_mislead_are_flagged_with_their_reason():
    def unit(**values):
        return replace(sample_manifest().models[0].layers[0].units[0],
                       **{"failed": False, "dead": False, "ref_max": 2.0, "ref_peak": 10.0, **values})

    assert pages.ratio_flag(unit()) is None  # the best image's mean is a fifth of the peak: a fair baseline
    tiny = pages.ratio_flag(unit(ref_max=0.194, ref_peak=7.5))  # bn2 unit 7 of the sample report: ×186.89
    assert tiny["short"] == "small baseline" and "0.194" in tiny["reason"] and "7.500" in tiny["reason"]
    assert pages.ratio_flag(unit(ref_max=-0.1))["short"] == "no ratio"
    assert pages.ratio_flag(unit(ref_max=None, dead=True))["short"] == "never fires"
    assert pages.ratio_flag(unit(failed=True, ref_max=0.0)) is None  # a failed render says so itself
    assert pages.ratio_flag(unit(rendered=False, ref_max=0.0)) is None  # a driver shown without a render

    model = sample_manifest().models[0]
    layer = model.layers[0]
    spotty = replace(layer.units[0], ref_max=0.1, ref_peak=4.0, activation_ratio=20.0)
    page = pages.render_layer(replace(model, layers=[replace(layer, units=[spotty, layer.units[1]])]), 0)
    assert page.count('data-flag="1"') == 1 and "×20.00 ⚠ small baseline" in page and "1 ratio flagged ⚠" in page
    unit_page = pages.render_unit(model, replace(layer, units=[spotty]), 0)
    assert "Read the ratio with care: small baseline" in unit_page
    assert "render's mean activation is ×0.50" in unit_page  # 2.0 on the render / peak 4.0


def test_activation_maps_are_a_colour_scale_over_the_photo_in_grey():
    from reportgen.images import heat_colors, heat_overlay

    photo = np.zeros((8, 8, 3), np.uint8)
    photo[..., 0] = 200  # red: its grey is 0.299 * 200
    off = heat_overlay(photo, np.zeros((2, 2)))
    assert (off == round(0.299 * 200 * 0.8 + 25)).all()  # the photo in grey, where the unit is off
    on = heat_overlay(photo, np.ones((2, 2)))
    assert (on == heat_colors(np.ones(1))[0]).all() and tuple(on[0, 0]) == (252, 255, 164)


def test_a_small_receptive_field_is_drawn_enlarged(tmp_path):
    store = Store(tmp_path / ".cache")
    model = sample_manifest(store).models[0]
    layer = model.layers[0]  # rf 3 px on a 64 px input
    window = pages.erf_window(layer, 64)
    assert window[2] - window[0] + 1 == 12  # 3 px fields: the central 12 px (the minimum), not the whole 64
    figure = dict(pages.layer_images(layer, {}, store, 64))["erf.webp"]
    assert figure.shape[:2] == (pages.ERF_FIGURE_SIDE, pages.ERF_FIGURE_SIDE)
    cyan = np.all(figure == (0, 255, 255), axis=-1)
    rows = np.flatnonzero(cyan.any(axis=1))
    assert rows.max() - rows.min() + 1 >= 3 * 256 // 12  # the 3 px square is drawn ~64 px wide


def test_top_images_come_with_the_crop_where_the_unit_fires_most(tmp_path):
    from reportgen.images import zoom

    layer = replace(sample_manifest().models[0].layers[0], rf=RFEntry(size=5, padding=2, global_=False),
                    erf=ERFEntry(size=3, images=1, key="e"), stride=4)
    # position (row 8, col 5) of a stride-4 map: its 5 px field starts at 4*8-2, 4*5-2, so it is centred on (32, 20)
    top, left, bottom, right = pages.field_crop_box(layer, 8, 5, 64)
    assert bottom - top + 1 == pages.MIN_CROP == right - left + 1  # small fields: at least MIN_CROP px
    assert abs((top + bottom) / 2 - 32) <= 0.5 and abs((left + right) / 2 - 20) <= 0.5
    assert pages.field_crop_box(layer, 0, 0, 64)[:2] == (0, 0)  # clipped to the image, not shifted off it
    wide = replace(layer, erf=ERFEntry(size=40, images=1, key="e"), rf=RFEntry(size=30, padding=13, global_=False))
    assert pages.field_crop_box(wide, 2, 5, 64)[2] - pages.field_crop_box(wide, 2, 5, 64)[0] + 1 == 30

    store = Store(tmp_path / ".cache")
    model = sample_manifest(store).models[0]
    stem = model.layers[0]  # its maps are linspace(-1, 1): unit 0's strongest position is the last, (3, 3)
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    images = dict(pages.layer_images(stem, {3: photo[::4, ::4]}, store, 64, originals={3: photo}))
    crop = images["crops/3-0.webp"]
    box = pages.field_crop_box(stem, 3, 3, 64)
    assert crop.shape[:2] == (pages.CROP_SIDE, pages.CROP_SIDE)
    np.testing.assert_array_equal(crop, zoom(photo, box, pages.CROP_SIDE))
    assert "crops/3-0.webp" in pages.render_unit(model, stem, 0)


def test_every_render_kind_shown_on_a_unit_page_has_its_typed_field():
    from dataclasses import fields

    from reportgen import manifest as records
    from reportgen.renders import KINDS

    names = {f.name for f in fields(records.UnitEntry)}
    for kind in KINDS.values():
        if kind.field:  # a kind the unit page shows: the manifest types it, the pages publish it
            assert kind.field in names, kind
            assert issubclass(records.record_of(records.UnitEntry, kind.field), records.Variant), kind
