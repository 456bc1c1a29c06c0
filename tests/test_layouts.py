"""Channels-last layers (timm's Swin, MambaOut, ...): their channels are found by measurement, and a
unit of such a layer renders exactly as the same computation written channels-first does."""

import dataclasses

import numpy as np
import pytest
from torch import nn

from reportgen.config import RenderSettings
from reportgen.layers import catalogue
from reportgen.models import load_model
from reportgen.optvis.render import check_canvas, render_channels, render_neurons
from helpers import run


class ChannelsFirst(nn.Module):
    """A channels-last module whose output is permuted to [B, C, H, W]."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).permute(0, 3, 1, 2)


class Twin(nn.Module):
    """A model's stem and its first stages, the last of them made channels-first, named as in the
    model (``stem``, ``stages.1``) so that every unit gets the same seed as in the model."""

    def __init__(self, model: nn.Module, stem: str, stages: str, last: int):
        super().__init__()
        self.names = (stem, stages)
        blocks = list(getattr(model, stages))[:last + 1]
        setattr(self, stem, getattr(model, stem))
        setattr(self, stages, nn.ModuleList([*blocks[:-1], ChannelsFirst(blocks[-1])]))

    def forward(self, x):
        x = getattr(self, self.names[0])(x)
        for block in getattr(self, self.names[1]):
            x = block(x)
        return x


def assert_renders_like_its_channels_first_twin(loaded, stem, stages, last, settings):
    layer = f"{stages}.{last}"
    twin = check_canvas(dataclasses.replace(loaded, module=Twin(loaded.module, stem, stages, last).eval()), settings)
    loaded = check_canvas(loaded, settings)
    ours = {layer: info for info in catalogue(loaded.module, loaded.preprocess.input_size) for layer in [info.module]}
    assert ours[layer].layout == "nhwc"
    channels = [0, ours[layer].channels - 1]  # the last channel: beyond the map's height or width
    for render in (render_channels, render_neurons):
        mine, theirs = render(loaded, layer, channels, settings), render(twin, layer, channels, settings)
        for a, b in zip(mine, theirs):
            assert a.activation == b.activation and np.array_equal(a.image, b.image), (render.__name__, a.channel)


def test_mambaout_stage_renders_like_the_channels_first_computation():
    model = load_model("test_mambaout", "none", "cpu", seed=0)
    layers = {info.module: info for info in catalogue(model.module, model.preprocess.input_size)}
    assert layers["stages.1"].out_shape == (32, 20, 20) and layers["stages.3"].channels == 64
    assert_renders_like_its_channels_first_twin(model, "stem", "stages", 1, RenderSettings(size=48, steps=3))


@pytest.mark.slow
def test_swin_stage_renders_like_the_channels_first_computation():
    """Swin runs only at 224 px: its layout is what timm declares (output_fmt NHWC)."""
    model = load_model("swin_tiny_patch4_window7_224", "none", "cpu", seed=0)
    assert_renders_like_its_channels_first_twin(model, "patch_embed", "layers", 1,
                                                RenderSettings(size=200, steps=2, pad=12))  # 224 px padded


@pytest.mark.slow
@pytest.mark.parametrize("name, channels", [
    ("swin_tiny_patch4_window7_224", {96, 192, 384, 768}),
    ("mambaout_femto", {48, 96, 192, 288}),
])
def test_layers_lists_the_channels_of_channels_last_families(name, channels):
    code, output = run("layers", "--model", name, "--weights", "none", "--no-rf")
    assert code == 0, output
    rows = [line.split() for line in output.splitlines()[1:]]
    listed = {int(row[4]) for row in rows}
    assert listed == channels, output
    assert all(row[3].split("x")[0] == row[4] for row in rows)  # C x H x W: the channels come first
