"""The further renders (negative, diversity, class, DeepDream, inversion) and the trust measures."""

import dataclasses

import numpy as np
import pytest
import torch

from reportgen.config import RenderSettings
from reportgen.images import is_flat, stretch
from reportgen.optvis.dream import accentuate, deep_dream, invert
from reportgen.optvis.objectives import Channel, activations, objective_from_dict
from reportgen.optvis.param import fft_from_photos
from reportgen.optvis.render import (class_settings, render_channels, render_classes, render_diversity,
                                     render_negatives, side_by_side)
from reportgen.optvis.trust import (PERTURBATIONS, cross_agreement, perturb, perturbed_scores, seed_agreement,
                                    to_tensor)

FAST = RenderSettings(size=48, steps=24, pad=4, jitter=2)
LAYER = "blocks.1.0"


def _noise(seed, side=48):
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_perturbations_are_the_held_out_ones():
    flat = torch.full((1, 3, 40, 40), 0.3)
    assert torch.allclose(perturb(flat, "crop"), flat, atol=1e-6)  # a crop of a uniform field is that field
    assert torch.allclose(perturb(flat, "blur"), flat, atol=1e-6)
    shifted = perturb(flat, "shift")
    assert shifted.shape == flat.shape
    assert (shifted[:, :, :5] == 0.5).all() and (shifted[:, :, :, :5] == 0.5).all()  # grey comes in (1/8 of 40)
    assert (shifted[:, :, 5:, 5:] == 0.3).all()
    noise = to_tensor([_noise(0, 40)])
    assert perturb(noise, "blur").std() < 0.5 * noise.std()  # blur takes the high frequencies
    crop = perturb(noise, "crop")
    assert crop.shape == noise.shape and not torch.allclose(crop, noise)
    with pytest.raises(ValueError, match="crop, shift, blur"):
        perturb(noise, "rotate")


def test_perturbed_scores_are_the_objective_on_perturbed_images(tiny):
    from reportgen.optvis.objectives import evaluate

    images = [_noise(1), _noise(2)]
    objective = Channel(LAYER, (0, 3))
    scores = perturbed_scores(tiny, objective, images)
    assert sorted(scores) == sorted(PERTURBATIONS)
    for kind, values in scores.items():
        with torch.no_grad():
            expected = evaluate(tiny.module, objective, perturb(to_tensor(images), kind), tiny.preprocess.mean,
                                tiny.preprocess.std)
        assert values == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-6)


def test_seed_agreement_is_one_for_the_same_image_and_lower_for_others(tiny):
    a, b = _noise(3), _noise(4)
    same = seed_agreement(tiny, LAYER, [0], [a], [a])[0]
    other = seed_agreement(tiny, LAYER, [0], [a], [b])[0]
    assert same == pytest.approx(1.0)
    assert other < same
    assert cross_agreement(tiny, LAYER, [0], [a]) is None
    assert -1 <= cross_agreement(tiny, LAYER, [0, 1, 2], [a, b, _noise(5)]) <= 1


def test_flat_and_stretch():
    grey = np.full((16, 16, 3), 128, np.uint8)
    assert is_flat(grey) and stretch(grey) == (grey, False)
    ramp = np.tile(np.linspace(100, 150, 16).astype(np.uint8)[None, :, None], (16, 1, 3))
    assert not is_flat(ramp)
    stretched, done = stretch(ramp)
    assert done and stretched.min() <= 2 and stretched.max() >= 253
    assert (np.diff(stretched[0, :, 0].astype(int)) >= 0).all()  # order kept
    full = _noise(6)
    assert stretch(full) == (full, False)


def test_negative_render_lowers_the_unit(tiny):
    negative = render_negatives(tiny, LAYER, [1, 3], FAST)
    positive = render_channels(tiny, LAYER, [1, 3], FAST)
    for neg, pos in zip(negative, positive):
        assert neg.activation < pos.activation
        assert neg.curve[-1][1] > neg.curve[0][1]  # the curve is of the objective: minus the mean, rising
        assert "minus" in neg.objective and neg.seed != pos.seed
    again = render_negatives(tiny, LAYER, [1, 3], FAST)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(negative, again))


def test_diversity_variants_differ_more_than_plain_renders(tiny):
    groups = render_diversity(tiny, LAYER, [2], FAST, k=3)
    plain = render_diversity(tiny, LAYER, [2], FAST, k=3, weight=0.0)
    assert len(groups) == 1 and len(groups[0]) == 3

    def spread(group):
        pixels = np.stack([r.image.astype(float) for r in group])
        return np.abs(pixels - pixels.mean(axis=0)).mean()

    assert spread(groups[0]) > spread(plain[0])
    strip = side_by_side(groups[0])
    assert strip.image.shape == (48, 144, 3)
    assert strip.extra["activations"] == [r.activation for r in groups[0]]
    assert strip.activation == pytest.approx(np.mean(strip.extra["activations"]))


def test_class_render_raises_its_logit(tiny):
    results = render_classes(tiny, [1, 7], FAST, names=["goldfish", "x"])
    for r in results:
        assert r.layer == "logits" and r.curve[-1][1] > r.curve[0][1]
    assert "goldfish" in results[0].objective


def test_class_settings_strengthen_only_the_transforms():
    base = RenderSettings(size=224, steps=64, param="maco", jitter=8)
    strong = class_settings(base)
    assert (strong.jitter, strong.scales, strong.max_angle) == (42, (0.4, 1.6), 45.0)  # 42 px: 19% of 224
    assert strong == dataclasses.replace(base, jitter=42, scales=(0.4, 1.6), max_angle=45.0)
    assert class_settings(RenderSettings(size=32, jitter=8)).jitter == 8  # never weaker than the unit renders'


def test_class_render_with_maco(tiny):
    from reportgen.optvis.param import magnitude_spectrum

    magnitude = magnitude_spectrum([_noise(7, 64), _noise(8, 64)], 48)
    results = render_classes(tiny, [1], RenderSettings(size=48, steps=12, pad=4, jitter=2, param="maco"),
                             magnitude=magnitude)
    assert results[0].curve[-1][1] > results[0].curve[0][1]
    with pytest.raises(ValueError, match="magnitude"):
        render_classes(tiny, [1], RenderSettings(size=48, steps=2, param="maco"))


def test_deep_dream_starts_at_the_photo_and_climbs(tiny):
    photos = [_noise(9), _noise(10)]
    one_step = deep_dream(tiny, LAYER, photos, RenderSettings(size=48, steps=1, pad=0, jitter=0), indices=[4, 5])
    assert [r.channel for r in one_step] == [4, 5]
    for photo, r in zip(photos, one_step):  # one small step: still the photo, to a few levels
        assert np.abs(photo.astype(int) - r.image.astype(int)).mean() < 3
    dreams = deep_dream(tiny, LAYER, photos, FAST)
    for r in dreams:
        assert r.curve[-1][1] > r.curve[0][1]


def test_inversion_matches_the_photo_better_than_noise(tiny):
    photo = np.asarray(np.clip(np.indices((48, 48)).sum(axis=0)[..., None] * 2.6, 0, 255), np.uint8).repeat(3, axis=2)
    result = invert(tiny, LAYER, [photo], RenderSettings(size=48, steps=40, pad=4, jitter=2))[0]
    first, last = result.curve[0][1], result.curve[-1][1]
    assert first < last <= 0  # minus the relative error: from far to near
    assert -result.activation < 0.5 * -first


def test_convnext_channel_render_rises():
    from reportgen.models import load_model

    convnext = load_model("test_convnext", "none", "cpu")
    result = render_channels(convnext, "stages.1", [0, 1], RenderSettings(size=64, steps=12, pad=4, jitter=2))
    for r in result:
        assert r.curve[-1][1] > r.curve[0][1]


def test_fft_from_photos_starts_at_the_photo():
    rng = np.random.default_rng(3)
    photos = rng.integers(3, 252, size=(2, 3, 24, 30)).astype(np.float32) / 255  # inside the sigmoid's reach
    for decorrelate in (True, False):
        image = fft_from_photos(torch.from_numpy(photos), decay_power=1.0, decorrelate=decorrelate)
        np.testing.assert_allclose(image().detach().numpy(), photos, atol=1e-4)


def test_accentuation_raises_the_unit_and_stays_near_the_photo(tiny):
    from reportgen.analysis.references import center_crop, load_rgb, skimage_references

    photo = np.array(center_crop(load_rgb(skimage_references().images[0]), 48, 1.0))
    settings = RenderSettings(size=48, steps=24, pad=4, jitter=2)
    results = accentuate(tiny, LAYER, [0, 3], [photo, photo], settings)
    with torch.no_grad():  # measured again, independently of the loop's own measure
        x = torch.from_numpy(np.stack([r.image for r in results])).permute(0, 3, 1, 2).float() / 255
        start = torch.from_numpy(photo).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
        after = activations(tiny.module, [LAYER], x, tiny.preprocess.mean, tiny.preprocess.std)[LAYER]
        before = activations(tiny.module, [LAYER], start, tiny.preprocess.mean, tiny.preprocess.std)[LAYER]
    for i, (c, r) in enumerate(zip([0, 3], results)):
        assert r.extra["start"] == pytest.approx(float(before[i, c].mean()), rel=1e-3, abs=1e-4)
        assert r.activation == pytest.approx(float(after[i, c].mean()), rel=1e-2, abs=1e-3)
        assert r.activation > r.extra["start"]  # it excites the unit more ...
        distance = float((after[i] - before[i]).pow(2).sum() / before[i].pow(2).sum())
        assert r.extra["distance"] == pytest.approx(distance, rel=1e-2)
        # ... and is still the photo: its pixels correlate with the photo's
        assert np.corrcoef(r.image.ravel().astype(float), photo.ravel().astype(float))[0, 1] > 0.7
    with pytest.raises(ValueError, match="cannot be read back"):
        objective_from_dict({"kind": "accentuation", "layer": LAYER, "label": "the photo"})
