import json
from pathlib import Path

import numpy as np

from reportgen.store import Store, atomic_write, canonical_key


def _store(tmp_path):
    return Store(tmp_path / ".cache")


def test_hit_miss_and_corrupt_entries(tmp_path):
    store = _store(tmp_path)
    image = (np.arange(8 * 8 * 3) % 255).astype(np.uint8).reshape(8, 8, 3)
    key = canonical_key({"render": 3})
    assert store.get_render(key) is None
    store.put_render(key, image, {"activation": 1.5})
    hit = store.get_render(key)
    assert hit is not None and hit.meta["activation"] == 1.5
    assert np.array_equal(hit.image(), image)

    png = Path(store.location("renders", key, ".png"))
    png.write_bytes(png.read_bytes()[:20])  # truncated master
    assert store.get_render(key) is None
    store.put_render(key, image, {"activation": 1.5})
    meta = png.with_suffix(".json")
    meta.write_text(meta.read_text()[:10])  # torn done-marker
    assert store.get_render(key) is None


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


def test_a_url_store_keeps_the_same_entries_and_checks(tmp_path):
    """An fsspec URL (here fsspec's in-memory file system; s3:// and gs:// work the same way) holds
    renders, arrays and images like a folder, with the same corruption checks."""
    import fsspec

    store = Store("memory://reportgen-test/cache")
    image = (np.arange(6 * 6 * 3) % 251).astype(np.uint8).reshape(6, 6, 3)
    key = canonical_key({"render": 0})
    assert store.remote and store.get_render(key) is None
    store.put_render(key, image, {"activation": 2.0})
    assert np.array_equal(store.get_render(key).image(), image)
    store.put_arrays("a" * 64, {"x": np.arange(4)})
    assert np.array_equal(store.get_arrays("a" * 64)["x"], np.arange(4))
    assert np.array_equal(store.get_image(store.put_image(image)), image)
    fs = fsspec.filesystem("memory")
    png = store.location("renders", key, ".png")
    assert png == f"memory://reportgen-test/cache/renders/{key[:2]}/{key}.png" and fs.exists(png)
    fs.pipe_file(png, b"\x89PNG broken")
    assert store.get_render(key) is None  # the JSON's hash no longer matches: a miss, rendered again


def test_a_url_store_with_an_unknown_protocol_is_one_clear_error():
    import pytest

    from reportgen.errors import StoreError

    with pytest.raises(StoreError, match="unknown protocol 'nosuch'"):
        Store("nosuch://bucket/cache")
