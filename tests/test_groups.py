"""Neuron groups against independent oracles: NMF recovers an exactly factorable matrix, comes within a
stated margin of the best rank-k error (truncated SVD, Eckart-Young) on a real layer's activations, and
what a build stores and shows of a group agrees with activations measured another way."""

import json

import numpy as np
import pytest
import torch

from reportgen.analysis import stage
from reportgen.analysis.groups import nmf, presence
from reportgen.analysis.references import iter_batches, skimage_references
from reportgen.optvis.objectives import Channel, Direction, activations
from reportgen.store import Store
from tests.helpers import run

NMF_MARGIN = 1.2  # a fit's relative error is at most this times the best any rank-k matrix reaches


def test_nmf_recovers_a_matrix_that_is_exactly_a_product_of_non_negative_factors():
    g = torch.Generator().manual_seed(0)
    w0 = torch.rand(3000, 5, generator=g)
    h0 = torch.rand(5, 40, generator=g) * (torch.rand(5, 40, generator=g) > 0.5)
    fit = nmf(w0 @ h0, 5)
    assert fit.error < 0.01
    assert torch.allclose(fit.vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    assert float(fit.share.sum()) == pytest.approx(1.0, abs=1e-5) and bool((fit.share[:-1] >= fit.share[1:]).all())
    held_out = torch.rand(200, 5, generator=g) @ h0  # new rows of the same parts: presence alone rebuilds them
    rebuilt = presence(held_out, fit.vectors) @ fit.vectors
    assert float((held_out - rebuilt).norm() / held_out.norm()) < 0.01


def test_nmf_refuses_negative_values_and_too_many_groups():
    with pytest.raises(ValueError, match="non-negative"):
        nmf(torch.tensor([[1.0, -1.0], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="3 groups"):
        nmf(torch.ones(2, 5), 3)


def _layer_activations(loaded, layer, count=8):
    refs = skimage_references()
    _, pixels = next(iter_batches(refs, loaded.preprocess.input_size[1], loaded.preprocess.crop_pct, count))
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return activations(loaded.module, [layer], x, loaded.preprocess.mean, loaded.preprocess.std)[layer], x


@pytest.mark.parametrize("layer", ["bn1", "blocks.2.0", "bn2"])
def test_nmf_reconstructs_a_real_layer_nearly_as_well_as_the_best_rank_k_matrix(tiny, layer):
    acts, _ = _layer_activations(tiny, layer)
    rows = acts.clamp(min=0).permute(0, 2, 3, 1).reshape(-1, acts.shape[1])
    fit = nmf(rows, 6)
    singular = torch.linalg.svdvals(rows.double())
    best = float((singular[6:] ** 2).sum().sqrt() / (singular ** 2).sum().sqrt())  # Eckart-Young
    rebuilt = fit.presence @ fit.vectors
    assert fit.error == pytest.approx(float((rows - rebuilt).norm() / rows.norm()), rel=1e-4)
    assert best - 1e-6 <= fit.error <= NMF_MARGIN * best


def test_a_one_hot_direction_is_the_channel_mean(tiny):
    acts = {"bn1": torch.randn(3, 24, 5, 5)}
    one_hot = tuple(tuple(1.0 if c == k else 0.0 for c in range(24)) for k in (2, 7, 7))
    assert torch.allclose(Direction("bn1", one_hot).score(acts), Channel("bn1", (2, 7, 7)).score(acts))


@pytest.mark.parametrize("layer", ["bn1", "blocks.2.0"])
def test_stored_groups_agree_with_the_activations_measured_independently(tiny, tmp_path, layer):
    """Both layers are fitted in one pass: the first one's values are taken where the forward goes
    on into its in-place activation function, which must not change what was taken."""
    refs = skimage_references()
    used = list(range(len(refs.images)))[:stage.GROUP_IMAGES]
    key, groups = stage.groups(tiny, ["bn1", "blocks.2.0"], 4, refs, used, Store(tmp_path))
    found = groups[layer]
    channels = {"bn1": 24, "blocks.2.0": 32}[layer]
    assert found["vectors"].shape == (4, channels) and found["top"].shape == (4, stage.GROUP_TOP)
    # best: the highest spatial mean along each mix (positive part) over the fitted images, measured
    # one layer at a time through the objective code
    images = [int(i) for i in used]
    means = []
    for start in range(0, len(images), 8):
        _, pixels = next(iter_batches(refs.subset(images[start:start + 8]), tiny.preprocess.input_size[1],
                                      tiny.preprocess.crop_pct, 8))
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            acts = activations(tiny.module, [layer], x, tiny.preprocess.mean, tiny.preprocess.std)
        means.append(torch.stack([Direction(layer, (tuple(map(float, v)),) * len(x), positive=True).score(acts)
                                  for v in found["vectors"]], dim=1))
    np.testing.assert_allclose(found["best"], torch.cat(means).amax(dim=0).numpy(), rtol=1e-4, atol=1e-6)
    # the cache gives the same back, and the presence maps are stored under the key
    again_key, again = stage.groups(tiny, ["bn1", "blocks.2.0"], 4, refs, used, Store(tmp_path))
    assert again_key == key and np.array_equal(again[layer]["vectors"], found["vectors"])
    maps = Store(tmp_path).get_arrays(key)[f"maps|{layer}"]
    assert maps.shape[:2] == (4, stage.GROUP_TOP) and float(maps.max()) == pytest.approx(1.0, abs=1e-3)


def test_a_group_left_with_no_weight_is_dropped():
    fit = nmf(torch.zeros(40, 6), 3)
    assert fit.vectors.shape == (0, 6) and fit.error == 0.0


def test_a_build_shows_each_layers_groups_with_renders(tmp_path):
    out = tmp_path / "report"
    code, output = run("build", "--model", "test_efficientnet", "--weights", "none", "--layers", "bn1,blocks.2.0",
                       "--units", "2", "--size", "48", "--steps", "4", "--neurons", "0", "--variants", "0",
                       "--classes", "0", "--dreams", "0", "--drivers", "0", "--groups", "3", "--out", str(out), "-q")
    assert code == 0, output
    layer = json.loads((out / "manifest.json").read_text())["models"][0]["layers"][1]
    assert layer["group_fit"]["count"] == 3 and 0 < layer["group_fit"]["error"] < 1
    assert [g["index"] for g in layer["groups"]] == [0, 1, 2]
    assert all(g["key"] and g["units"] and g["top"] for g in layer["groups"])
    page = (out / "docs/test_efficientnet/blocks.2.0/index.md").read_text()
    assert page.index("## Neuron groups") < page.index("## Units")
    for g in layer["groups"]:
        assert (out / f"docs/test_efficientnet/blocks.2.0/groups/{g['index']}.webp").is_file()
        for t in g["top"]:
            assert (out / f"docs/test_efficientnet/blocks.2.0/maps/group-{g['index']}-{t['image']}.webp").is_file()
    html = (out / "site/test_efficientnet/blocks.2.0/index.html").read_text()
    assert html.count('src="groups/') == 3

    code, output = run("build", "--model", "test_efficientnet", "--weights", "none", "--layers", "bn1",
                       "--units", "2", "--size", "48", "--steps", "4", "--neurons", "0", "--variants", "0",
                       "--classes", "0", "--dreams", "0", "--drivers", "0", "--groups", "0", "--out",
                       str(tmp_path / "none"), "-q")
    assert code == 0, output
    layer = json.loads((tmp_path / "none/manifest.json").read_text())["models"][0]["layers"][0]
    assert layer["groups"] == [] and layer["group_fit"] is None
    assert "## Neuron groups" not in (tmp_path / "none/docs/test_efficientnet/bn1/index.md").read_text()
