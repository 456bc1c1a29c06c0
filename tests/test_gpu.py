"""The GPU path: device selection, batch sizing and mixed precision. The CUDA-only checks run where
a GPU is present and are skipped here; the CPU side is checked for real."""

import pytest
import torch

from reportgen.config import RenderSettings
from reportgen.errors import UsageError
from reportgen.models import resolve_device
from reportgen.optvis.render import choose_batch, mixed_precision, render_channels

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_the_cpu_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="not a device"):
        resolve_device("gpu!")


def test_cpu_renders_in_full_precision_and_batches_up_to_16(tiny):
    autocast, scaler = mixed_precision(torch.device("cpu"))
    assert scaler is None
    with autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    settings = RenderSettings(size=32, steps=1)
    assert choose_batch(tiny, "blocks.1.0", settings, 40, None) == 16
    assert choose_batch(tiny, "blocks.1.0", settings, 5, None) == 5
    assert choose_batch(tiny, "blocks.1.0", settings, 40, 4) == 4


@cuda
def test_gpu_render_uses_mixed_precision_and_fits_memory():
    from reportgen.models import load_model

    model = load_model("test_efficientnet", "none", "cuda")
    autocast, _scaler = mixed_precision(model.device)
    with autocast():
        assert torch.ones(4, 4, device="cuda").matmul(torch.ones(4, 4, device="cuda")).dtype in (torch.bfloat16,
                                                                                                  torch.float16)
    settings = RenderSettings(size=48, steps=8)
    batch = choose_batch(model, "blocks.1.0", settings, 64, None)
    assert 1 <= batch <= 64
    results = render_channels(model, "blocks.1.0", list(range(min(batch, 8))), settings)
    assert all(r.ok for r in results)
