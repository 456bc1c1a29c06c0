"""One real timm architecture of each family builds, with random weights (no download): the
fixed-size transformers (ViT, DeiT, Swin, SwinV2, LeViT, EfficientViT, MaxViT, CoAtNet) as well as
the convolutional and channels-last ones. The tiny ``test_*`` models accept any input size and
hide what a real checkpoint's architecture refuses."""

import pytest

from reportgen.config import BuildConfig, RenderSettings, UnitSpec
from reportgen.pipeline import build

FAMILIES = [
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256",
    "levit_128", "efficientvit_m0", "maxvit_pico_rw_256", "coatnet_pico_rw_224", "convnext_atto", "regnetx_002",
    "densenet121", "mobilenetv3_small_100", "inception_v3", "resnet18", "mambaout_femto",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_builds_on_the_default_canvas(name, tmp_path):
    config = BuildConfig(models=(name,), weights="none", layers="0,-1", units=UnitSpec(first=1), neurons=1,
                         variants=0, classes=1, dreams=1, drivers=0, groups=2, render=RenderSettings(steps=2),
                         out=tmp_path / "out", site=False)
    report = build(config)
    assert report.exit_code == 0 and not report.failed, report.failed
    # per layer a channel, a neuron, a dream, an inversion and 2 neuron groups; a class
    assert report.rendered == 2 * (1 + 1 + 2 + 2) + 1
