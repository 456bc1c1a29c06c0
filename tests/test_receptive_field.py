"""Receptive fields: theoretical fields and centre-neuron boxes exact on hand-built networks and
VGG16's published values; effective fields against hand-computed gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reportgen.analysis.receptive_field import effective, neuron_boxes, theoretical


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Branches(nn.Module):
    """Inception-style: concatenated branches of different kernel sizes (the largest wins)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 5, padding=2)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class Gate(nn.Module):
    """Squeeze-excite: a global average gates every position, so the field is the whole image."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))


def field(net, strides, side=48):
    names = list(strides)
    return {n: (rf.size, rf.is_global) for n, rf in theoretical(net, names, strides, start_side=side).items()}


def conv(k, s=1, d=1):
    return nn.Conv2d(3, 3, k, stride=s, dilation=d, padding=d * (k // 2))


@pytest.mark.parametrize("net,strides,expected", [
    (nn.Sequential(conv(3), nn.ReLU(), conv(3), nn.ReLU(), conv(3)), {"0": 1, "2": 1, "4": 1},
     {"0": (3, False), "2": (5, False), "4": (7, False)}),
    (nn.Sequential(conv(3, s=2), conv(3), conv(3)), {"0": 2, "1": 2, "2": 2},
     {"0": (3, False), "1": (7, False), "2": (11, False)}),
    (nn.Sequential(conv(3), conv(3, d=2), conv(3, d=4)), {"0": 1, "1": 1, "2": 1},
     {"0": (3, False), "1": (7, False), "2": (15, False)}),
    (nn.Sequential(conv(3), nn.MaxPool2d(3, 2), conv(3)), {"1": 2, "2": 2}, {"1": (5, False), "2": (9, False)}),
    (nn.Sequential(conv(3), Residual()), {"1": 1}, {"1": (7, False)}),
    (nn.Sequential(Branches(), nn.Conv2d(4, 3, 3, padding=1)), {"0": 1, "1": 1}, {"0": (5, False), "1": (7, False)}),
    (nn.Sequential(conv(3), Gate()), {"1": 1}, {"1": (None, True)}),
])
def test_hand_built_networks(net, strides, expected):
    assert field(net, strides) == expected


@pytest.mark.slow  # a float64 copy of VGG16
def test_vgg16_matches_published_values():
    """Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks" (Distill,
    2019) and google-research/receptive_field list vgg_16: 212 px, effective stride 32, effective
    padding 90 at pool5; conv5_3 is 196 px (16 px short of pool5's 2x2 window at stride 16)."""
    import timm

    vgg = timm.create_model("vgg16").eval()
    fields = theoretical(vgg, ["features.29", "features.30"], {"features.29": 16, "features.30": 32})
    assert (fields["features.30"].size, fields["features.30"].padding) == (212, 90)
    assert fields["features.29"].size == 196


@pytest.mark.parametrize("net,layer,side,box", [
    # three 3x3 convs: 7 px around the centre pixel (16, 16)
    (nn.Sequential(conv(3), nn.ReLU(), conv(3), nn.ReLU(), conv(3)), "4", 32, (13, 13, 19, 19)),
    # strides 2, 2, 1: the centre of the 8x8 map, row 4, sees layer-1 rows 3..5, layer-0 rows 5..11, pixels 9..23
    (nn.Sequential(conv(3, s=2), conv(3, s=2), conv(3)), "2", 32, (9, 9, 23, 23)),
    # a 2x2 stride-2 patch: row 8 of the 16x16 map is pixels 16..17 (the centre is below and right of the middle)
    (nn.Sequential(nn.Conv2d(3, 3, 2, stride=2), conv(3)), "0", 32, (16, 16, 17, 17)),
    (nn.Sequential(nn.Conv2d(3, 3, 2, stride=2), conv(3)), "1", 32, (14, 14, 19, 19)),
    # dilation 2 alone taps pixels 14, 16, 18; after a 3x3 conv 13..19; then dilation 4: 9..23
    (nn.Sequential(conv(3, d=2)), "0", 32, (14, 14, 18, 18)),
    (nn.Sequential(conv(3), conv(3, d=2), conv(3, d=4)), "1", 32, (13, 13, 19, 19)),
    (nn.Sequential(conv(3), conv(3, d=2), conv(3, d=4)), "2", 32, (9, 9, 23, 23)),
])
def test_neuron_box_of_hand_built_networks(net, layer, side, box):
    assert neuron_boxes(net, [layer], side)[layer] == box


@pytest.mark.parametrize("net,layer,side,box", [
    # the centre (4, 4) reads pixels 4..8 of a canvas padded only below and right: 8 is off the canvas
    (nn.Sequential(nn.ZeroPad2d((0, 4, 0, 4)), nn.Conv2d(3, 3, 5)), "1", 8, (4, 4, 7, 7)),
    # an 11 px field around pixel 4 of an 8 px canvas reaches past both borders
    (nn.Sequential(*[conv(3) for _ in range(5)]), "4", 8, (0, 0, 7, 7)),
    (nn.Sequential(conv(3), Gate()), "1", 32, (0, 0, 31, 31)),  # global: the whole canvas
])
def test_neuron_box_is_clipped_to_the_canvas(net, layer, side, box):
    assert neuron_boxes(net, [layer], side)[layer] == box


def test_neuron_box_of_a_vision_transformer_is_its_patch_then_the_whole_canvas():
    from reportgen.models import load_model

    vit = load_model("test_vit", "none", "cpu", seed=0).module  # 16 px patches, 10x10 grid at 160 px
    assert neuron_boxes(vit, ["patch_embed.proj"], 160)["patch_embed.proj"] == (80, 80, 95, 95)
    assert neuron_boxes(vit, ["blocks.0"], 160)["blocks.0"] == (0, 0, 159, 159)  # attention reaches every patch


def averaging_stack(depth: int) -> nn.Sequential:
    """``depth`` linear 3x3 convs, every weight 1/27: the gradient is a product of binomial-like kernels."""
    net = nn.Sequential(*[conv(3) for _ in range(depth)])
    with torch.no_grad():
        for layer in net:
            layer.weight.fill_(1 / 27)
            layer.bias.zero_()
    return net


def test_effective_field_of_a_linear_stack_is_centred_and_smaller_than_the_theoretical():
    net = averaging_stack(10)  # theoretical field 21 px
    field = effective(net, ["9"], torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))["9"]
    # expected by hand: per axis the 10-fold convolution of (1, 1, 1) / 3 around pixel 16; a square
    # of whole pixels holds the product of its rows' and columns' 1-D masses. Odd sides 2d + 1 centre
    # on pixel 16 (rows 16-d..16+d), even sides 2d on a corner beside it (rows 16-d+1..16+d).
    profile = np.array([1.0])
    for _ in range(10):
        profile = np.convolve(profile, np.ones(3) / 3)  # index 10 is pixel 16
    odd = next(2 * d + 1 for d in range(11) if profile[10 - d:11 + d].sum() ** 2 >= 0.95)
    even = next(2 * d for d in range(1, 11) if profile[11 - d:11 + d].sum() ** 2 >= 0.95)
    expected = min(odd, even)
    assert (odd, even) == (13, 12)  # the 12 px square, half a pixel off the centre, already holds 95%
    trf = theoretical(net, ["9"], {"9": 1}, start_side=32)["9"].size
    assert 1 < field.size == expected < trf == 21
    assert field.images == 2 and field.heatmap.dtype == np.float32 and field.heatmap.shape == (32, 32)
    assert np.unravel_index(field.heatmap.argmax(), (32, 32)) == (16, 16) and field.heatmap.max() == 1
    inner = field.heatmap[1:, 1:]  # pixels 1..31: symmetric about (16, 16) when centred
    np.testing.assert_allclose(inner, inner[::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(inner, inner.T, atol=1e-6)
    top, left, bottom, right = neuron_boxes(net, ["9"], 32)["9"]
    outside = field.heatmap.copy()
    outside[top:bottom + 1, left:right + 1] = 0
    assert (top, left, bottom, right) == (6, 6, 26, 26) and not outside.any()


def test_effective_field_of_an_even_window_is_an_even_square():
    """A uniform 4x4 gradient centred on a pixel corner (5.5, 5.5) measures 4 px, not 5."""
    net = nn.Sequential(nn.ZeroPad2d((0, 4, 0, 4)), nn.Conv2d(3, 3, 5))
    with torch.no_grad():
        net[1].weight.fill_(1.0)
    field = effective(net, ["1"], torch.randn(3, 3, 8, 8))["1"]
    expected = np.zeros((8, 8), np.float32)
    expected[4:, 4:] = 1
    assert field.size == 4 and field.images == 3
    np.testing.assert_allclose(field.heatmap, expected, atol=1e-6)


class Square(nn.Module):
    def forward(self, x):
        return x * x


def test_effective_field_weighs_every_image_equally():
    """The gradient of conv(x * x) is 2 x w: a bright image must not drown out a dim one."""
    net = nn.Sequential(Square(), averaging_stack(1))
    images = torch.zeros(2, 3, 32, 32)
    images[0, :, 15, 15], images[1, :, 17, 17] = 100.0, 1.0
    field = effective(net, ["1"], images)["1"]
    expected = np.zeros((32, 32), np.float32)
    expected[15, 15] = expected[17, 17] = 1
    np.testing.assert_allclose(field.heatmap, expected, atol=1e-6)
    assert field.images == 2


def test_effective_field_on_a_timm_model(tiny, tiny_catalogue):
    model = tiny.module
    side = tiny.preprocess.input_size[1]
    first, deep = tiny_catalogue[0].module, tiny_catalogue[3].module  # bn1 (stride 2), blocks.2.0 (stride 8)
    images = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    fields = effective(model, [first, deep], images)
    assert 1 < fields[first].size <= fields[deep].size < side
    for field in fields.values():
        assert field.heatmap.shape == (side, side) and field.heatmap.max() == 1 and field.images == 3

    # bn1 is measured before its in-place ReLU6: its pre-activation, by hand, each image's map summing to 1
    x = images.clone().requires_grad_(True)
    bn = model.bn1
    pre = F.batch_norm(model.conv_stem(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    (grad,) = torch.autograd.grad(pre[:, :, pre.shape[2] // 2, pre.shape[3] // 2].sum(), x)
    maps = grad.abs().sum(1)
    mean = (maps / maps.sum((1, 2), keepdim=True)).mean(0)
    np.testing.assert_allclose(fields[first].heatmap, (mean / mean.max()).numpy(), atol=1e-5)
    assert not torch.equal(grad, torch.autograd.grad(model.bn1(model.conv_stem(x))[:, :, 40, 40].sum(), x)[0])


def test_effective_field_leaves_the_model_as_it_was(tiny, tiny_catalogue):
    model = tiny.module
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    modes = [m.training for m in model.modules()]
    stats = model.bn1.running_mean.clone()
    try:
        for i, p in enumerate(params):
            p.requires_grad_(i % 2 == 0)
        model.train()
        model.blocks[0].eval()
        mixed = [m.training for m in model.modules()]
        effective(model, [tiny_catalogue[0].module], torch.randn(2, 3, 160, 160))
        assert [p.requires_grad for p in params] == [i % 2 == 0 for i in range(len(params))]
        assert all(p.grad is None for p in params)
        assert [m.training for m in model.modules()] == mixed and len(set(mixed)) == 2
        assert torch.equal(model.bn1.running_mean, stats)  # measured in eval mode: statistics untouched
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes):
            m.training = mode


def test_a_layer_without_a_spatial_output_is_refused():
    from reportgen.errors import UnknownLayerError

    net = nn.Sequential(conv(3), nn.Flatten())
    with pytest.raises(UnknownLayerError, match="'1' has no spatial"):
        neuron_boxes(net, ["1"], 8)["1"]
    with pytest.raises(UnknownLayerError, match="'1' has no spatial"):
        effective(net, ["0", "1"], torch.randn(1, 3, 8, 8))
