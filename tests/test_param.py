"""The MACO parameterization: a fixed photographic magnitude spectrum, an optimized phase."""

import math

import numpy as np
import pytest
import torch

from reportgen.optvis.param import FFTImage, MacoImage, PixelImage, _crop_resize, _periodic, magnitude_spectrum, \
    make_image


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def radial_slope(power: torch.Tensor, onesided: bool = False) -> float:
    """Log-log slope of ``power`` [H, W] (or [H, W//2+1] from rfft2) averaged in rings of frequency,
    over 2 / min(H, W) ... 0.5 cycles per pixel."""
    height = power.shape[0]
    width = 2 * (power.shape[1] - 1) if onesided else power.shape[1]
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = (torch.fft.rfftfreq if onesided else torch.fft.fftfreq)(width, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy).expand(power.shape)
    edges = np.geomspace(2.0 / min(height, width), 0.5, 13)
    xs, ys = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        ring = (freq >= low) & (freq < high)
        if ring.any():
            xs.append(math.log(freq[ring].mean().item()))
            ys.append(math.log(power.double()[ring].mean().item()))
    return float(np.polyfit(xs, ys, 1)[0])


def image_slope(image: torch.Tensor) -> float:
    """Power-spectrum slope of an image [C, H, W] (channels averaged), after removing its mean."""
    image = image.double() - image.double().mean(dim=(-2, -1), keepdim=True)
    return radial_slope((torch.fft.fft2(image).abs() ** 2).mean(0))


def falloff_photo(height: int, width: int, exponent: float, seed: int) -> np.ndarray:
    """A grey uint8 photo whose power spectrum falls as 1 / f^exponent (random phase, periodic)."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(height, width))
    phase = torch.rand(freq.shape, generator=g, dtype=torch.float64) * 2 * math.pi
    grey = torch.fft.irfft2(torch.polar(freq ** (-exponent / 2), phase), s=(height, width))
    grey = 0.5 + 0.15 * (grey - grey.mean()) / grey.std()
    return np.repeat((grey.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def photos():
    from reportgen.analysis.references import load_rgb, skimage_references

    return [load_rgb(ref) for ref in skimage_references().images]


@pytest.fixture(scope="module")
def magnitude64(photos):
    return magnitude_spectrum(photos, 64)


# magnitude_spectrum


@pytest.mark.parametrize("size", [32, (24, 40), (40, 23)])
def test_magnitude_spectrum_shape_sign_and_determinism(size):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(50, 70, 3), (90, 40, 3), (33, 33, 3)]]
    height, width = (size, size) if isinstance(size, int) else size
    spectrum = magnitude_spectrum(images, size)
    assert spectrum.shape == (3, height, width // 2 + 1) and spectrum.dtype == torch.float32
    assert (spectrum >= 0).all() and spectrum.sum() > 0
    assert torch.equal(spectrum, magnitude_spectrum(images, size))
    assert not torch.equal(spectrum, magnitude_spectrum(images[:2], size))


@pytest.mark.parametrize("exponent", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("size", [64, (48, 80)])
def test_magnitude_spectrum_recovers_a_known_falloff(exponent, size):
    """Photos larger than the canvas (so they are resized, and centre-cropped when rectangular)
    with power ~ 1/f^exponent: the luminance power of the estimate falls with the same slope."""
    images = [falloff_photo(96, 120, exponent, seed) for seed in range(3)]
    luminance = magnitude_spectrum(images, size)[0]
    assert radial_slope(luminance ** 2, onesided=True) == pytest.approx(-exponent, abs=0.3)


def test_crop_resize_keeps_the_centre_at_the_canvas_aspect():
    image = torch.zeros(3, 40, 100, dtype=torch.float64)
    image[:, :, 30:70] = 1.0  # a centred 40 x 40 white square
    out = _crop_resize(image, 20, 20)
    assert out.shape == (3, 20, 20) and out.min() > 0.99
    assert _crop_resize(image, 20, 50).mean() == pytest.approx(0.4, abs=0.02)


def test_periodic_component_removes_the_wraparound_jump():
    """Moisan's defining property: the periodic Laplacian of the periodic component equals the
    photo's Laplacian without wrap-around (border pixels use only their neighbours inside)."""
    image = torch.rand(24, 36, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    image += torch.linspace(0, 5, 36, dtype=torch.float64)  # a ramp: a big jump across the left/right borders
    periodic = _periodic(image)
    wrapped = sum(torch.roll(periodic, shift, dim) for shift in (1, -1) for dim in (0, 1)) - 4 * periodic
    padded = torch.nn.functional.pad(image[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    free = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * image
    assert torch.allclose(wrapped, free, atol=1e-9)
    assert (periodic[:, 0] - periodic[:, -1]).abs().mean() < 0.1 * (image[:, 0] - image[:, -1]).abs().mean()


def test_magnitude_spectrum_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one image"):
        magnitude_spectrum([], 32)
    with pytest.raises(ValueError, match="uint8"):
        magnitude_spectrum([np.zeros((20, 20), np.uint8)], 32)
    with pytest.raises(ValueError, match="uint8"):
        magnitude_spectrum([np.zeros((20, 20, 3), np.float32)], 32)


# MacoImage


@pytest.mark.parametrize("size", [32, (24, 40)])
def test_maco_optimizes_only_the_phase_and_returns_rgb(size):
    height, width = (size, size) if isinstance(size, int) else size
    magnitude = magnitude_spectrum([falloff_photo(64, 64, 2.0, 0)], size)
    image = MacoImage(size, gens(0, 1), magnitude)
    params = dict(image.named_parameters())
    assert list(params) == ["phase"] and params["phase"].shape == (2, 3, height, width // 2 + 1)
    assert params["phase"].min() >= -math.pi and params["phase"].max() < math.pi
    out = image()
    assert out.shape == (2, 3, height, width) and out.min() >= 0 and out.max() <= 1
    plain = MacoImage(size, gens(0), magnitude_spectrum([falloff_photo(64, 64, 2.0, 0)], size, decorrelate=False),
                      decorrelate=False)()
    assert plain.shape == (1, 3, height, width) and 0 <= plain.min() and plain.max() <= 1


def test_random_phase_image_has_the_photos_spectrum(photos, magnitude64):
    """Unlike white noise, and with photographic contrast: neither saturated nor grey."""
    crops = [_crop_resize(torch.from_numpy(p.copy()).permute(2, 0, 1).double() / 255, 64, 64) for p in photos]
    photo_slope = float(np.mean([image_slope(_periodic(c)) for c in crops]))
    maco = MacoImage(64, gens(0, 1, 2, 3), magnitude64)().detach()
    maco_slope = float(np.mean([image_slope(item) for item in maco]))
    noise_slope = image_slope(PixelImage(64, gens(0), std=1.0)().detach()[0])
    assert photo_slope < -1.5
    assert maco_slope == pytest.approx(photo_slope, abs=0.3)
    assert abs(noise_slope - photo_slope) > 1.0
    contrast = maco.std(dim=(-2, -1)).mean().item()
    saturated = ((maco < 0.02) | (maco > 0.98)).float().mean().item()
    assert 0.1 < contrast < 0.3 and saturated < 0.01, (contrast, saturated)


def test_same_seed_same_image_and_items_are_independent(magnitude64):
    a = MacoImage(64, gens(5), magnitude64)()
    assert torch.equal(a, MacoImage(64, gens(5), magnitude64)())
    assert not torch.equal(a, MacoImage(64, gens(6), magnitude64)())
    batch = MacoImage(64, gens(5, 6, 7), magnitude64)()
    assert torch.allclose(batch[0], a[0], rtol=0, atol=1e-6)


def test_phase_gradient_raises_a_channel(tiny, magnitude64):
    from reportgen.layers import FeatureTap
    from reportgen.optvis.transforms import normalize

    image = MacoImage(64, gens(0), magnitude64)
    optimizer = torch.optim.Adam(image.parameters(), lr=0.1)
    pre = tiny.preprocess
    scores = []
    with FeatureTap(tiny.module, ["blocks.1.0"], stop=True, pre_activation=True) as tap:
        for _ in range(20):
            score = tap.run(normalize(image(), pre.mean, pre.std))["blocks.1.0"][:, 3].mean()
            optimizer.zero_grad()
            (-score).backward()
            optimizer.step()
            scores.append(score.item())
    assert image.phase.grad is not None and image.phase.grad.abs().sum() > 0
    assert scores[-1] > scores[0] + 0.5 * abs(scores[0]), scores


# make_image


def test_make_image_maco_needs_a_magnitude_of_the_right_shape(magnitude64):
    with pytest.raises(ValueError, match="magnitude"):
        make_image("maco", 64, gens(0))
    with pytest.raises(ValueError, match=r"magnitude_spectrum\(photos, \(48, 64\)\)"):
        make_image("maco", (48, 64), gens(0), magnitude=magnitude64)
    image = make_image("maco", 64, gens(0), magnitude=magnitude64)
    assert isinstance(image, MacoImage) and torch.equal(image(), MacoImage(64, gens(0), magnitude64)())


def test_make_image_keeps_its_positional_signature_and_names_every_kind():
    assert torch.equal(make_image("fft", (20, 30), gens(3), 1.0, True)(), FFTImage((20, 30), gens(3))())
    with pytest.raises(ValueError, match="'fft', 'pixel' or 'maco'"):
        make_image("cppn", 32, gens(0))
