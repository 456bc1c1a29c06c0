"""The output folder and its manifest: what was built, the source every page is written from.

``OUT/manifest.json`` lists each model with its settings, weights, timings, references and, per
layer, its units (render path, activation ratio, statistics). Pages are made from it alone.

The manifest is typed: ``Manifest`` holds ``ModelEntry``s, which hold ``LayerEntry``s, which hold
``UnitEntry``s, and so on down; ``entries.py`` makes them, ``pages.py`` and the templates read
their fields. ``to_json`` and ``from_json`` turn any of them into the JSON of ``manifest.json``
and back (a field named ``class_`` is written ``class``). What other modules already type and
serialize themselves stays the plain dicts they write, in their JSON form: a model's weights,
preprocessing, normalization check, settings, class render settings, versions and timings, and
a unit's perturbed ratios by perturbation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import OutputDirError
from .store import atomic_write

MARKER = ".reportgen"  # marks a folder reportgen created; it refuses other non-empty folders
MANIFEST_SCHEMA = 9  # bump when manifest fields change: older manifests are then not reused


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a non-empty folder reportgen did not create.

    Raises:
        OutputDirError: with what to do instead.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} is a file; give a folder (it will be created if missing)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise OutputDirError(
            f"--out {out} is a non-empty folder that reportgen did not create; choose an empty or new folder"
        )


def prepare_out(out: Path) -> Path:
    """Create or reuse ``out`` (after ``check_out``) and mark it as reportgen's.

    Raises:
        OutputDirError: the folder cannot be created or written.
    """
    out = Path(out)
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(f"reportgen {__version__}\n", encoding="utf-8")
        # Commit mkdocs.yml, docs/ and manifest.json to publish with a workflow; the rest is local.
        (out / ".gitignore").write_text(".cache/\nsite/\nsite.new/\nsite.old/\ndocs.new/\ndocs.old/\nshards/\n.reportgen.lock\n",
                                        encoding="utf-8")
    except OSError as exc:
        raise OutputDirError(f"--out {out} cannot be written ({exc.strerror or exc})") from None
    return out


def read_manifest(out: Path) -> Manifest | None:
    """The manifest in ``out`` if there is one of the current schema (else ``None``)."""
    try:
        data = json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
            return None
        return from_json(Manifest, data)
    except (OSError, ValueError, KeyError):  # unreadable, or not what this version writes
        return None


def write_manifest(out: Path, manifest: Manifest) -> None:
    atomic_write(Path(out) / "manifest.json", json.dumps(to_json(manifest), indent=1).encode("utf-8"))


def write_shard_record(out: Path, config: dict, shard: tuple[int, int]) -> None:
    """Mark shard ``i/N`` of a build as finished: ``OUT/shards/i-of-N.json`` holds its config
    (``BuildConfig.to_record``), from which ``reportgen site`` assembles the pages."""
    atomic_write(Path(out) / "shards" / f"{shard[0]}-of-{shard[1]}.json", json.dumps(config, indent=1).encode("utf-8"))


def read_shard_records(out: Path) -> list[dict]:
    """The configs of the finished shards in ``out`` (none: not a sharded build)."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted((Path(out) / "shards").glob("*-of-*.json"))]


def merge_model(manifest: Manifest | None, entry: ModelEntry, store: str | None = None) -> Manifest:
    """Put ``entry`` into ``manifest`` (replacing a model of the same name, keeping the others);
    ``store`` is where its renders are kept when not in ``OUT/.cache`` (``--store``)."""
    models = [m for m in (manifest.models if manifest else []) if m.name != entry.name]
    models.append(entry)
    return Manifest(schema=MANIFEST_SCHEMA, reportgen=__version__,
                    title="reportgen: " + ", ".join(m.name for m in models),
                    updated=datetime.now(timezone.utc).isoformat(timespec="seconds"), store=store, models=models)


# The manifest's records, from the leaves up. Fields are in the order manifest.json lists them.

@dataclass(kw_only=True)
class TopImage:
    """A reference image among a unit's best, with the unit's mean activation on it."""

    image: int
    value: float


@dataclass(kw_only=True)
class Partner:
    """The unit's most correlated other channel of the layer (over the reference images)."""

    channel: int
    r: float


@dataclass(kw_only=True)
class Twin:
    """A redundant channel of a layer: its partner's activations correlate above ``redundant_r``."""

    channel: int
    partner: int
    r: float


@dataclass(kw_only=True)
class Link:
    """A channel of another layer and its attribution score: a unit's ``inputs`` (what drives it)
    and ``feeds`` (the next layer's units it drives)."""

    layer: str
    channel: int
    score: float


@dataclass(kw_only=True)
class Vote:
    """A class whose logit a unit raises, by its attribution ``score``."""

    class_: int = field(metadata={"json": "class"})
    label: str
    score: float


@dataclass(kw_only=True)
class Neuron:
    """A unit's centre-neuron render: its receptive-field ``box`` on the canvas, its activation
    and ratio to the unit's peak at any position of any reference image."""

    failed: bool
    key: str | None = None
    box: list[int]
    activation: float | None = None
    ratio: float | None = None
    objective: str | None = None
    seed: int | None = None


@dataclass(kw_only=True)
class Variant:
    """One of a unit's further renders (``renders.KINDS`` with a ``field``): its activation and
    its ratio to the best reference image's mean."""

    key: str
    activation: float
    flat: bool
    ratio: float | None
    objective: str
    seed: int


@dataclass(kw_only=True)
class SecondSeed(Variant):
    agreement: float | None = None  # how alike the two seeds' renders drive the layer


@dataclass(kw_only=True)
class Diversity(Variant):
    ratios: list[float] | None = None  # each variant's own ratio


@dataclass(kw_only=True)
class Accentuation(Variant):
    image: int | None = None  # the reference image it started from (the unit's best)
    start: float | None = None  # the unit's mean on that photo
    distance: float | None = None  # how far the features moved (objectives.relative_distance)


@dataclass(kw_only=True)
class UnitEntry:
    """A shown unit (or a driver: ``rendered`` false when no render was asked for): its render,
    activation ratio, statistics over the reference images, further renders and circuit."""

    channel: int
    key: str | None
    render: str | None  # the published render's path, relative to OUT
    activation: float | None
    ref_max: float | None  # the best reference image's mean activation
    ref_mean: float | None
    ref_peak: float | None  # the highest activation at one position of any reference image
    fire_rate: float
    dead: bool
    partner: Partner | None
    redundant: bool
    top: list[TopImage]
    ref_best_image: int | None
    activation_ratio: float | None
    perturbed: dict[str, float]
    perturbed_ratio: float | None
    flat: bool
    seed: int
    objective: str
    curve: list[list[float]]
    seconds: float
    failed: bool
    rendered: bool = True
    neuron: Neuron | None = None
    second_seed: SecondSeed | None = None
    negative: Variant | None = None
    diversity: Diversity | None = None
    accentuation: Accentuation | None = None
    inputs: list[Link] | None = None  # None where not measured (the first layer, drivers)
    promotes: list[Vote] | None = None  # None where not measured (layers that are not late)
    feeds: list[Link] = field(default_factory=list)


@dataclass(kw_only=True)
class Dream:
    key: str
    start: float | None
    activation: float


@dataclass(kw_only=True)
class Inversion:
    key: str
    error: float
    start: float | None


@dataclass(kw_only=True)
class DreamEntry:
    """A layer's DeepDream and feature inversion of one reference image (``None``: failed or to come)."""

    image: int
    dream: Dream | None
    inversion: Inversion | None


@dataclass(kw_only=True)
class GroupUnit:
    channel: int
    weight: float


@dataclass(kw_only=True)
class GroupTop:
    image: int
    presence: float


@dataclass(kw_only=True)
class Group:
    """A neuron group of a layer (``stage.groups``): its render, share of the layer's activation,
    heaviest units and the reference images where it is present most."""

    index: int
    key: str | None
    failed: bool
    share: float
    units: list[GroupUnit]
    top: list[GroupTop]
    activation: float | None
    ref_max: float | None
    activation_ratio: float | None
    objective: str | None
    seconds: float


@dataclass(kw_only=True)
class GroupFit:
    """How a layer's neuron groups were fitted: on how many images and positions, to what error."""

    key: str
    count: int
    error: float
    positions: int
    images: int


@dataclass(kw_only=True)
class RFEntry:
    """A layer's theoretical receptive field (``receptive_field.ReceptiveField``); ``size`` is
    ``None`` when it outgrows any input."""

    size: int | None
    padding: int | None
    global_: bool = field(metadata={"json": "global"})


@dataclass(kw_only=True)
class ERFEntry:
    size: int  # px: the 95% square of the centre position's input gradient
    images: int
    key: str


@dataclass(kw_only=True)
class Maps:
    """Where a layer's activation maps are stored, and for which images and units."""

    key: str
    images: list[int]
    units: list[int]


@dataclass(kw_only=True)
class LayerEntry:
    """A layer (``layers.LayerInfo``'s facts first) with its shown units, dead and redundant
    channels, drivers, dreams, neuron groups and receptive fields."""

    index: int
    module: str
    kind: str
    out_shape: list[int]
    channels: int
    stride: int
    layout: str
    pre_activation: bool
    slug: str
    units: list[UnitEntry]
    dead: list[int]
    redundant_r: float
    redundant: list[Twin]
    median_ratio: float | None
    median_perturbed_ratio: float | None
    drivers: list[UnitEntry] = field(default_factory=list)  # channels of this layer that drive the next one
    seed_baseline: float | None = None
    dreams: list[DreamEntry] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    group_fit: GroupFit | None = None
    rf: RFEntry
    erf: ERFEntry
    maps: Maps


@dataclass(kw_only=True)
class ClassEntry:
    """A class visualization and what the model predicts on it (``prob`` ... ``None`` when it failed)."""

    class_: int = field(metadata={"json": "class"})
    label: str
    key: str | None
    logit: float | None
    flat: bool
    prob: float | None = None
    rank: int | None = None
    top: int | None = None
    top_label: str | None = None


@dataclass(kw_only=True)
class Prediction:
    class_: int = field(metadata={"json": "class"})
    label: str
    prob: float


@dataclass(kw_only=True)
class ReferenceImage:
    index: int
    name: str
    image: str  # the store key of its pixels at the model's input size
    thumb: str
    predictions: list[Prediction]


@dataclass(kw_only=True)
class References:
    label: str
    digest: str
    skipped: list[str]
    used: int
    images: list[ReferenceImage]


@dataclass(kw_only=True)
class ModelEntry:
    """A model: how it was loaded, fed and rendered, what it took, its classes, references and layers."""

    name: str
    slug: str
    weights: dict[str, Any]  # models.Weights, with its description
    preprocess: dict[str, Any]  # models.Preprocess
    fixed_input: bool
    normalization: dict[str, Any] | None  # stage.normalization_check
    device: str
    threads: int
    executor: str
    settings: dict[str, Any]  # config.BuildConfig.to_dict
    seed: int
    versions: dict[str, str]
    timings: dict[str, float]
    pending: list[str] = field(default_factory=list)  # phases still rendering (a site written mid-build)
    rendered: int
    cached: int
    unit_count: int
    neuron_count: int
    variant_count: int
    render_seconds: float
    median_ratio: float | None
    median_perturbed_ratio: float | None
    classes: list[ClassEntry]
    class_render: dict[str, Any]  # render.RenderSettings.to_dict
    unit_scales: list[float]  # the scales channel renders drew
    references: References
    layers: list[LayerEntry]


@dataclass(kw_only=True)
class Manifest:
    schema: int
    reportgen: str
    title: str
    updated: str
    store: str | None = None  # where renders are kept when not in OUT/.cache
    models: list[ModelEntry]


def to_json(record: Any) -> Any:
    """A record (and everything in it) as JSON-ready lists, dicts and numbers."""
    if dataclasses.is_dataclass(record):
        return {f.metadata.get("json", f.name): to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, (list, tuple)):
        return [to_json(value) for value in record]
    if isinstance(record, dict):
        return {key: to_json(value) for key, value in record.items()}
    return record


def record_of(record: type, name: str) -> type:
    """The type that field ``name`` of a record class holds: ``X`` for ``X | None`` and ``list[X]``."""
    kind = next(hint for field_name, _, hint, _ in _fields(record) if field_name == name)
    while typing.get_origin(kind) in (typing.Union, types.UnionType, list):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    return kind


def from_json(kind: Any, data: Any) -> Any:
    """``data`` (as ``to_json`` writes it) as a ``kind``: a record class, ``list[...]``, ``X | None``
    or a plain type. A missing field takes its default; one without a default raises ``KeyError``,
    and a record that is not a JSON object, or a list not an array, ``ValueError``."""
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
        return from_json(kind, data)
    if origin is list:
        if not isinstance(data, list):
            raise ValueError(f"{kind} that is not a JSON array")
        (item,) = typing.get_args(kind)
        return [from_json(item, value) for value in data]
    if not dataclasses.is_dataclass(kind):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"a {kind.__name__} that is not a JSON object")
    values = {}
    for field_name, name, hint, required in _fields(kind):
        if name in data:
            values[field_name] = from_json(hint, data[name])
        elif required:
            raise KeyError(f"{kind.__name__} without {name}")
    return kind(**values)


@functools.cache
def _fields(record: type) -> list[tuple[str, str, Any, bool]]:
    """Per field of a record class: its name, its JSON name, its type and whether it is required
    (resolving the annotations once per class: a report reads back thousands of units)."""
    hints = typing.get_type_hints(record)
    return [(f.name, f.metadata.get("json", f.name), hints[f.name],
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(record)]
