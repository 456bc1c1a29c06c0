"""Orchestration: config -> model -> layers -> references -> renders -> manifest -> pages -> site.

``build`` is the library entry point behind ``reportgen build``. Pages are made from the manifest
and the store only, so ``rebuild_site`` needs no model. Progress goes through one ``Progress``
object; ``BuildReport`` counts rendered / cached / failed units and owns the exit code.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import BuildConfig
from .errors import OutputDirError, ReportgenError, StoreError, UsageError
from .manifest import (MARKER, Manifest, ModelEntry, check_out, merge_model, prepare_out, read_manifest,
                       read_shard_records, write_manifest, write_shard_record)
from . import entries
from .progress import Progress
from .store import Store, atomic_write, exclusive


@dataclass
class BuildReport:
    """What a build did; ``exit_code`` is 0 when every unit rendered, 1 when some failed."""

    out: Path
    rendered: int = 0
    cached: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable reference images ("name: reason")
    flat: list[str] = field(default_factory=list)  # renders with almost no contrast (flagged on their pages)
    warnings: list[str] = field(default_factory=list)  # facts a user should know before trusting the pages
    pages: int = 0
    site: Any = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over models
    kind_seconds: dict[str, float] = field(default_factory=dict)  # render seconds per kind of render

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---------------------------------------------------------------- build

def build(config: BuildConfig, progress: Progress | None = None, render: bool = True) -> BuildReport:
    """Render every selected unit of every model in ``config``, then write pages and the site.

    With ``render=False`` nothing is optimized: every render must be in the store already (the
    assembly of a sharded build).

    Raises:
        ReportgenError subclasses for user mistakes (unknown model/layer/unit, bad weights or output).
    """
    from .analysis.references import folder_references
    from .executors import make_executor

    started = time.perf_counter()
    progress = progress or Progress()
    check_out(config.out)
    store = Store(config.store_root)
    plans = []  # every model, layer and unit is checked before anything is written or rendered
    for name in config.models:
        progress.stage(f"{name}: loading")
        plans.append(_plan(name, config))
    if config.images:
        folder_references(config.images)  # a missing or empty folder is refused before --out is made
    executor = make_executor(config.executor, config.ray_address)
    made = not Path(config.out).exists()
    try:
        out = prepare_out(config.out)
        report = BuildReport(out)
        if config.shard:  # shards share a store, not a lock: each writes only whole, content-addressed files
            with _disk_full_is_an_error(out):
                for plan in plans:
                    build_model(plan, config, store, progress, report, executor)
                if not report.failed:
                    write_shard_record(out, config.to_record(), config.shard)
        else:
            with exclusive(out), _disk_full_is_an_error(out):
                manifest = read_manifest(out)
                for plan in plans:
                    snapshot = functools.partial(_publish_snapshot, out, manifest, store, report, config, progress)
                    entry = build_model(plan, config, store, progress, report, executor, render=render,
                                        snapshot=snapshot)
                    manifest = merge_model(manifest, entry, config.store)
                    write_manifest(out, manifest)  # after each model, so a later failure keeps this one
                publish(out, manifest, store, report, site=config.site)
                shutil.rmtree(out / "shards", ignore_errors=True)  # a whole build supersedes any shard records
    except (ReportgenError, OSError) as exc:
        # not for a busy or unusable --out (another build may own it), nor for shards, which share it
        if made and not config.shard and not isinstance(exc, OutputDirError):
            _remove_if_unused(Path(config.out))
        raise
    finally:
        executor.close()
    report.seconds = time.perf_counter() - started
    return report


def _remove_if_unused(out: Path) -> None:
    """Remove the ``out`` a failed build made when it holds nothing but reportgen's marks (and
    empty folders): a user mistake found late leaves no empty report behind. Under its lock, so a
    build that has taken the folder since keeps it."""
    marks = {MARKER, ".gitignore", ".reportgen.lock"}
    if not out.is_dir():
        return
    try:
        with exclusive(out):
            if all(path.is_dir() or (path.parent == out and path.name in marks) for path in out.rglob("*")):
                shutil.rmtree(out, ignore_errors=True)
    except OutputDirError:  # another build holds it now
        pass


@contextmanager
def _disk_full_is_an_error(out: Path) -> Iterator[None]:
    """A full disk becomes one clear line; what was stored before stays valid (writes are atomic)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OutputDirError(
            f"the disk is full (writing {exc.filename or out}); free some space and run the same command "
            "again: finished renders are kept"
        ) from None


def _publish_snapshot(out: Path, manifest: Manifest | None, store: Store, report: BuildReport, config: BuildConfig,
                      progress: Progress, entry: ModelEntry) -> None:
    """Write the manifest, pages and site with ``entry`` as it stands mid-build (its ``pending``
    phases not rendered yet), and say where to open it. Its seconds go to ``report.timings["partial sites"]``."""
    started = time.perf_counter()
    partial = merge_model(manifest, entry, config.store)
    write_manifest(out, partial)
    shown = BuildReport(out)
    publish(out, partial, store, shown, site=config.site)
    report.timings["partial sites"] = report.timings.get("partial sites", 0.0) + time.perf_counter() - started
    where = f"open {shown.site.path}/index.html" if shown.site else f"pages in {out}/docs"
    progress.note(f"{entry.name}: the site so far is ready ({where}); still rendering {', '.join(entry.pending)}")


def publish(out: Path, manifest: Manifest, store: Store, report: BuildReport, site: bool = True) -> None:
    """Write pages from the manifest and, with ``site``, run a strict ``mkdocs build``."""
    from .pages import write_docs

    started = time.perf_counter()
    report.pages = write_docs(out, manifest, store)
    report.timings["pages"] = time.perf_counter() - started
    if site:
        from .site import build_site

        report.site = build_site(out)
        report.timings["mkdocs"] = report.site.seconds


def rebuild_site(out: Path, site: bool = True) -> BuildReport:
    """``reportgen site``: pages and site again from the stored manifest; no model is loaded.
    After a ``--shard`` build (finished shards recorded in ``out``), the assembly of its pages.

    Raises:
        StoreError: there is no manifest in ``out``; a shard has not finished.
    """
    records = read_shard_records(out)
    if records:
        return assemble_shards(out, records, site=site)
    started = time.perf_counter()
    manifest = read_manifest(out)
    if manifest is None:
        raise StoreError(
            f"{Path(out) / 'manifest.json'} is missing or from another reportgen version; "
            f"run `reportgen build --out {out}` (stored renders are reused)"
        )
    report = BuildReport(Path(out))
    with exclusive(Path(out)), _disk_full_is_an_error(Path(out)):
        publish(Path(out), manifest, Store(manifest.store or Path(out) / ".cache"), report, site=site)
    report.seconds = time.perf_counter() - started
    return report


def assemble_shards(out: Path, records: list[dict], site: bool = True) -> BuildReport:
    """``reportgen site`` after a ``--shard i/N`` build: once all N shards are recorded as finished
    in ``out`` (``records``), the build once more from their config, without its shard, rendering nothing.

    Raises:
        StoreError: a shard has not finished, or the shards were built with different settings.
    """
    configs = [BuildConfig.from_record(record) for record in records]
    common = {dataclasses.replace(c, shard=None) for c in configs}
    if len(common) > 1 or len({c.shard[1] for c in configs}) > 1:
        raise StoreError(f"the shards recorded in {Path(out) / 'shards'} were built with different settings or "
                         "shard counts; give every shard the same flags, remove that folder and run them again")
    count = configs[0].shard[1]
    missing = sorted(set(range(count)) - {c.shard[0] for c in configs})
    if missing:
        raise StoreError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} have not finished (or had failed "
                         f"units); run them again with the same flags, then `reportgen site --out {out}`")
    # device "auto": pages need no GPU, and the device is not part of any render's key
    config = dataclasses.replace(common.pop(), out=Path(out), site=site, device="auto")
    return build(config, render=False)  # which removes the records: `reportgen site` then uses the manifest


# A build writes a site after a phase of renders (channel renders first, renders.PHASES) when the
# phases left would take at least this many seconds more; a small build just writes its site once.
SNAPSHOT_AFTER = 30.0


@dataclass
class Plan:
    """One model ready to render: loaded, with its selected layers and their channel ids."""

    loaded: Any
    layers: list
    units: dict[str, list[int]]
    load_seconds: float


def _plan(name: str, config: BuildConfig, layer_flag: str = "--layers") -> Plan:
    """Load the model and resolve its layers and units (all user input checked before any render);
    ``layer_flag`` names the option the layers came from in messages."""
    from .layers import catalogue, iter_units, module_layer, select_layers
    from .models import load_model, resolve_device
    from .optvis.render import check_canvas

    started = time.perf_counter()
    device = resolve_device(config.device)
    loaded = load_model(name, config.weights, device, seed=config.seed)
    size = loaded.preprocess.input_size
    layers = select_layers(catalogue(loaded.module, size), config.layers,
                           lookup=lambda path: module_layer(loaded.module, path, size), flag=layer_flag)
    units = {layer.module: list(iter_units(layer, config.units.first, config.units.ids)) for layer in layers}
    loaded = check_canvas(loaded, config.render)
    return Plan(loaded, layers, units, time.perf_counter() - started)


def build_model(plan: Plan, config: BuildConfig, store: Store, progress: Progress, report: BuildReport,
                executor=None, render: bool = True,
                snapshot: Callable[[ModelEntry], None] | None = None) -> ModelEntry | None:
    """Analyse and render one planned model's selected units and return its manifest entry
    (``None`` for a ``--shard`` build, which only renders its share of the jobs). With
    ``render=False``, a render missing from the store is an error (``StoreError``).

    Every render is planned first (``renders.plan``: keys, cached renders, jobs for the rest),
    then ``executor`` (default: in this process) runs the jobs a phase at a time
    (``renders.PHASES``: channel renders first), and the entry is made from the store
    (``entries.model_entry``). After a phase, when those still to come would take
    ``SNAPSHOT_AFTER`` seconds or more at the rate so far, ``snapshot`` gets the entry as it
    stands, with the phases still to come in ``entry.pending`` (the build writes a browsable
    site from it).
    """
    from .analysis import stage
    from .analysis.references import folder_references, skimage_references
    from .executors import LocalExecutor
    from .optvis.objectives import LOGITS
    from .renders import KINDS, PHASES, PHOTO_KINDS, job_work, plan as plan_renders

    executor = executor or LocalExecutor()
    loaded, layers, units, name = plan.loaded, plan.layers, plan.units, plan.loaded.name
    modules = [layer.module for layer in layers]
    timings: dict[str, float] = {"load": plan.load_seconds}
    neurons = {m: units[m][:config.neurons] for m in modules}
    variants = {m: units[m][:config.variants] for m in modules}
    classes = class_ids(getattr(loaded.module, "num_classes", 0) or 0, config.classes)
    if 0 < len(classes) < config.classes:
        offer = (f"reportgen's list of ImageNet classes has {len(classes)}" if len(classes) == len(CLASS_IDS)
                 else f"{name} has {len(classes)} classes")
        report.warnings.append(f"--classes {config.classes}: {offer}; made {len(classes)} class visualizations")

    t0 = time.perf_counter()
    refs = folder_references(config.images) if config.images else skimage_references()
    progress.stage(f"{name}: analysis")
    analysis = executor.analyze(loaded, stage.analyze, layers, units, neurons, config, refs, store, progress=progress)
    timings["analysis"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rendered_before = report.rendered
    sets = {}  # (kind, layer) -> RenderSet, in the order a local build renders them
    drivers = {m: analysis.drivers[m][:config.drivers] for m in modules}  # rendered with the layer's units
    for m in modules:
        mixes = analysis.groups.get(m, {}).get("vectors", [])
        vectors = {g: tuple(float(w) for w in row) for g, row in enumerate(mixes)}
        # what each kind renders of this layer, and what its jobs need besides the ids
        wanted = {"channel": (units[m] + drivers[m], {}),
                  "group": (list(vectors), {"vectors": vectors, "source": analysis.groups_key}),
                  "neuron": (neurons[m], {"box": analysis.boxes.get(m)}),
                  **{kind: (variants[m], {}) for kind in ("second-seed", "negative", "diversity")},
                  "accentuation": (list(analysis.accent_photos[m]), {"photos": analysis.accent_photos[m]}),
                  **{kind: (sorted(analysis.photos), {"photos": analysis.photos}) for kind in PHOTO_KINDS}}
        for kind in KINDS:
            if kind in wanted:
                ids, needs = wanted[kind]
                sets[kind, m] = plan_renders(loaded, kind, m, ids, config, store, report, **needs)
    sets["class", LOGITS] = plan_renders(loaded, "class", LOGITS, classes, config, store, report, names=analysis.labels)
    jobs = [job for rendered in sets.values() for job in rendered.jobs]
    if config.shard:
        jobs = [job for job in jobs if shard_of(job, config.shard[1]) == config.shard[0]]
    if jobs and not render:
        raise StoreError(f"{sum(len(job.todo) for job in jobs)} renders of {name} are not in the store "
                         f"{store.root}; run the shards that make them again")
    planned = sum(len(rendered.keys) for rendered in sets.values())
    stored = planned - sum(len(job.todo) for job in jobs)  # cached, or another shard's

    def on_result(job, results, seconds):
        nonlocal stored
        sets[job.kind, job.layer].store(store, job, results, seconds, report)
        report.kind_seconds[job.kind] = report.kind_seconds.get(job.kind, 0.0) + seconds
        stored += len(results)
        progress.renders(stored, planned)

    phases = [(label, [job for job in jobs if job.kind in kinds]) for label, kinds in PHASES]
    phases = [(label, phase_jobs) for label, phase_jobs in phases if phase_jobs]
    work = [sum(job_work(job) for job in phase_jobs) for _, phase_jobs in phases]
    progress.begin(sum(work), name)
    progress.renders(stored, planned)
    rendering = 0.0  # seconds spent in executor.run so far
    for number, (label, phase_jobs) in enumerate(phases):
        progress.stage(f"{name} · {label}")
        started = time.perf_counter()
        executor.run(loaded, phase_jobs, analysis.magnitude, progress, on_result)
        rendering += time.perf_counter() - started
        remaining = rendering / sum(work[:number + 1]) * sum(work[number + 1:])  # seconds, at the rate so far
        if snapshot is not None and not config.shard and number + 1 < len(phases) and remaining >= SNAPSHOT_AFTER:
            timings["render"] = time.perf_counter() - t0
            pending = [later for later, _ in phases[number + 1:]]
            snapshot(entries.model_entry(loaded, plan, config, analysis, sets, refs, classes, store, timings,
                                  BuildReport(report.out), executor, rendered=report.rendered - rendered_before,
                                  pending=pending))
    progress.end()
    if config.shard:  # no entry: `reportgen site` (or the build without --shard) makes it once every shard is done
        report.failed.extend(f"{name} {job.layer} {job.kind} {i}" for job in jobs for i in job.todo
                             if sets[job.kind, job.layer].found[i] is None)
        return None
    timings["render"] = time.perf_counter() - t0
    for step in ("load", "analysis", "render"):
        report.timings[step] = report.timings.get(step, 0.0) + timings[step]
    entry = entries.model_entry(loaded, plan, config, analysis, sets, refs, classes, store, timings, report, executor,
                         rendered=report.rendered - rendered_before, pending=[])
    fit = analysis.normalization
    if fit and fit["better"]:
        report.warnings.append(
            f"{name}: its BatchNorm statistics fit the {fit['better']} normalization (mean {fit[fit['better']]['mean']}, "
            f"std {fit[fit['better']]['std']}) better than the one used (timm's config: stem fit {fit['used']['stem']} "
            f"against {fit[fit['better']]['stem']}); were the weights trained with it? The model page says more")
    report.skipped.extend(f"{name}: {s}" for s in analysis.arrays["skipped"])
    return entry


def shard_of(job, count: int) -> int:
    """Which of ``count`` shards renders ``job``: a hash of its kind, layer and first id, so every
    shard agrees whatever each has found in the store already."""
    import hashlib

    digest = hashlib.sha256(f"{job.kind}|{job.layer}|{job.ids[0]}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % count


# A spread of ImageNet classes a reader recognizes at a glance (animals, objects, food, scenes),
# in the order class visualizations are made: the first N for ``--classes N``.
CLASS_IDS = (1, 130, 207, 281, 291, 323, 340, 388, 417, 430, 504, 812, 933, 947, 954, 963, 980, 985, 9, 99,
             144, 309, 402, 409, 437, 457, 471, 508, 530, 559, 574, 609, 635, 701, 717, 737, 779, 805, 817,
             849, 879, 907, 920, 928, 937, 949, 951, 971)


def class_ids(num_classes: int, count: int) -> list[int]:
    """The classes whose visualizations a model page shows: from ``CLASS_IDS`` for an ImageNet
    head, evenly spread ids otherwise; none for a model without a classifier."""
    if num_classes <= 0 or count <= 0:
        return []
    if num_classes == 1000:
        return list(CLASS_IDS[:count])
    return sorted({round(i * (num_classes - 1) / max(count - 1, 1)) for i in range(min(count, num_classes))})


# ---------------------------------------------------------------- single renders and the catalogue

def list_layers(name: str, weights: str = "none", receptive_fields: bool = True) -> list[tuple[Any, Any]]:
    """The layer catalogue of timm model ``name`` with each layer's theoretical receptive field
    (``reportgen layers``): a list of ``(LayerInfo, ReceptiveField or None)``."""
    from .layers import catalogue
    from .models import load_model

    loaded = load_model(name, weights, "cpu")
    layers = catalogue(loaded.module, loaded.preprocess.input_size)
    from .analysis.stage import receptive_fields as fields_of

    fields = fields_of(loaded, layers) if receptive_fields else {}
    return [(layer, fields.get(layer.module)) for layer in layers]


def _check_writable(folder: Path, what: str) -> None:
    """Refuse, before any work, a ``folder`` (or its nearest existing parent: missing folders are
    made on write) that no file can be written into: by trying one.

    Raises:
        OutputDirError: naming ``what`` and the reason.
    """
    import tempfile

    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputDirError(f"{what}: nothing can be written in {existing} ({exc.strerror or exc}); "
                             "choose another path") from None


def render_unit(config: BuildConfig, layer: str, unit: int, neuron: bool, out_file: Path) -> Path:
    """``reportgen render``: optimize one unit (channel or centre neuron) and save a PNG.

    Raises:
        UnknownLayerError / UnknownUnitError / UsageError: for a bad layer, unit or output path.
    """
    from .images import png_bytes
    from .optvis.render import render_channels

    out_file = Path(out_file)
    if out_file.suffix.lower() != ".png":
        raise UsageError(f"--out {out_file}: the render is written as PNG; give a path ending in .png")
    if out_file.is_dir():
        raise UsageError(f"--out {out_file} is a folder; give a file path ending in .png")
    _check_writable(out_file.absolute().parent, f"--out {out_file}")
    plan = _plan(config.models[0], dataclasses.replace(config, layers=layer), layer_flag="--layer")
    if len(plan.layers) != 1:
        raise UsageError(f"--layer {layer!r} selects {len(plan.layers)} layers; give one (see `reportgen layers`)")
    loaded, target = plan.loaded, plan.layers[0]
    if not 0 <= unit < target.channels:
        from .errors import UnknownUnitError

        raise UnknownUnitError(f"--unit {unit}: layer {target.module} has channels 0..{target.channels - 1}")
    if neuron:
        from .analysis.stage import neuron_boxes
        from .optvis.render import render_neurons

        box = neuron_boxes(loaded, [target.module], config.render.size, config.render.pad)[target.module]
        result = render_neurons(loaded, target.module, [unit], config.render, config.seed, box=box)[0]
    else:
        result = render_channels(loaded, target.module, [unit], config.render, config.seed)[0]
    atomic_write(Path(out_file), png_bytes(result.image))
    return Path(out_file)
