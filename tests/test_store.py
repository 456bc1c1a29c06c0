import json

import numpy as np

from reportgen.store import Store, atomic_write


def _store(tmp_path):
    return Store(tmp_path / ".cache")


def test_hit_miss_and_corrupt_entries(tmp_path):
    store = _store(tmp_path)
    image = (np.arange(8 * 8 * 3) % 255).astype(np.uint8).reshape(8, 8, 3)
    key = Store.render_key("m", "sd:1", "blocks.1", 3, {"size": 8}, 0, {"mean": [0.5] * 3})
    assert store.get_render(key) is None
    store.put_render(key, image, {"activation": 1.5})
    hit = store.get_render(key)
    assert hit is not None and hit.meta["activation"] == 1.5
    assert np.array_equal(hit.image(), image)

    hit.png.write_bytes(hit.png.read_bytes()[:20])  # truncated master
    assert store.get_render(key) is None
    store.put_render(key, image, {"activation": 1.5})
    meta = hit.png.with_suffix(".json")
    meta.write_text(meta.read_text()[:10])  # torn done-marker
    assert store.get_render(key) is None


def test_keys_change_with_every_input():
    base = dict(model="m", weights_digest="w", layer="l", channel=1, settings={"steps": 8}, seed=0, preprocess={})
    key = Store.render_key(**base)
    for field, value in [("model", "n"), ("weights_digest", "v"), ("layer", "k"), ("channel", 2),
                         ("settings", {"steps": 9}), ("seed", 1), ("preprocess", {"mean": 1})]:
        assert Store.render_key(**{**base, field: value}) != key
    assert Store.render_key(**base) == key


def test_arrays_roundtrip_and_corruption(tmp_path):
    store = _store(tmp_path)
    store.put_arrays("k" * 64, {"a": np.arange(3)})
    assert np.array_equal(store.get_arrays("k" * 64)["a"], np.arange(3))
    path = next((tmp_path / ".cache" / "analysis").rglob("*.npz"))
    path.write_bytes(b"junk")
    assert store.get_arrays("k" * 64) is None


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write(tmp_path / "a" / "f.json", json.dumps({"x": 1}).encode())
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.json"]
