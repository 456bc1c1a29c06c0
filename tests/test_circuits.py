"""Circuits against exact oracles: the attribution between two layers of a hand-built network equals
its closed form; the classes a unit of the last feature layer votes for are its classifier column."""

from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
from torch import nn

from reportgen import pages
from reportgen.analysis.circuits import inputs, promotes
from reportgen.manifest import Link


class TwoLayers(nn.Module):
    """source: a 1x1 conv (3 -> 4 channels); a ReLU; target: a 1x1 conv (4 -> 2 channels)."""

    pretrained_cfg = {"input_size": (3, 6, 6)}

    def __init__(self, first: np.ndarray, second: np.ndarray):
        super().__init__()
        self.source = nn.Conv2d(3, 4, 1, bias=False)
        self.relu = nn.ReLU()
        self.target = nn.Conv2d(4, 2, 1, bias=False)
        with torch.no_grad():
            self.source.weight.copy_(torch.tensor(first, dtype=torch.float32)[:, :, None, None])
            self.target.weight.copy_(torch.tensor(second, dtype=torch.float32)[:, :, None, None])

    def forward(self, x):
        return self.target(self.relu(self.source(x)))


def test_inputs_equal_the_closed_form_on_a_hand_built_network():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(4, 3)), rng.normal(size=(2, 4))
    x = rng.normal(size=(5, 3, 6, 6))
    model = TwoLayers(first, second).eval()
    scores = inputs(model, "source", "target", [0, 1], torch.tensor(x, dtype=torch.float32))
    # mean_space(target_u) = sum_j second[u, j] * mean_space(relu(a_j)), so d/d a_j = second[u, j] * [a_j > 0] / P
    # and the attribution sum_space a_j * that = second[u, j] * mean_space(relu(a_j)), averaged over images
    a = np.einsum("jc,bchw->bjhw", first, x)
    expected = second * np.maximum(a, 0).mean(axis=(2, 3)).mean(axis=0)[None, :]
    assert scores.shape == (2, 4)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_the_last_feature_layer_votes_along_its_classifier_column():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False).eval()
    x = torch.randn(3, 3, 64, 64)
    units = [0, 5, 17]
    votes = promotes(model, "bn2", units, x)
    seen = {}
    handle = model.bn2.act.register_forward_pre_hook(lambda m, i: seen.update(z=i[0].detach().clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    z = seen["z"].double()
    silu_grad = torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))  # SiLU's derivative
    weights = model.get_classifier().weight.detach().double().numpy()
    for row, c in enumerate(units):
        factor = float((z[:, c] * silu_grad[:, c]).mean())  # pooled: d logit_k / d z = W[k, c] SiLU'(z) / P
        np.testing.assert_allclose(votes[row], factor * weights[:, c], rtol=1e-4, atol=1e-7)
        column = weights[:, c] * np.sign(factor)
        assert list(np.argsort(-votes[row])[:5]) == list(np.argsort(-column)[:5])


def test_a_unit_page_links_its_drivers_and_names_its_classes():
    from test_pages import sample_manifest

    model = sample_manifest().models[0]
    page = pages.render_unit(model, model.layers[1], 0)
    assert "[stem unit 1](../../stem/1/index.md)" in page  # a shown driver: linked to its page
    assert "| stem unit 2 |" in page and "+0.500" in page and "-0.250" in page  # no page: no link
    stem = model.layers[0]
    driver = replace(stem.units[1], channel=2, key=None, rendered=False,
                     feeds=[Link(layer="blocks.1", channel=0, score=-0.25)])
    model = replace(model, layers=[replace(stem, drivers=[driver]), model.layers[1]])
    page = pages.render_unit(model, model.layers[1], 0)
    assert "[stem unit 2](../../stem/2/index.md) (not rendered)" in page  # an extra driver: its own page
    driver_page = pages.render_unit(model, model.layers[0], 0, group="drivers")
    assert "Not rendered" in driver_page and "[unit 0](../../blocks.1/0/index.md)" in driver_page
    assert "![render" not in driver_page and "## Optimization curve" not in driver_page
    layer_page = pages.render_layer(model, 0)
    assert "## Drivers of the next layer" in layer_page and "[unit 2](2/index.md) (drives 1)" in layer_page
    assert "votes for goldfish" in page.split("<section", 1)[0]  # in the summary line search indexes
    assert "## Circuit" not in pages.render_unit(model, model.layers[0], 0)  # the first layer: none


@pytest.mark.parametrize("name", ["test_vit", "test_convnext"])
def test_other_families_attribute_without_error(name):
    from reportgen.layers import catalogue

    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg["input_size"]
    layers = [layer.module for layer in catalogue(model, size)]
    x = torch.randn(2, *size)
    scores = inputs(model, layers[-2], layers[-1], [0, 1], x)
    assert scores.shape[0] == 2 and np.isfinite(scores).all()
    votes = promotes(model, layers[-1], [0], x)
    assert votes.shape == (1, model.num_classes) and np.isfinite(votes).all()
