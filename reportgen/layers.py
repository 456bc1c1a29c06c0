"""The layer catalogue of a model, layer selection (``--layers``) and feature taps.

A *layer* is a module named by its dotted path in ``named_modules()`` (``blocks.3.0``,
``Mixed_5b``). The catalogue lists the block-level modules timm itself groups parameters by
(``group_matcher(coarse=False)``), in forward order, with the shape each one outputs.

Every tapped output reaches the objectives as [B, C, H, W], whatever its *layout*: ``nchw``,
``nhwc`` (timm's channels-last families: Swin, MambaOut, Sequencer...) or ``tokens`` ([B, N, C] of
vision transformers, put on their patch grid). The layout of each module is measured, not assumed
(``module_layouts``): one forward pass at the model's input size and one at a larger size; the axis
whose length did not change is the channel axis. Where the model runs only at its own size, timm's
declarations decide (a module's ``output_fmt``, else the model's). The same probe checks which
modules *end* in their ``act`` (timm's norm-act layers, residual blocks), whose input is then the
unit's pre-activation value. Both facts are kept on the model (``TAP_FACTS_ATTR``), so copies and
pickles of it carry them.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import UnknownLayerError, UsageError

DEFAULT_LAYER_COUNT = 8


@dataclass(frozen=True)
class LayerInfo:
    """One visualizable layer: its catalogue index, dotted path, class, output shape and stride.

    ``out_shape`` is (channels, height, width) at the model's input size; token outputs of vision
    transformers are reported on their patch grid, as ``layout == "tokens"``.
    """

    index: int
    module: str
    kind: str
    out_shape: tuple[int, int, int]
    stride: int
    layout: str = "nchw"
    pre_activation: bool = False  # units are measured before the layer's own activation function

    @property
    def channels(self) -> int:
        return self.out_shape[0]

    def to_dict(self) -> dict:
        return {"index": self.index, "module": self.module, "kind": self.kind, "out_shape": list(self.out_shape),
                "channels": self.channels, "stride": self.stride, "layout": self.layout,
                "pre_activation": self.pre_activation}


class _Stop(Exception):
    """Raised by a stopping tap to end the forward pass at the target layer."""


TAP_FACTS_ATTR = "_reportgen_tap_facts"  # a ``TapFacts``, set on the model by ``tap_facts``
CATALOGUE_ATTR = "_reportgen_catalogue"  # {input size: its LayerInfos}, set on the model by ``catalogue``
PROBE_GROWTH = 1.5  # the second layout probe runs at this times the input size (stride-64 maps change too)


def to_nchw(output: torch.Tensor, num_prefix_tokens: int = 0, layout: str = "nchw") -> torch.Tensor | None:
    """Return a layer output as [B, C, H, W]: ``nhwc`` outputs are permuted; token outputs
    [B, N, C] lose prefix tokens and go on a square grid.

    Returns ``None`` for outputs that have no spatial layout (e.g. logits).
    """
    if not isinstance(output, torch.Tensor):
        return None
    if output.ndim == 4:
        return output.permute(0, 3, 1, 2) if layout == "nhwc" else output
    if output.ndim == 3:
        tokens = output[:, num_prefix_tokens:, :]
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1] or side == 0:
            return None
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    return None


def _activation_candidate(module: nn.Module) -> nn.Module | None:
    """The ``act`` a timm module may end with (``BatchNormAct2d.act``, ``ConvNormAct.bn.act``, a
    residual block's ``act``), if it has one; whether it really is the module's last operation is
    for the probe to tell (MambaOut's blocks apply theirs halfway)."""
    for candidate in (getattr(module, "act", None), getattr(getattr(module, "bn", None), "act", None)):
        if isinstance(candidate, nn.Module) and not isinstance(candidate, nn.Identity):
            return candidate
    return None


def pre_activation_module(model: nn.Module, name: str) -> nn.Module | None:
    """The activation function module ``name`` of ``model`` ends with, if the probe saw its output
    be the module's output (``tap_facts``).

    Its input is the layer's pre-activation value: a better optimization target than the output of
    a (possibly saturated) ReLU or ReLU6, whose gradient is zero wherever the unit is off.
    """
    if name not in tap_facts(model).ends_in_act:
        return None
    return _activation_candidate(dict(model.named_modules())[name])


class FeatureTap:
    """Context manager that captures the outputs of named modules, optionally stopping the forward early.

    Usage::

        with FeatureTap(model, ["blocks.3"], stop=True) as tap:
            feats = tap.run(x)["blocks.3"]     # [B, C, H, W], autograd intact

    With ``pre_activation`` a timm norm-act layer yields the input of its activation function;
    ``reduce(name, grid)`` (e.g. a spatial mean) is applied inside the hook, before a later in-place
    activation can change the captured tensor; its result is what ``outputs`` holds. Hooks are removed on exit,
    whatever happens inside.
    """

    def __init__(self, model: nn.Module, modules: Sequence[str], stop: bool = False, pre_activation: bool = False,
                 reduce: Callable[[str, torch.Tensor], object] | None = None):
        self.model = model
        self.names = list(modules)
        self.stop = stop
        self.pre_activation = pre_activation
        self.reduce = reduce  # applied inside the hook, before later in-place ops can touch the output
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        self._layouts: dict[str, str] = {}

    def __enter__(self) -> "FeatureTap":
        table = dict(self.model.named_modules())
        missing = [n for n in self.names if n not in table]
        if missing:
            raise UnknownLayerError(f"no module named {missing[0]!r} in {type(self.model).__name__}")
        self._layouts = tap_facts(self.model).layouts
        for name in self.names:
            act = pre_activation_module(self.model, name) if self.pre_activation else None
            if act is not None:  # capture what goes into the layer's own activation function
                hook = self._hook(name)
                self._handles.append(act.register_forward_pre_hook(lambda m, inputs, _h=hook: _h(m, inputs, inputs[0])))
            else:
                self._handles.append(table[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        layout = self._layouts.get(name, "nchw")

        def hook(_module, _inputs, output):
            grid = to_nchw(output, self._prefix, layout)
            self.outputs[name] = self.reduce(name, grid) if self.reduce is not None and grid is not None else grid
            if self.stop and len(self.outputs) == len(self.names):
                raise _Stop

        return hook

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward ``x``; return {module: [B, C, H, W]} (stopping after the last tapped module if asked)."""
        self.outputs = {}
        try:
            self.model(x)
        except _Stop:
            pass
        return self.outputs


def catalogue(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerInfo]:
    """List the layers worth visualizing, in forward order, by probing one forward pass.

    Candidates are the block-level modules of timm's fine ``group_matcher`` (``blocks.1.0``,
    ``Mixed_5b``, ``stages.0.blocks.1``, ``conv_stem``/``bn1``...), else the model's children and
    the children of its sequential containers; kept are those with a spatial (or token-grid) output.
    Probed once per input size and kept on the model (``CATALOGUE_ATTR``): the analysis stage asks
    again, on a worker's copy too, and probes nothing.
    """
    known = getattr(model, CATALOGUE_ATTR, None) or {}
    key = tuple(input_size)
    if key not in known:
        order, shapes = _probe(model, input_size)
        candidates = _block_candidates(model)
        chosen = sorted((name for name in candidates if name in shapes), key=order.__getitem__)
        known = {**known, key: tuple(_layer_info(model, index, name, *shapes[name], input_size)
                                     for index, name in enumerate(chosen))}
        setattr(model, CATALOGUE_ATTR, known)
    return list(known[key])


def _layer_info(model: nn.Module, index: int, name: str, shape: tuple[int, int, int], layout: str,
                input_size: tuple[int, int, int]) -> LayerInfo:
    """The ``LayerInfo`` of module ``name``; its stride is timm's declared ``reduction`` where
    ``feature_info`` lists the module (LeViT's 4x4 last stage of a 224 px input is 64, not 56)."""
    declared = {info.get("module"): info.get("reduction") for info in getattr(model, "feature_info", None) or []
                if isinstance(info, dict)}
    stride = int(declared.get(name) or _stride(input_size[1], shape[1]))
    module = dict(model.named_modules())[name]
    return LayerInfo(index, name, type(module).__name__, shape, stride, layout,
                     pre_activation_module(model, name) is not None)


@dataclass(frozen=True)
class TapFacts:
    """What one probe measured of a model's modules: the layout of each one with a spatial or
    token output (``layouts``), and the modules whose output is their ``act``'s (``ends_in_act``)."""

    layouts: dict
    ends_in_act: frozenset


def tap_facts(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> TapFacts:
    """The ``TapFacts`` of ``model``, measured once and kept on the model (see the module docstring).

    ``input_size`` defaults to the model's own (timm's data config).
    """
    facts = getattr(model, TAP_FACTS_ATTR, None)
    if facts is None:
        if input_size is None:
            import timm.data

            input_size = tuple(timm.data.resolve_model_data_config(model)["input_size"])
        _probe(model, input_size)
        facts = getattr(model, TAP_FACTS_ATTR)
    return facts


def _probe(model: nn.Module, input_size: tuple[int, int, int]):
    """Forward zeros at ``input_size`` and, where the model runs there, at ``PROBE_GROWTH`` times
    it; return forward-completion order and ((C, H, W), layout) per module with a spatial or
    token-grid output, and keep the ``TapFacts`` on the model."""
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    _, height, width = input_size
    order, raw, ends_in_act = _raw_shapes(model, (height, width))
    try:
        _, grown, _ = _raw_shapes(model, (round(height * PROBE_GROWTH), round(width * PROBE_GROWTH)))
    except (RuntimeError, AssertionError, ValueError, IndexError):  # it runs only at its own size
        grown = {}
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[tuple[int, int, int], str]] = {}
    layouts: dict[str, str] = {}
    declared = {info.get("module"): info.get("num_chs") for info in getattr(model, "feature_info", None) or []
                if isinstance(info, dict)}
    for name, shape in raw.items():
        layout = _layout(shape, grown.get(name), modules[name], model, declared.get(name))
        if layout is None:
            continue
        grid = to_nchw(torch.empty((0, *shape[1:]), device="meta"), prefix, layout)
        if grid is not None:
            shapes[name] = (tuple(int(v) for v in grid.shape[1:]), layout)
            layouts[name] = layout
    setattr(model, TAP_FACTS_ATTR, TapFacts(layouts, frozenset(ends_in_act)))
    return order, shapes


def _raw_shapes(model: nn.Module, side: tuple[int, int]):
    """One forward on zeros of ``side`` (height, width): forward-completion order, the shape of
    every module's tensor output, and the modules whose output is their ``act``'s output."""
    order: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    last_output: dict[int, torch.Tensor] = {}  # id(act module) -> its latest output
    ends_in_act: set[str] = set()
    handles = []

    def make(name, act):
        def hook(_m, _i, output):
            order.setdefault(name, len(order))
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)
                if act is not None and last_output.get(id(act)) is output:
                    ends_in_act.add(name)

        return hook

    def remember(act, _i, output):
        last_output[id(act)] = output

    for name, module in model.named_modules():
        if name:
            act = _activation_candidate(module)
            if act is not None:
                handles.append(act.register_forward_hook(remember))
            handles.append(module.register_forward_hook(make(name, act)))
    try:
        param = next(model.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
        with torch.no_grad():
            model(torch.zeros(1, 3, *side, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return order, shapes, ends_in_act


def _layout(shape: tuple[int, ...], grown: tuple[int, ...] | None, module: nn.Module, model: nn.Module,
            feature_channels: int | None = None) -> str | None:
    """The layout of an output of ``shape`` (``grown``: its shape at the larger probe, if it ran;
    ``feature_channels``: its channels where timm's ``feature_info`` lists the module): ``tokens``
    for [B, N, C], else the 4-d layout whose channel axis kept its length."""
    if len(shape) == 3:
        if grown is not None:  # tokens: their number grows with the image, their width does not
            return "tokens" if len(grown) == 3 and grown[2] == shape[2] and grown[1] != shape[1] else None
        # a model that runs only at its own size: a vision transformer's tokens, or a feature timm lists
        vit = bool(getattr(model, "num_prefix_tokens", 0)) or hasattr(model, "patch_embed")
        return "tokens" if vit or feature_channels == shape[2] else None
    if len(shape) != 4:
        return None
    if grown is not None and len(grown) == 4:
        changed = {axis for axis in (1, 2, 3) if grown[axis] != shape[axis]}
        if changed == {2, 3}:
            return "nchw"
        if changed == {1, 2}:
            return "nhwc"
    return _declared_layout(module, model)


def _declared_layout(module: nn.Module, model: nn.Module) -> str:
    """What timm declares: the module's own ``output_fmt`` (its patch embeddings), else NCHW for
    convolutions, norms and pools, else the model's ``output_fmt`` (``NHWC`` for Swin, MambaOut...)."""
    own = getattr(module, "output_fmt", None)
    if own is not None:
        return "nhwc" if str(getattr(own, "value", own)).upper() == "NHWC" else "nchw"
    if isinstance(module, (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.MaxPool2d, nn.AvgPool2d,
                           nn.AdaptiveAvgPool2d)):
        return "nchw"
    return "nhwc" if str(getattr(model, "output_fmt", "NCHW")).upper() == "NHWC" else "nchw"


def _block_candidates(model: nn.Module) -> list[str]:
    modules = dict(model.named_modules())
    names: list[str] = []
    try:
        from timm.models import group_modules

        groups = group_modules(model, model.group_matcher(coarse=False))
    except Exception:  # models without a group matcher fall back to the structural rule
        groups = {}
    for members in groups.values():
        runs = _runs_by_top_level(members)
        for i, run in enumerate(runs):
            flat = run == [run[0].split(".")[0]]  # a top-level leaf such as conv_stem or bn1
            nxt_flat = i + 1 < len(runs) and runs[i + 1] == [runs[i + 1][0].split(".")[0]]
            if flat and nxt_flat:
                continue  # conv_stem then bn1: the block ends at bn1
            prefix = _common_prefix(run)
            if prefix in modules and prefix:
                names.append(prefix)
    if not names:
        for name, module in model.named_modules():
            parent = name.rpartition(".")[0]
            if name and (parent == "" or isinstance(modules.get(parent), (nn.Sequential, nn.ModuleList))):
                if not isinstance(module, (nn.Sequential, nn.ModuleList)):
                    names.append(name)
    return list(dict.fromkeys(names))


def _runs_by_top_level(names: list[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    for name in names:
        top = name.split(".")[0]
        if runs and runs[-1][0].split(".")[0] == top:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    if len(names) == 1:  # a single module is its own block
        return names[0]
    return ".".join(common)


_SLICE = re.compile(r"^(-?\d+)?:(-?\d+)?$")


def select_layers(
    layers: Sequence[LayerInfo], spec: str | None, lookup: Callable[[str], LayerInfo | None] | None = None,
    flag: str = "--layers",
) -> list[LayerInfo]:
    """Pick layers by ``--layers``: indices, slices, dotted paths, globs, comma lists, ``all``; ``None`` = default.

    The default is ``DEFAULT_LAYER_COUNT`` layers spread evenly from first to last.

    Args:
        layers: the catalogue.
        spec: the selector string.
        lookup: resolves a dotted path outside the catalogue to a ``LayerInfo`` (or ``None``).
        flag: the option the selector came from, as messages name it (``render`` takes ``--layer``).
    Raises:
        UnknownLayerError: a part matches nothing (the message lists valid choices).
        UsageError: the selector is empty or malformed.
    """
    if not layers:
        raise UnknownLayerError("this model has no layer with a spatial output to visualize")
    if spec is None:
        count = min(DEFAULT_LAYER_COUNT, len(layers))
        picks = sorted({round(i * (len(layers) - 1) / max(count - 1, 1)) for i in range(count)})
        return [layers[i] for i in picks]
    spec = spec.strip()
    if spec == "all":
        return list(layers)
    parts = [p.strip() for p in spec.split(",")]
    if not spec or any(not p for p in parts):
        raise UsageError(f"{flag} {spec!r} is empty or has an empty item; e.g. {flag} 0,3,-1 or {flag} 'blocks.*'")
    if "all" in parts:
        raise UsageError(f"{flag} {spec!r}: 'all' selects every layer, so give it alone ({flag} all)")
    by_name = {layer.module: layer for layer in layers}
    chosen: list[LayerInfo] = []
    for part in parts:
        chosen.extend(_match(part, layers, by_name, lookup or (lambda _name: None), flag))
    return list(dict.fromkeys(chosen))


def _match(part: str, layers: Sequence[LayerInfo], by_name: dict[str, LayerInfo], lookup,
           flag: str) -> list[LayerInfo]:
    n = len(layers)
    if re.fullmatch(r"-?\d+", part):
        i = int(part)
        if not -n <= i < n:
            raise UnknownLayerError(f"{flag} {part}: index out of range; this model has layers 0..{n - 1} (or -{n}..-1)")
        return [layers[i]]
    if m := _SLICE.match(part):
        start, stop = (None if v is None else int(v) for v in m.groups())
        picked = list(layers[slice(start, stop)])
        if not picked:
            raise UnknownLayerError(f"{flag} {part}: the slice selects no layer of 0..{n - 1}")
        return picked
    if part in by_name:
        return [by_name[part]]
    matched = [layer for layer in layers if fnmatch.fnmatchcase(layer.module, part)]
    if matched:
        return matched
    if not any(ch in part for ch in "*?[") and (outside := lookup(part)) is not None:
        return [outside]
    raise UnknownLayerError(
        f"{flag} {part!r} matches no layer; valid layers: {_preview(layers)} "
        "(see `reportgen layers --model NAME`)"
    )


def _preview(layers: Sequence[LayerInfo], limit: int = 12) -> str:
    names = [layer.module for layer in layers]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def module_layer(model: nn.Module, name: str, input_size: tuple[int, int, int]) -> LayerInfo | None:
    """A ``LayerInfo`` for any named module with a spatial output (for dotted paths outside the catalogue)."""
    modules = dict(model.named_modules())
    if name not in modules:
        return None
    _, shapes = _probe(model, input_size)
    if name not in shapes:
        return None
    return _layer_info(model, -1, name, *shapes[name], input_size)


def _stride(input_side: int, output_side: int) -> int:
    """The layer's stride: exact when it divides the input, else the nearest power of two
    (299 px inception_v3 gives 35 px maps: 8.5 -> 8)."""
    if input_side % output_side == 0:
        return input_side // output_side
    return 2 ** max(0, round(math.log2(input_side / output_side)))


def iter_units(layer: LayerInfo, first: int | None, ids: Sequence[int] | None) -> Iterator[int]:
    """Channel ids of ``layer``: explicit ``ids``, else the first ``first``, else all of them."""
    from .errors import UnknownUnitError

    if ids is not None:
        bad = [c for c in ids if c >= layer.channels]
        if bad:
            raise UnknownUnitError(
                f"--units {bad[0]}: layer {layer.module} has channels 0..{layer.channels - 1}"
            )
        yield from ids
    else:
        yield from range(layer.channels if first is None else min(first, layer.channels))
