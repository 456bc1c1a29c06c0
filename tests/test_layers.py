import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from reportgen.errors import UnknownLayerError, UsageError
from reportgen.layers import FeatureTap, catalogue, select_layers
from reportgen.models import load_model


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit", "test_convnext"])
def test_catalogue_shapes_match_real_outputs(name):
    model = load_model(name, "none", "cpu")
    layers = catalogue(model.module, model.preprocess.input_size)
    assert len(layers) >= 4
    assert [l.index for l in layers] == list(range(len(layers)))
    x = torch.zeros(1, *model.preprocess.input_size)
    with FeatureTap(model.module, [l.module for l in layers]) as tap:
        outputs = tap.run(x)
    for layer in layers:
        assert tuple(outputs[layer.module].shape[1:]) == layer.out_shape
        assert layer.stride >= 1 and layer.channels == layer.out_shape[0]


def test_efficientnet_catalogue_is_block_level(tiny_catalogue):
    names = [l.module for l in tiny_catalogue]
    assert names[0] == "bn1" and names[-1] == "bn2"
    assert "blocks.1.0" in names and "conv_stem" not in names


def test_selection_grammar(tiny_catalogue):
    cat = tiny_catalogue
    names = lambda spec: [l.module for l in select_layers(cat, spec)]  # noqa: E731
    assert names("0,-1") == [cat[0].module, cat[-1].module]
    assert names("-2:") == [l.module for l in cat[-2:]]
    assert names("1:3") == [cat[1].module, cat[2].module]
    assert names("blocks.*") == [l.module for l in cat if l.module.startswith("blocks.")]
    assert names("bn2,blocks.1.0") == ["bn2", "blocks.1.0"]
    assert names("all") == [l.module for l in cat]
    default = select_layers(cat, None)
    assert default[0] == cat[0] and default[-1] == cat[-1] and len(default) == min(8, len(cat))


def test_dotted_path_outside_the_catalogue(tiny):
    from reportgen.layers import module_layer

    size = tiny.preprocess.input_size
    cat = catalogue(tiny.module, size)
    inner = next(n for n, m in tiny.module.named_modules() if n.startswith("blocks.1.0.") and isinstance(m, torch.nn.Conv2d))
    picked = select_layers(cat, inner, lookup=lambda p: module_layer(tiny.module, p, size))
    assert picked[0].module == inner and picked[0].channels > 0


def test_selection_errors_list_valid_choices(tiny_catalogue):
    with pytest.raises(UnknownLayerError, match="valid layers: bn1"):
        select_layers(tiny_catalogue, "blocks.99")
    with pytest.raises(UnknownLayerError, match="out of range"):
        select_layers(tiny_catalogue, "42")
    with pytest.raises(UsageError):
        select_layers(tiny_catalogue, "0,,1")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-:,.*ablocksn ", max_size=12))
@example("-:")  # found by CI: a lone minus sign before or after the colon
@example(":-")
def test_selector_never_crashes(tiny_catalogue, spec):
    """Any string either selects existing layers or raises a domain error, never anything else."""
    try:
        picked = select_layers(tiny_catalogue, spec)
    except (UnknownLayerError, UsageError):
        return
    assert picked and all(layer in tiny_catalogue for layer in picked)


def test_tap_stops_early_and_cleans_up(tiny):
    ran = []
    head = dict(tiny.module.named_modules())["conv_head"]
    handle = head.register_forward_hook(lambda *a: ran.append(True))
    try:
        with FeatureTap(tiny.module, ["blocks.1.0"], stop=True) as tap:
            out = tap.run(torch.zeros(1, 3, 64, 64))
    finally:
        handle.remove()
    assert "blocks.1.0" in out and not ran
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.module.modules())


def test_tap_removes_hooks_on_error(tiny):
    with pytest.raises(RuntimeError):
        with FeatureTap(tiny.module, ["bn2"], pre_activation=True):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny.module.modules())


def test_pre_activation_is_the_input_of_the_layers_own_activation(tiny):
    from reportgen.layers import pre_activation_module

    x = torch.randn(2, 3, 64, 64)
    with FeatureTap(tiny.module, ["bn2"], stop=True, pre_activation=True) as tap:
        pre = tap.run(x)["bn2"].clone()
    with FeatureTap(tiny.module, ["bn2"], stop=True) as tap:
        post = tap.run(x)["bn2"]
    act = pre_activation_module(tiny.module, "bn2")
    assert act is not None and not torch.equal(pre, post)
    assert torch.allclose(post, act(pre.clone()), atol=1e-6)


def test_the_catalogue_is_probed_once_per_model_and_input_size(monkeypatch):
    import pickle

    import timm

    import reportgen.layers

    probed = []
    real_probe = reportgen.layers._probe
    monkeypatch.setattr(reportgen.layers, "_probe", lambda model, size: probed.append(size) or real_probe(model, size))
    model = timm.create_model("test_efficientnet", pretrained=False).eval()
    first = catalogue(model, (3, 64, 64))
    assert catalogue(model, (3, 64, 64)) == first and probed == [(3, 64, 64)]
    shipped = pickle.loads(pickle.dumps(model))  # as an executor ships it to a worker
    assert catalogue(shipped, (3, 64, 64)) == first and probed == [(3, 64, 64)]
    larger = catalogue(model, (3, 96, 96))
    assert probed == [(3, 64, 64), (3, 96, 96)] and larger[-1].out_shape[1:] != first[-1].out_shape[1:]
