"""What real images do to units: the streaming pass agrees with brute force over all activations,
keeps bounded state, finds dead and twin units, and the shown maps are the model's own."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reportgen.analysis.activations import (REDUNDANT_R, LayerStats, _Running, activation_maps, analyze_references,
                                            model_input)
from reportgen.analysis.references import folder_references, iter_batches
from reportgen.analysis.stage import map_pairs
from reportgen.layers import FeatureTap
from reportgen.models import LoadedModel, Preprocess, WeightsInfo


def _photos(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        side = int(rng.integers(40, 90))
        pixels = (rng.random((side, side, 3)) * 255 * rng.random()).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


class Twins(nn.Module):
    """Channel 0 is a random filter, channel 1 = 2 × channel 0 + 1 (a perfect twin), channel 2 an
    unrelated filter, channel 3 far below zero everywhere (dead)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[1] = 2 * self.conv.weight[0]
            self.conv.bias[1] = 2 * self.conv.bias[0] + 1
            self.conv.weight[3] = 0.0
            self.conv.bias[3] = -5.0
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.head(self.conv(x))


def _loaded(module: nn.Module, side: int = 32) -> LoadedModel:
    return LoadedModel("twins", module.eval(), WeightsInfo("random-init", "x", False),
                       Preprocess((0.5,) * 3, (0.5,) * 3, (3, side, side), crop_pct=1.0), torch.device("cpu"))


def _all_maps(loaded, layer, refs) -> tuple[list[int], torch.Tensor]:
    """Brute force: every map of every image, held at once."""
    indices, maps = [], []
    with torch.no_grad(), FeatureTap(loaded.module, [layer], pre_activation=True,
                                     reduce=lambda _n, grid: grid.clone()) as tap:
        for batch_indices, pixels in iter_batches(refs, loaded.preprocess.input_size[1], loaded.preprocess.crop_pct, 64):
            maps.append(tap.run(model_input(loaded, pixels))[layer])
            indices += batch_indices
    return indices, torch.cat(maps)


def test_streaming_statistics_equal_brute_force_whatever_the_batch(tmp_path, tiny, tiny_catalogue):
    refs = folder_references(_photos(tmp_path / "photos", 23))
    layer = tiny_catalogue[2].module
    indices, maps = _all_maps(tiny, layer, refs)
    means = maps.mean(dim=(2, 3))  # [N, C]
    small = analyze_references(tiny, [layer], refs, batch=4, k=3).layers[layer]
    whole = analyze_references(tiny, [layer], refs, batch=32, k=3).layers[layer]
    order = means.topk(3, dim=0)
    np.testing.assert_allclose(small.top_value, order.values.T.numpy(), rtol=1e-5, atol=1e-6)
    assert (small.top_index == np.array(indices)[order.indices.T.numpy()]).all()
    assert (small.top_index == whole.top_index).all()
    np.testing.assert_allclose(small.mean, means.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small.peak, maps.amax(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(small.fire_rate, (maps.amax(dim=(2, 3)) > 0).float().mean(0).numpy())
    # Correlation over every (image, position) sample, against numpy on the full maps.
    flat = maps.transpose(0, 1).reshape(maps.shape[1], -1).double().numpy()
    r = np.corrcoef(flat)
    np.fill_diagonal(r, -np.inf)
    r = np.nan_to_num(r, nan=-np.inf)
    defined = np.isfinite(r.max(1))
    assert (small.partner[defined] == r.argmax(1)[defined]).all()
    np.testing.assert_allclose(small.partner_r[defined], r.max(1)[defined], atol=1e-4)


def test_state_does_not_grow_with_the_number_of_images():
    state = _Running(k=5)
    sizes = []
    for batch in range(40):
        state.add(torch.randn(8, 6, 5, 5), torch.arange(8 * batch, 8 * batch + 8))
        sizes.append(sum(t.numel() for t in (state.top_value, state.top_index, state.sum, state.fires, state.peak,
                                              state.s1, state.s2)))
    assert sizes[1] == sizes[-1] == 5 * 6 * 2 + 6 * 4 + 6 * 6
    assert state.finish().top_index.shape == (6, 5)


def test_twins_and_dead_units_are_found(tmp_path):
    refs = folder_references(_photos(tmp_path / "photos", 12))
    stats = analyze_references(_loaded(Twins()), ["conv"], refs).layers["conv"]
    assert stats.partner[0] == 1 and stats.partner[1] == 0
    assert stats.partner_r[0] == pytest.approx(1.0, abs=1e-6)
    assert stats.redundant() == [0, 1]  # channel 2 is unrelated; channel 3 is constant, so it has no twin
    assert stats.partner[3] == -1 and np.isnan(stats.partner_r[3])
    assert stats.dead() == [3]
    assert stats.partner_r[2] < REDUNDANT_R


def test_maps_are_the_models_own_kept_only_for_the_pairs_asked_and_pooled_to_the_cap(tmp_path, tiny, tiny_catalogue):
    refs = folder_references(_photos(tmp_path / "photos", 5))
    first, deep = tiny_catalogue[0].module, tiny_catalogue[-1].module
    pairs = {first: [(4, 1), (0, 0)], deep: [(2, 3), (4, 3), (0, 5)]}
    maps = activation_maps(tiny, pairs, refs, max_side=16)
    indices, full = _all_maps(tiny, deep, refs)
    expected = np.stack([full[indices.index(i), c].numpy() for i, c in pairs[deep]])
    np.testing.assert_allclose(maps[deep], expected, rtol=1e-5, atol=1e-6)
    assert maps[first].shape[0] == 2 and maps[first].shape[-1] == 16 < tiny_catalogue[0].out_shape[-1]


def test_map_pairs_are_the_grid_then_each_units_top_images_once():
    stats = LayerStats(top_value=np.zeros((3, 2)), top_index=np.array([[5, 0], [0, -1], [7, 8]]),
                       mean=np.zeros(3), peak=np.zeros(3), fire_rate=np.ones(3), partner=-np.ones(3, int),
                       partner_r=np.full(3, np.nan))
    assert map_pairs(stats, grid_images=[0, 1], grid_units=[0], units=[0, 1]) == [(0, 0), (1, 0), (5, 0), (0, 1)]
