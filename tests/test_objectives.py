"""Objectives on real (tiny, random-weight) timm models: each score rises under a short Adam loop
through ``evaluate``; the algebra is exact; everything but FeatureMatch serializes and reads back."""

import pytest
import torch

from reportgen.layers import catalogue
from reportgen.models import load_model
from reportgen.optvis.objectives import (
    INPUT,
    LOGITS,
    L1,
    L2,
    Blur,
    Channel,
    ChannelL2,
    ClassLogit,
    Diversity,
    FeatureMatch,
    LayerL2,
    Neuron,
    Scaled,
    Sum,
    TotalVariation,
    activations,
    evaluate,
    objective_from_dict,
)
from reportgen.optvis.render import render_objective
from reportgen.optvis.param import FFTImage, PixelImage

LAYER = "blocks.2.0"  # test_efficientnet: 32 channels, 8 x 8 at 64 px
SIZE = 64


@pytest.fixture(scope="module")
def vit():
    return load_model("test_vit", "none", "cpu", seed=0)


@pytest.fixture(scope="module")
def convnext():
    return load_model("test_convnext", "none", "cpu", seed=0)


def _image(batch, size=SIZE, param="pixel", std=0.01, seed=0):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
    return FFTImage(size, gens, std=std) if param == "fft" else PixelImage(size, gens, std=std)


def _score(model, objective, images):
    return evaluate(model.module, objective, images, model.preprocess.mean, model.preprocess.std)


def _climb(model, objective, image, steps=20, lr=0.05):
    """Maximize ``objective`` over ``image``'s parameters; return the first and the final score."""
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    with torch.no_grad():
        first = _score(model, objective, image())
    for _ in range(steps):
        scores = _score(model, objective, image())
        optimizer.zero_grad()
        (-scores.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        last = _score(model, objective, image())
    return first, last


def _random_target(model, layer, size=SIZE):
    picture = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        return picture, activations(model.module, [layer], picture, model.preprocess.mean, model.preprocess.std)[layer]


def _every_objective(model):
    _, target = _random_target(model, LAYER)
    return {
        "channel": Channel(LAYER, (1, 3)),
        "neuron": Neuron(LAYER, (1, 3)),
        "negative": render_objective("negative", LAYER, (1, 3)),
        "channel_l2": ChannelL2(LAYER, (1, 3)),
        "layer_l2": LayerL2(LAYER),
        "class_logit": ClassLogit((1, 2)),
        "diversity": Diversity(LAYER, (0, 0)),
        "feature_match": FeatureMatch(LAYER, target, "a random image"),
        "minus_l1": -L1(),
        "minus_l2": -L2(),
        "minus_total_variation": -TotalVariation(),
        "minus_blur": -Blur(),
        "channel_minus_tv": Channel(LAYER, (1, 3)) - 0.05 * TotalVariation(),
    }


@pytest.mark.parametrize("name", ["channel", "neuron", "negative", "channel_l2", "layer_l2", "class_logit", "diversity",
                                  "feature_match", "minus_l1", "minus_l2", "minus_total_variation", "minus_blur",
                                  "channel_minus_tv"])
def test_every_objective_rises(tiny, name):
    objective = _every_objective(tiny)[name]
    std = 0.5 if name.startswith("minus") else 0.01  # a noisy start, so the penalties have something to remove
    first, last = _climb(tiny, objective, _image(2, std=std))
    assert first.shape == last.shape == (2,)
    assert (last > first).all(), (name, first, last)


def test_negative_lowers_the_channel_mean(tiny):
    image = _image(2)
    channel = Channel(LAYER, (1, 3))
    with torch.no_grad():
        before = _score(tiny, channel, image())
    _climb(tiny, render_objective("negative", LAYER, (1, 3)), image)
    with torch.no_grad():
        after = _score(tiny, channel, image())
    assert (after < before).all(), (before, after)


def test_channel_l2_and_layer_l2_are_norms():
    feats = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    acts = {"x": feats}
    brute = torch.stack([torch.linalg.vector_norm(feats[i, c].clamp(min=0)) for i, c in enumerate((4, 0, 2))])
    assert torch.allclose(ChannelL2("x", (4, 0, 2)).score(acts), brute)  # the part the unit passes on
    # a strongly negative map scores lower than a weakly positive one, and still gets a way up
    maps = torch.stack([torch.full((1, 3, 3), -5.0), torch.full((1, 3, 3), 0.5)]).requires_grad_()
    score = ChannelL2("x", (0,)).score({"x": maps})
    assert score[0] < score[1]
    (-score.sum()).backward()  # a render descends on minus the objective
    assert (maps.grad[0] < 0).all()  # descent raises the negative map
    assert torch.allclose(LayerL2("x").score(acts), torch.stack([torch.linalg.vector_norm(f.clamp(min=0)) for f in feats]))
    zeros = torch.zeros(1, 2, 3, 3, requires_grad=True)
    ChannelL2("x", (1,)).score({"x": zeros}).sum().backward()
    assert torch.isfinite(zeros.grad).all()


def test_regularizers_on_known_images(tiny):
    flat = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(L1().score({INPUT: flat}), torch.full((2,), 0.2))
    assert torch.allclose(L2(0.2).score({INPUT: flat}), torch.full((2,), 0.5))
    assert TotalVariation().score({INPUT: flat}).abs().max() == 0
    assert Blur().score({INPUT: flat}).abs().max() < 1e-12
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1, no vertical one does
    assert TotalVariation().score({INPUT: stripes}).item() == pytest.approx(56 / (56 + 56))
    assert Blur().score({INPUT: stripes}).item() > 0.1


def test_input_is_the_unnormalized_image_and_needs_no_forward():
    class Unusable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("an image-only objective must not run the model")

    flat = torch.full((2, 3, 8, 8), 0.7)
    score = evaluate(Unusable(), L1() + TotalVariation(), flat, (0.5, 0.5, 0.5), (0.1, 0.1, 0.1))
    assert torch.allclose(score, torch.full((2,), 0.2))


def test_layer_read_alongside_the_logits_is_still_pre_activation(tiny):
    """bn1 ends in an in-place SiLU, which runs when the forward goes on to the logits."""
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    alone = _score(tiny, Channel("bn1", (0, 5)), images)
    together = _score(tiny, Channel("bn1", (0, 5)) + 0.0 * ClassLogit((0, 0)), images)
    assert torch.equal(alone, together)


def test_diversity_of_identical_and_lone_images(tiny):
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)).repeat(3, 1, 1, 1)
    with torch.no_grad():
        together = _score(tiny, Diversity(LAYER, (0, 0, 0)), images)
        split = _score(tiny, Diversity(LAYER, (4, 4, 9)), images)
    assert torch.allclose(together, torch.full((3,), -1.0), atol=1e-5)
    assert torch.allclose(split[:2], torch.full((2,), -1.0), atol=1e-5) and split[2] == 0
    with pytest.raises(ValueError, match="group ids"):
        _score(tiny, Diversity(LAYER, (0, 0)), images)


def test_diversity_pushes_a_group_apart(tiny):
    channel = Channel(LAYER, (3, 3, 3))
    similarity = Diversity(LAYER, (0, 0, 0))
    grams, pixels = {}, {}
    for name, objective in {"alone": channel, "diverse": channel + 1.0 * similarity}.items():
        image = _image(3, std=0.1)  # the same three starts both times
        _climb(tiny, objective, image)
        with torch.no_grad():
            grams[name] = -_score(tiny, similarity, image()).mean()  # mean Gram cosine within the group
            final = image()
        pixels[name] = torch.stack([(final[i] - final[j]).abs().mean() for i, j in ((0, 1), (0, 2), (1, 2))]).mean()
    assert grams["diverse"] < grams["alone"] - 0.1, grams
    assert pixels["diverse"] > 1.5 * pixels["alone"], pixels


@pytest.mark.parametrize("fixture", ["tiny", "vit", "convnext"])
def test_class_logit_rises(request, fixture):
    model = request.getfixturevalue(fixture)
    size = model.preprocess.input_size[1] if fixture == "vit" else SIZE  # the ViT's position grid is fixed
    first, last = _climb(model, ClassLogit((5, 7), ("five", "seven")), _image(2, size=size, param="fft"), steps=15)
    assert (last > first).all(), (first, last)


def test_feature_match_inverts_and_scores_its_target_zero(tiny):
    picture, target = _random_target(tiny, LAYER)
    objective = FeatureMatch(LAYER, target, "a random image")
    with torch.no_grad():
        assert _score(tiny, objective, picture).abs().max() < 1e-6
    first, last = _climb(tiny, objective, _image(2, std=0.5), steps=25)
    assert (-last < 0.8 * -first).all(), (first, last)  # the relative error fell by a fifth or more


@pytest.mark.parametrize("fixture", ["vit", "convnext"])
@pytest.mark.parametrize("kind", ["channel", "neuron"])
def test_units_rise_on_a_middle_block(request, fixture, kind):
    model = request.getfixturevalue(fixture)
    layers = catalogue(model.module, model.preprocess.input_size)
    layer = layers[len(layers) // 2].module
    first, last = _climb(model, render_objective(kind, layer, (0, 9)), _image(2, size=model.preprocess.input_size[1]),
                         steps=15)
    assert (last > first).all(), (layer, first, last)


ACTS = {
    "a": torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(3)),
    "b": torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(4)),
    INPUT: torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(5)),
    LOGITS: torch.randn(2, 10, generator=torch.Generator().manual_seed(6)),
}


def test_algebra_is_exact():
    a, b = Channel("a", (0, 3)), LayerL2("b")
    assert torch.equal((a + 0.5 * b).score(ACTS), a.score(ACTS) + 0.5 * b.score(ACTS))
    assert torch.equal((a - b).score(ACTS), a.score(ACTS) - b.score(ACTS))
    assert torch.equal((a - 0.05 * b).score(ACTS), a.score(ACTS) - 0.05 * b.score(ACTS))
    assert torch.equal((-a).score(ACTS), -a.score(ACTS))
    assert torch.equal(render_objective("negative", "a", (0, 3)).score(ACTS), -a.score(ACTS))
    assert torch.equal(render_objective("channel", "a", (0, 3)).score(ACTS), a.score(ACTS))


def test_layers_merge_without_duplicates():
    combined = Channel("a", (0, 1)) + Diversity("a", (0, 0)) - 0.1 * TotalVariation() + ClassLogit((1, 2)) + L1()
    assert combined.layers == ("a", INPUT, LOGITS)
    assert Sum((LayerL2("b"), Neuron("a", (1, 1)), ChannelL2("b", (2, 2)))).layers == ("b", "a")


def test_descriptions_name_their_parts():
    objective = Channel("a", (1,)) + 0.5 * Diversity("a", (0,)) - 0.05 * TotalVariation() - L2()
    assert objective.describe() == ("mean of channel 1 at a + 0.5 * (diversity (Gram matrices) at a)"
                                    " - 0.05 * (total variation of the image) - (RMS distance of the image from 0.5)")
    assert (-Channel("a", (1,))).describe() == "minus (mean of channel 1 at a)"
    cats = ClassLogit((281, 285), ("tabby", "Egyptian cat"))
    assert cats.describe() == "logit of class tabby, Egyptian cat (281,285)"
    assert ClassLogit((3,)).describe() == "logit of class 3"
    for text, objective in [("L2 norm", ChannelL2("a", (1,))), ("L2 norm", LayerL2("a")), ("L1", L1(0.25)),
                            ("blur", Blur()), ("features of a cat photo", FeatureMatch("a", ACTS["a"], "a cat photo"))]:
        assert text in objective.describe()
    with pytest.raises(ValueError, match="one name per class"):
        ClassLogit((1, 2), ("one",))


SERIALIZABLE = [
    Channel("a", (0, 3)),
    Neuron("a", (1, 2), row=0, col=2),
    Neuron("a", (1,)),
    ChannelL2("b", (2, 2)),
    LayerL2("b"),
    ClassLogit((1, 2), ("one", "two")),
    ClassLogit((4,)),
    Diversity("a", (0, 1)),
    L1(),
    L2(0.25),
    TotalVariation(),
    Blur(),
    render_objective("negative", "a", (1,)),
    Channel("a", (1, 1)) + 2.0 * Diversity("a", (0, 0)) - 0.05 * TotalVariation() - Blur(),
]


@pytest.mark.parametrize("objective", SERIALIZABLE, ids=lambda o: o.to_dict()["kind"])
def test_to_dict_round_trips(objective):
    import json

    back = objective_from_dict(json.loads(json.dumps(objective.to_dict())))
    assert back == objective and hash(back) == hash(objective)
    assert torch.equal(back.score(ACTS), objective.score(ACTS))


def test_feature_match_is_data_but_does_not_read_back():
    one = FeatureMatch("a", ACTS["a"], "a cat photo")
    other = FeatureMatch("a", torch.zeros(1, 4, 3, 3), "a cat photo")
    assert one == other and hash(one) == hash(other) and "tensor" not in repr(one)
    assert one.to_dict() == {"kind": "feature_match", "layer": "a", "label": "a cat photo"}
    with pytest.raises(ValueError, match="target features are not serialized"):
        objective_from_dict(Scaled(2.0, one).to_dict())
    with pytest.raises(ValueError, match="unknown objective kind 'sparkle'; known kinds: channel"):
        objective_from_dict({"kind": "sparkle"})
    with pytest.raises(ValueError, match="bad channel objective"):
        objective_from_dict({"kind": "channel", "layer": "a", "channel": [1]})


def test_an_objective_over_two_layers_reads_each_as_alone(tiny):
    """An earlier tapped layer's value goes on into its in-place activation function: what the
    objective reads of it must be what a read of that layer alone gives."""
    from reportgen.optvis.objectives import activations

    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    args = (tiny.preprocess.mean, tiny.preprocess.std)
    together = activations(tiny.module, ["bn1", "blocks.1.0"], images, *args)
    for layer in ("bn1", "blocks.1.0"):
        alone = activations(tiny.module, [layer], images, *args)[layer]
        assert torch.equal(together[layer], alone), layer
    assert bool((together["bn1"] < 0).any())  # the pre-activation, negatives and all
