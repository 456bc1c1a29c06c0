"""Theoretical receptive fields: exact on hand-built networks, and VGG16's published values."""

import pytest
import torch
from torch import nn

from reportgen.analysis.receptive_field import theoretical


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


def test_vgg16_matches_published_values():
    """Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks" (Distill,
    2019) and google-research/receptive_field list vgg_16: 212 px, effective stride 32, effective
    padding 90 at pool5; conv5_3 is 196 px (16 px short of pool5's 2x2 window at stride 16)."""
    import timm

    vgg = timm.create_model("vgg16").eval()
    fields = theoretical(vgg, ["features.29", "features.30"], {"features.29": 16, "features.30": 32})
    assert (fields["features.30"].size, fields["features.30"].padding) == (212, 90)
    assert fields["features.29"].size == 196
