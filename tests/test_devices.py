"""Every tensor a build makes follows the model's device: checked without a GPU.

On a GPU, a tensor made without ``device=`` lands on the CPU beside a model on the GPU, and the
first operation that mixes them fails. Here the model stays on the CPU and the *default* device is
made ``meta`` (no data): a tensor made without saying where it lives lands there, and mixing it
with the model's CPU tensors, or reading its values, fails. Tensors that belong on the CPU by design
(per-unit random generators, statistics gathered on the host) say ``device="cpu"``.
"""

import torch

from reportgen import pipeline
from reportgen.config import BuildConfig, RenderSettings, UnitSpec
from reportgen.pipeline import BuildReport
from reportgen.progress import Progress
from reportgen.store import Store


def test_every_stage_makes_its_tensors_on_the_models_device(tmp_path):
    config = BuildConfig(models=("test_efficientnet",), weights="none", layers="1,-1", units=UnitSpec(first=2),
                         neurons=1, variants=1, classes=2, dreams=1, render=RenderSettings(size=32, steps=2),
                         out=tmp_path / "out", site=False)
    plan = pipeline._plan("test_efficientnet", config)  # the model is made on the CPU
    with torch.device("meta"):
        entry = pipeline.build_model(plan, config, Store(tmp_path / "store"), Progress(), BuildReport(tmp_path))
    units = [u for layer in entry.layers for u in layer.units]
    assert len(units) == 4 and not any(u.failed for u in units)
    assert all(layer.units[0].neuron.key for layer in entry.layers)
    assert len(entry.classes) == 2 and all(c.key for c in entry.classes)
