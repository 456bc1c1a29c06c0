"""The GPU path: device choice, precision, batch planning and memory. What does not need a GPU is
checked here for real (the choices, by standing in for CUDA's answers); the CUDA-only checks run
where a GPU is present (scripts/gpu-check.sh) and are skipped elsewhere."""

import dataclasses

import numpy as np
import pytest
import torch

from reportgen.config import RenderSettings
from reportgen.errors import UsageError
from reportgen.models import resolve_device
from reportgen.optvis import render
from reportgen.optvis.objectives import Diversity
from reportgen.optvis.render import CPU_BATCH, GPU_BATCH, choose_batch, mixed_precision, render_channels

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="not a device"):
        resolve_device("gpu!")


@pytest.mark.parametrize("capability, emulated_only, dtype, scaled", [
    ((9, 0), False, torch.bfloat16, False),  # Hopper: native bfloat16, no loss scaling
    ((8, 0), False, torch.bfloat16, False),  # Ampere
    ((7, 5), True, torch.float16, True),  # Turing: bfloat16 only emulated, so float16 with a scaler
])
def test_bfloat16_only_where_the_gpu_computes_it_natively(monkeypatch, capability, emulated_only, dtype, scaled):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # what torch answers: bfloat16 "supported" by emulation everywhere, natively only from Ampere on
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
                        or not emulated_only)
    with pytest.warns(UserWarning):  # no CUDA here: torch disables the context it builds, and says so
        autocast, scaler = mixed_precision(torch.device("cuda"))
        context = autocast()
    assert context.fast_dtype == dtype
    assert (scaler is not None) == scaled


def test_diversity_does_not_overflow_under_float16_autocast():
    # Gram entries of strong maps reach 1e8, far beyond float16's 65504: computed in float16 they are inf
    feats = torch.randn(4, 8, 10, 10, generator=torch.Generator().manual_seed(0)) * 300
    objective = Diversity("x", (0, 0, 1, 1))
    exact = objective.score({"x": feats})
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.isinf((feats.flatten(2) @ feats.flatten(2).transpose(1, 2))).any()  # the hazard is real
        scored = objective.score({"x": feats})
    assert torch.isfinite(scored).all()
    assert torch.allclose(scored, exact, atol=1e-5)


def test_the_batch_plan_does_not_depend_on_free_memory(monkeypatch, tiny):
    """Two shards (or a resumed build) must cut a layer into the same jobs: the batch size may
    depend on the device type and the flags, never on how much memory is free at plan time."""
    def no_peeking(*_args, **_kwargs):
        raise AssertionError("the batch plan read the GPU's memory")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_peeking)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", no_peeking)
    on_gpu = dataclasses.replace(tiny, device=torch.device("cuda"))
    assert choose_batch(on_gpu, 1000, None) == GPU_BATCH
    assert choose_batch(tiny, 1000, None) == CPU_BATCH
    assert choose_batch(on_gpu, 5, None) == 5 and choose_batch(tiny, 1000, 3) == 3


def test_a_job_too_big_for_memory_is_split_and_renders_the_same(monkeypatch, tiny):
    from reportgen import renders
    from reportgen.renders import RenderJob, run_job

    settings = RenderSettings(size=32, steps=4)
    real = renders._render
    sizes = []

    def small_gpu(loaded, job, *args):
        sizes.append(len(job.ids))
        if len(job.ids) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(loaded, job, *args)

    monkeypatch.setattr(renders, "_render", small_gpu)
    steps = []
    job = RenderJob("negative", "blocks.1.0", (0, 1, 2, 3), (1, 2, 3), settings, seed=0)
    results = run_job(tiny, job, on_step=steps.append)
    assert sizes == [4, 2, 2]
    assert [r.channel for r in results] == [1, 2, 3]  # only the todo ids come back, in order
    halves = [r for ids in ([0, 1], [2, 3]) for r in render.render_negatives(tiny, "blocks.1.0", ids, settings)]
    for result, expected in zip(results, halves[1:]):
        assert np.array_equal(result.image, expected.image)
    assert len(steps) == settings.steps  # the two halves report one job's worth of progress


@cuda
def test_gpu_renders_in_reduced_precision_and_agree_with_the_cpu():
    from reportgen.models import load_model

    settings = RenderSettings(size=48, steps=8)
    gpu = load_model("test_efficientnet", "none", "cuda")
    cpu = load_model("test_efficientnet", "none", "cpu")
    on_gpu = render_channels(gpu, "blocks.1.0", [0, 1, 2], settings)
    on_cpu = render_channels(cpu, "blocks.1.0", [0, 1, 2], settings)
    for a, b in zip(on_gpu, on_cpu):
        assert a.ok and a.curve[-1][1] > a.curve[0][1]
        assert abs(a.activation - b.activation) <= 0.1 * abs(b.activation) + 0.05


@cuda
def test_gpu_build_stages_run_with_maco_and_the_automatic_batch(tmp_path):
    from reportgen.config import BuildConfig, UnitSpec
    from reportgen.pipeline import build

    config = BuildConfig(models=("test_efficientnet",), weights="none", layers="1,-1", units=UnitSpec(first=3),
                         neurons=1, variants=1, classes=2, dreams=1,
                         render=RenderSettings(size=48, steps=4, param="maco"), device="cuda",
                         out=tmp_path / "out", site=False)
    report = build(config)
    assert report.exit_code == 0 and not report.failed
