"""A render's store key cannot go stale: change any setting or constant the render loop reads, or
what a render optimizes, and a build misses the cache and renders again."""

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from reportgen import renders
from reportgen.config import BuildConfig, RenderSettings, UnitSpec
from reportgen.optvis import render
from reportgen.optvis.objectives import ChannelL2
from reportgen.pipeline import BuildReport
from reportgen.store import Store

# Every constant the render code reads, named here by hand (the oracle), with another value for it.
CONSTANTS = [
    ("reportgen.optvis.render", "REDIRECT_STEPS", 8), ("reportgen.optvis.render", "CURVE_POINTS", 16),
    ("reportgen.optvis.render", "DIVERSITY_K", 4), ("reportgen.optvis.render", "DIVERSITY_WEIGHT", 4.0),
    ("reportgen.optvis.render", "CLASS_JITTER", 0.25), ("reportgen.optvis.render", "CLASS_SCALES", (0.5, 1.5)),
    ("reportgen.optvis.render", "CLASS_MAX_ANGLE", 30.0), ("reportgen.optvis.render", "GREY", 0.4),
    ("reportgen.optvis.render", "ACCENT_WEIGHT", 1.0), ("reportgen.optvis.dream", "ACCENT_STEPS", 32),
    ("reportgen.optvis.dream", "DREAM_STEPS", 32), ("reportgen.optvis.dream", "DREAM_LR", 0.02),
    ("reportgen.optvis.dream", "INVERT_JITTER", 3), ("reportgen.optvis.param", "MACO_GAIN", 1.0),
    ("reportgen.optvis.param", "GREY", 0.4), ("reportgen.optvis.objectives", "EPS", 1e-6),
    ("reportgen.optvis.trust", "CROP_KEEP", 0.7), ("reportgen.optvis.trust", "SHIFT_SHARE", 0.25),
    ("reportgen.optvis.trust", "BLUR_SIGMA", 2.0), ("reportgen.optvis.trust", "PERTURBATIONS", ("crop", "blur")),
    ("reportgen.optvis.trust", "GREY", 0.4), ("reportgen.renders", "RETRY_LR_FACTOR", 0.5),
    ("reportgen.renders", "RENDER_ALGO_VERSION", 99), ("reportgen.images", "FLAT_STD", 4.0),
    ("reportgen.optvis.param", "_COLOR", torch.eye(3)), ("reportgen.optvis.param", "_COLOR_SQRT", torch.eye(3)),
]
KINDS = ("channel", "neuron", "second-seed", "negative", "diversity", "accentuation", "group", "class", "dream",
         "inversion")
SETTINGS = RenderSettings(size=32, steps=4)


def _another(value, name=""):
    if name == "penalties":
        return (("tv", 0.25),)
    if name == "objective":
        return "l2norm"
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return "pixel" if value != "pixel" else "fft"
    if isinstance(value, tuple):
        return tuple(v + 0.05 for v in value)
    raise TypeError(value)


def _keys(tiny, settings=SETTINGS, loaded=None):
    loaded = loaded or tiny
    return {kind: renders.render_key(loaded, kind, "logits" if kind == "class" else "blocks.1.0", 1, settings, 0,
                                     box=(2, 2, 20, 20), name="goldfish",
                                     photo="p" * 64 if kind in (*renders.PHOTO_KINDS, "accentuation") else None,
                                     group="g/1" if kind == "group" else None)
            for kind in KINDS}


def test_every_render_setting_is_in_the_key(tiny):
    before = _keys(tiny)
    for field in dataclasses.fields(RenderSettings):
        changed = dataclasses.replace(SETTINGS, **{field.name: _another(getattr(SETTINGS, field.name), field.name)})
        after = _keys(tiny, changed)
        assert all(after[kind] != before[kind] for kind in KINDS), field.name


@pytest.mark.parametrize("module, name, value", CONSTANTS, ids=[f"{m.rsplit('.', 1)[-1]}.{n}" for m, n, _ in CONSTANTS])
def test_every_constant_of_the_render_code_is_in_the_key(monkeypatch, tiny, module, name, value):
    before = _keys(tiny)
    assert not np.array_equal(np.asarray(getattr(importlib.import_module(module), name)), np.asarray(value))
    monkeypatch.setattr(importlib.import_module(module), name, value)
    after = _keys(tiny)
    assert all(after[kind] != before[kind] for kind in KINDS)


def test_what_a_render_optimizes_is_in_the_key(monkeypatch, tiny):
    before = _keys(tiny)
    original = render.render_objective
    monkeypatch.setattr(render, "render_objective", lambda kind, layer, ids, *args, **kwargs: ChannelL2(layer, tuple(ids))
                        if kind == "channel" else original(kind, layer, ids, *args, **kwargs))
    after = _keys(tiny)
    assert after["channel"] != before["channel"]
    assert all(after[kind] == before[kind] for kind in KINDS if kind != "channel")


def test_the_model_its_feeding_and_the_unit_are_in_the_key(tiny):
    before = _keys(tiny)
    for changed in (dataclasses.replace(tiny, name="other"), dataclasses.replace(tiny, fixed_input=True),
                    dataclasses.replace(tiny, weights=dataclasses.replace(tiny.weights, digest="sd-sha256:0")),
                    dataclasses.replace(tiny, preprocess=dataclasses.replace(tiny.preprocess, mean=(0.5,) * 3))):
        assert all(a != b for a, b in zip(_keys(tiny, loaded=changed).values(), before.values()))
    key = renders.render_key(tiny, "neuron", "blocks.1.0", 1, SETTINGS, 0, box=(2, 2, 20, 20))
    assert renders.render_key(tiny, "neuron", "blocks.1.0", 1, SETTINGS, 0, box=(2, 2, 21, 21)) != key
    assert renders.render_key(tiny, "neuron", "blocks.1.0", 2, SETTINGS, 0, box=(2, 2, 20, 20)) != key
    assert renders.render_key(tiny, "neuron", "blocks.1.0", 1, SETTINGS, 1, box=(2, 2, 20, 20)) != key
    assert renders.render_key(tiny, "dream", "blocks.1.0", 1, SETTINGS, 0, photo="a" * 64) != \
        renders.render_key(tiny, "dream", "blocks.1.0", 1, SETTINGS, 0, photo="b" * 64)
    assert renders.render_key(tiny, "accentuation", "blocks.1.0", 1, SETTINGS, 0, photo="a" * 64) != \
        renders.render_key(tiny, "accentuation", "blocks.1.0", 1, SETTINGS, 0, photo="b" * 64)
    assert renders.render_key(tiny, "group", "blocks.1.0", 1, SETTINGS, 0, group="a/1") != \
        renders.render_key(tiny, "group", "blocks.1.0", 1, SETTINGS, 0, group="b/1")
    assert renders.render_key(tiny, "class", "logits", 1, SETTINGS, 0, name="a") != \
        renders.render_key(tiny, "class", "logits", 1, SETTINGS, 0, name="b")


def test_a_changed_constant_misses_the_store(monkeypatch, tmp_path, tiny):
    """The miss a user sees: a store holding every render of a plan serves all of them, until one
    constant changes; then every render is planned again."""
    store = Store(tmp_path / "cache")
    config = BuildConfig(render=SETTINGS, units=UnitSpec(first=2))

    def plan():
        report = BuildReport(tmp_path)
        rendered = renders.plan(tiny, "channel", "blocks.1.0", [0, 1], config, store, report)
        return rendered, report

    first, _ = plan()
    for key in first.keys.values():
        store.put_render(key, np.zeros((4, 4, 3), np.uint8), {"activation": 1.0})
    again, report = plan()
    assert report.cached == 2 and not again.jobs
    monkeypatch.setattr(render, "REDIRECT_STEPS", render.REDIRECT_STEPS + 1)
    changed, report = plan()
    assert report.cached == 0 and [job.todo for job in changed.jobs] == [(0, 1)]


def test_the_hand_list_names_every_constant_in_the_render_code():
    """A constant added to the render code must be added above, by someone who says whether the
    loop reads it (found by reading the source, not by the key's own introspection)."""
    named = {(module, name) for module, name, _ in CONSTANTS}
    for module in renders.RECIPE_MODULES:
        tree = ast.parse(Path(inspect.getfile(importlib.import_module(module))).read_text())
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id.lstrip("_").isupper() and target.id not in renders.NOT_IN_KEY:
                    value = getattr(importlib.import_module(module), target.id)
                    if isinstance(value, (int, float, tuple, torch.Tensor)):
                        assert (module, target.id) in named, (module, target.id)
