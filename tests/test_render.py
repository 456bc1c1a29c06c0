import dataclasses

import numpy as np
import pytest
import torch

from reportgen.config import RenderSettings
from reportgen.optvis.objectives import Channel, Neuron, activations
from reportgen.optvis.param import BoxedImage, FFTImage, PixelImage, make_image
from reportgen.optvis.render import average_decay, render_channels, render_neurons, unit_seed
from reportgen.optvis.relu import redirected_relus
from reportgen.optvis.transforms import normalize

FAST = RenderSettings(size=48, steps=24, pad=4, jitter=2)
BOX = (12, 8, 35, 39)  # inclusive (top, left, bottom, right): 24 x 32, around the canvas centre
GREY = 128  # 0.5 * 255 = 127.5 rounds half to even


def _inside(box, side):
    top, left, bottom, right = box
    mask = np.zeros((side, side), bool)
    mask[top:bottom + 1, left:right + 1] = True
    return mask


def test_score_rises(tiny):
    result = render_channels(tiny, "blocks.1.0", [1, 3], FAST)
    for r in result:
        first, last = r.curve[0][1], r.curve[-1][1]
        assert last > 1.5 * first > 0, (first, last)
        assert r.activation > first
        assert r.image.shape == (48, 48, 3) and r.image.dtype == np.uint8


def test_batching_does_not_change_a_render(tiny):
    """Up to rounding: batched kernels differ in the last bits, which optimization can amplify."""
    together = render_channels(tiny, "blocks.1.0", [0, 5], FAST, seed=7)
    alone = [render_channels(tiny, "blocks.1.0", [c], FAST, seed=7)[0] for c in (0, 5)]
    for a, b in zip(together, alone):
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        assert diff.max() <= 2, diff.max()
        assert a.activation == pytest.approx(b.activation, rel=1e-3, abs=1e-3)


def test_same_seed_same_image_bit_for_bit(tiny):
    a = render_channels(tiny, "blocks.1.0", [2], FAST, seed=1)[0]
    b = render_channels(tiny, "blocks.1.0", [2], FAST, seed=1)[0]
    c = render_channels(tiny, "blocks.1.0", [2], FAST, seed=2)[0]
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert unit_seed(1, "blocks.1.0", 2) != unit_seed(1, "blocks.1.0", 3)


def test_final_image_is_the_moving_average_of_the_parameters(tiny):
    assert average_decay(RenderSettings(steps=512, average=0.1)) == pytest.approx(1 - 1 / 51.2)
    assert average_decay(RenderSettings(steps=8, average=0.1)) == 0.0  # under a step: the last one
    gens = [torch.Generator().manual_seed(unit_seed(0, "blocks.1.0", 2))]
    start = make_image("fft", 48, gens)()[0].permute(1, 2, 0).mul(255).round().byte().numpy().astype(int)
    last = render_channels(tiny, "blocks.1.0", [2], dataclasses.replace(FAST, average=0))[0]
    # A time constant far beyond the step count keeps (almost) the starting parameters.
    frozen = render_channels(tiny, "blocks.1.0", [2], dataclasses.replace(FAST, average=1e6))[0]
    averaged = render_channels(tiny, "blocks.1.0", [2], FAST)[0]
    assert np.abs(frozen.image.astype(int) - start).max() <= 1
    assert np.abs(last.image.astype(int) - start).mean() > 5
    assert 0 < np.abs(averaged.image.astype(int) - last.image.astype(int)).mean() < np.abs(last.image.astype(int) - start).mean()


def test_each_step_follows_the_mean_gradient_of_its_transform_samples(tiny):
    # Without randomness every sample is the same image: their mean gradient is the one gradient.
    still = dataclasses.replace(FAST, pad=0, jitter=0, scales=(1.0, 1.0), max_angle=0.0, reach_input=False)
    one = render_channels(tiny, "blocks.1.0", [2], still)[0]
    two = render_channels(tiny, "blocks.1.0", [2], dataclasses.replace(still, samples=2))[0]
    assert np.abs(one.image.astype(int) - two.image.astype(int)).max() <= 1
    assert two.curve[-1][1] == pytest.approx(one.curve[-1][1], rel=1e-4)
    # With transforms, two samples a step make another image, which still excites the unit.
    moved = render_channels(tiny, "blocks.1.0", [2], dataclasses.replace(FAST, samples=2))[0]
    single = render_channels(tiny, "blocks.1.0", [2], FAST)[0]
    assert np.abs(moved.image.astype(int) - single.image.astype(int)).mean() > 1
    assert moved.activation > moved.curve[0][1] > 0


def test_transform_samples_in_one_batch_equal_one_pass_each(tiny, monkeypatch):
    """Two transform samples a step go through the network together when the batch allows; the
    gradient is the same as from two passes (up to batched kernels' rounding), diversity included:
    each sample's items are scored among themselves."""
    from reportgen.optvis import render

    settings = dataclasses.replace(FAST, samples=2)
    together = render_channels(tiny, "blocks.1.0", [0, 3], settings)
    variants_together = render.render_diversity(tiny, "blocks.1.0", [1], settings, k=2)[0]
    monkeypatch.setattr(render, "CPU_BATCH", 2)  # 2 units x 2 samples no longer fit: one pass per sample
    apart = render_channels(tiny, "blocks.1.0", [0, 3], settings)
    variants_apart = render.render_diversity(tiny, "blocks.1.0", [1], settings, k=2)[0]
    for a, b in zip(together + variants_together, apart + variants_apart):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2
        assert a.activation == pytest.approx(b.activation, rel=1e-3, abs=1e-4)
        assert [step for step, _ in a.curve] == [step for step, _ in b.curve]


def test_random_scales_reach_the_models_input_size(tiny, monkeypatch):
    """A canvas smaller than the model's input (48 px; test_efficientnet takes 160) is drawn at
    scales up to 1.1 x 160 / 48, so the render also excites its unit at the model's resolution;
    centre neurons (whose box is the field at the canvas's scale) and inversions keep theirs."""
    from reportgen.optvis import dream, render

    seen = []
    real = render.random_affine
    monkeypatch.setattr(render, "random_affine", lambda *args: seen.append(args[4]) or real(*args))
    render_channels(tiny, "blocks.1.0", [0], FAST)
    render_neurons(tiny, "blocks.1.0", [0], FAST, box=BOX)
    photo = np.full((48, 48, 3), 128, np.uint8)
    dream.invert(tiny, "blocks.1.0", [photo], FAST)
    dream.deep_dream(tiny, "blocks.1.0", [photo], FAST)
    channel, neuron, inversion, dreamt = seen[0], seen[FAST.steps], seen[2 * FAST.steps], seen[3 * FAST.steps]
    assert channel == pytest.approx((0.9, 1.1 * 160 / 48))
    assert neuron == (0.9, 1.1) and inversion == (1.0, 1.0) and dreamt == (0.9, 1.1)
    assert render.reach_scales(tiny, dataclasses.replace(FAST, size=200)) == (0.9, 1.1)  # a larger canvas: as set
    assert render.reach_scales(tiny, dataclasses.replace(FAST, reach_input=False)) == (0.9, 1.1)


def test_l2norm_objective_is_optimized_and_the_mean_is_what_is_measured(tiny):
    """``objective="l2norm"`` optimizes sqrt(sum max(f, 0)^2); the activation a render reports (and its
    ratio) stays the channel mean of the final image, read here independently."""
    settings = dataclasses.replace(FAST, objective="l2norm")
    results = render_channels(tiny, "blocks.1.0", [0, 3], settings)
    images = torch.stack([torch.from_numpy(r.image) for r in results]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        maps = activations(tiny.module, ["blocks.1.0"], images, tiny.preprocess.mean, tiny.preprocess.std)["blocks.1.0"]
    for i, result in enumerate(results):
        channel = maps[i, result.channel]
        assert result.activation == pytest.approx(float(channel.mean()), rel=1e-2, abs=1e-3)  # uint8 rounding
        assert result.objective == f"L2 norm of channel {result.channel} at blocks.1.0 (positive part)"
        norm_curve = [value for _, value in result.curve]
        assert norm_curve[-1] > max(norm_curve[0], 0)  # the curve is the norm (a dead start: the mean), which rose
    plain = render_channels(tiny, "blocks.1.0", [0, 3], FAST)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(results, plain))


def test_a_total_variation_penalty_makes_smoother_renders(tiny):
    def tv(image):
        x = image.astype(float)
        return np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()

    settings = RenderSettings(size=48, steps=48, pad=4, jitter=2, lr=0.1)
    free = render_channels(tiny, "blocks.1.0", [0, 1, 2], settings)
    smooth = render_channels(tiny, "blocks.1.0", [0, 1, 2], dataclasses.replace(settings, penalties=(("tv", 50.0),)))
    for a, b in zip(free, smooth):
        assert tv(b.image) < 0.7 * tv(a.image), (tv(a.image), tv(b.image))
        assert "- 50 * (total variation of the image)" in b.objective


def test_pixel_parameterization_and_neuron_objective(tiny):
    settings = RenderSettings(size=48, steps=16, pad=4, jitter=2, param="pixel")
    result = render_neurons(tiny, "blocks.2.0", [0], settings)[0]
    assert result.curve[-1][1] > result.curve[0][1]


def test_neuron_render_paints_only_its_box(tiny):
    results = render_neurons(tiny, "blocks.1.0", [1, 3], FAST, box=BOX)
    inside = _inside(BOX, 48)
    for r in results:
        assert r.image.shape == (48, 48, 3) and r.image.dtype == np.uint8
        assert (r.image[~inside] == GREY).all()
        assert np.abs(r.image[inside].astype(int) - GREY).mean() > 5  # the box itself is painted
        first, last = r.curve[0][1], r.curve[-1][1]
        assert last > first + 0.3 and last > 3 * abs(first), (first, last)
        assert r.activation > first
        assert r.seed == unit_seed(0, "blocks.1.0", r.channel, kind="neuron") != unit_seed(0, "blocks.1.0", r.channel)


def test_neuron_render_same_seed_same_image_bit_for_bit(tiny):
    settings = RenderSettings(size=32, steps=6, pad=4, jitter=2)
    box = (4, 6, 27, 25)
    a = render_neurons(tiny, "blocks.2.0", [2], settings, seed=1, box=box)[0]
    b = render_neurons(tiny, "blocks.2.0", [2], settings, seed=1, box=box)[0]
    c = render_neurons(tiny, "blocks.2.0", [2], settings, seed=2, box=box)[0]
    assert np.array_equal(a.image, b.image) and a.activation == b.activation and a.curve == b.curve
    assert not np.array_equal(a.image, c.image)
    channel = render_channels(tiny, "blocks.2.0", [2], settings, seed=1)[0]
    assert a.seed != channel.seed  # a neuron render does not start from the channel render's image


def test_neuron_render_without_box_uses_the_whole_canvas(tiny):
    settings = RenderSettings(size=32, steps=12, pad=4, jitter=2)
    r = render_neurons(tiny, "blocks.1.0", [1], settings, box=None)[0]
    assert r.image.shape == (32, 32, 3)
    assert r.curve[-1][1] > r.curve[0][1]
    border = ~_inside((2, 2, 29, 29), 32)
    assert (r.image[border] != GREY).any()  # nothing is held grey


def test_neuron_box_is_checked(tiny):
    for bad in [(0, 0, 48, 10), (10, 5, 9, 20), (-1, 0, 5, 5)]:
        with pytest.raises(ValueError, match="inside the 48 x 48 canvas"):
            render_neurons(tiny, "blocks.1.0", [0], FAST, box=bad)


def test_vit_units_are_token_features_on_their_patch_grid():
    """The oracle is the block's own output, [B, 1 + 100, C] tokens (class token first) read by
    hand: the unit at (row, col) of the 10 x 10 patch grid is token 1 + 10 row + col. Off the
    diagonal, a grid with rows and columns swapped, or the class token left in, reads another token."""
    from reportgen.models import load_model
    from reportgen.optvis.objectives import evaluate

    vit = load_model("test_vit", "none", "cpu")
    images = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    captured = {}
    block = dict(vit.module.named_modules())["blocks.1"]
    handle = block.register_forward_hook(lambda _m, _i, out: captured.setdefault("tokens", out))
    try:
        with torch.no_grad():
            vit.module(normalize(images, vit.preprocess.mean, vit.preprocess.std))
    finally:
        handle.remove()
    tokens = captured["tokens"]
    assert tokens.shape == (2, 101, 64)
    for row, col, channel in ((2, 7, 5), (9, 0, 63)):
        scored = evaluate(vit.module, Neuron("blocks.1", (channel, channel), row, col), images,
                          vit.preprocess.mean, vit.preprocess.std)
        assert torch.allclose(scored, tokens[:, 1 + 10 * row + col, channel], atol=1e-6)
    rendered = render_neurons(vit, "blocks.1", [0, 1], RenderSettings(size=136, steps=6, pad=12, jitter=2))
    assert all(r.ok and r.curve[-1][1] > r.curve[0][1] for r in rendered)


def test_fft_image_is_in_range_and_seeded():
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    image = FFTImage(32, gens)()
    assert image.shape == (2, 3, 32, 32)
    assert 0 <= image.min() and image.max() <= 1
    again = FFTImage(32, [torch.Generator().manual_seed(1)])()
    assert torch.equal(image[1:], again)
    assert torch.equal(FFTImage((32, 32), [torch.Generator().manual_seed(1)])(), again)


@pytest.mark.parametrize("make", [FFTImage, PixelImage])
def test_rectangular_image_is_in_range_and_seeded(make):
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    image = make((20, 33), gens)()
    assert image.shape == (2, 3, 20, 33)
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0
    again = make((20, 33), [torch.Generator().manual_seed(1)])()
    assert torch.equal(image[1:], again)
    assert not torch.equal(image[0], image[1])


def test_boxed_image_is_grey_outside_and_differentiable_inside():
    inner = FFTImage((5, 7), [torch.Generator().manual_seed(0)])
    canvas = BoxedImage(inner, 16, (3, 2, 7, 8))()
    assert canvas.shape == (1, 3, 16, 16)
    assert torch.equal(canvas[:, :, 3:8, 2:9], inner())
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[3:8, 2:9] = False
    assert (canvas[:, :, outside] == 0.5).all()
    canvas.sum().backward()
    assert inner.spectrum.grad.abs().sum() > 0


def test_objective_algebra():
    acts = {"a": torch.arange(2 * 3 * 2 * 2, dtype=torch.float).view(2, 3, 2, 2)}
    ch = Channel("a", (0, 2))
    expected = torch.stack([acts["a"][0, 0].mean(), acts["a"][1, 2].mean()])
    assert torch.allclose(ch.score(acts), expected)
    combined = ch + 0.5 * Neuron("a", (1, 1), row=0, col=0)
    assert torch.allclose(combined.score(acts), expected + 0.5 * torch.stack([acts["a"][0, 1, 0, 0], acts["a"][1, 1, 0, 0]]))
    assert (ch - ch).score(acts).abs().max() == 0
    assert "channel 0,2" in combined.describe() and combined.to_dict()["kind"] == "sum"


def test_redirected_relu_rescues_a_dead_unit_and_restores():
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(relu)
    x = torch.full((1, 4), -1.0, requires_grad=True)
    with redirected_relus(model):
        y = model(x)
        assert torch.equal(y, torch.zeros(1, 4))  # forward unchanged
        (-y.sum()).backward()
    assert (x.grad < 0).all()  # a descent step raises x back toward the active range
    x.grad = None
    (-model(x).sum()).backward()
    assert (x.grad == 0).all()  # plain ReLU again outside the block
