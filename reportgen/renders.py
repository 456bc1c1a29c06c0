"""The renders a build makes: planned as jobs, run by an executor, stored as they arrive.

Each kind is one entry of ``KINDS`` (its phase, what its ids are, how it batches and renders, where
a unit's page shows it). Per layer and unit:

- ``channel``: the unit's whole channel, maximized (the render every unit gets);
- ``neuron``: its centre neuron, optimizing only the pixels of its receptive-field box;
- ``second-seed``: the channel again from the next build seed (does another start find the same?);
- ``negative``: the channel minimized (what the unit hates);
- ``diversity``: ``DIVERSITY_K`` variants pushed apart, stored side by side as one strip;
- ``accentuation``: the unit's top reference image changed to excite it more while the layer's
  features stay near the photo's (``optvis.dream.accentuate``).

Per layer: ``group`` renders, one per neuron group (``analysis.groups``: a channel mix, maximized).
Per model: ``class`` visualizations (a class logit, maximized). Per layer and reference photo:
``dream`` (DeepDream) and ``inversion``. Channel renders also store the unit's mean under held-out
perturbations (``optvis.trust``), and every render whether it is flat.

A build first *plans* (``plan``): every render's store key, the ids cut into fixed chunks of the
batch size, and a ``RenderJob`` for each chunk with any render missing. A resumed or distributed
build therefore batches every unit as an uninterrupted local one does, and its images are the same
to the bit (batched convolutions may differ in the last bits from unbatched ones). An executor
(``executors.py``) runs the jobs with ``run_job``, here or on workers, and the driver stores each
job's results as they arrive (``RenderSet.store``).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import RenderSettings
from .store import Store, StoredRender, canonical_key

RETRY_LR_FACTOR = 0.1  # a batch that hits NaN/inf is optimized again at a tenth of the learning rate
# Bump when the render code changes what it makes in a way no setting or constant says (render_key).
RENDER_ALGO_VERSION = 4  # 4: channels-last memory, transform samples batched together


@dataclass(frozen=True)
class RenderJob:
    """One batch to optimize: ``kind`` renders of ``ids`` (a whole chunk) of ``layer``, of which
    ``todo`` are missing from the store. ``box`` is a neuron render's receptive field, ``names``
    the class names of a class job, ``photos`` the canvas-sized photos of a dream, inversion or
    accentuation job and ``vectors`` the channel mixes of a group job (one per id)."""

    kind: str
    layer: str
    ids: tuple[int, ...]
    todo: tuple[int, ...]
    settings: RenderSettings
    seed: int
    box: tuple[int, int, int, int] | None = None
    names: tuple[str, ...] = ()
    photos: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)
    vectors: tuple[tuple[float, ...], ...] = field(default=(), compare=False, repr=False)

    def part(self, ids: Sequence[int]) -> "RenderJob":
        """The same job for ``ids`` (some of its own) only, with their names, photos and vectors."""
        keep = [i for i, c in enumerate(self.ids) if c in ids]
        return dataclasses.replace(self, ids=tuple(self.ids[i] for i in keep),
                                   todo=tuple(c for c in self.todo if c in ids),
                                   names=tuple(self.names[i] for i in keep) if self.names else (),
                                   photos=tuple(self.photos[i] for i in keep) if self.photos else (),
                                   vectors=tuple(self.vectors[i] for i in keep) if self.vectors else ())


@dataclass
class RenderSet:
    """The renders of one kind for one layer (or the model's classes): their keys, what the store
    already has, and the jobs that make the rest. ``found`` fills in as jobs are stored; a render
    that failed stays ``None``."""

    kind: str
    layer: str
    model: str
    keys: dict[int, str]
    found: dict[int, StoredRender | None]
    jobs: list[RenderJob]

    def store(self, store: Store, job: RenderJob, results: Sequence, seconds: float, report) -> None:
        """Store a finished job's results (those of ``job.todo``): ``seconds`` is its wall time."""
        per_unit = seconds / max(1, len(job.ids))
        for result in results:
            report.rendered += 1
            if not result.ok:
                continue
            self.found[result.channel] = store.put_render(self.keys[result.channel], result.image, {
                "model": self.model, "layer": self.layer, "kind": self.kind, "channel": result.channel,
                "seed": result.seed, "activation": result.activation, "curve": result.curve,
                "objective": result.objective, "flat": result.flat, **result.extra, "seconds": round(per_unit, 3),
            })


def plan(loaded, kind: str, layer: str, ids: Sequence[int], config, store: Store, report,
         box: tuple[int, int, int, int] | None = None, names: dict[int, str] | None = None,
         photos: dict[int, tuple[np.ndarray, str]] | None = None,
         vectors: dict[int, tuple[float, ...]] | None = None, source: str = "") -> RenderSet:
    """Key every render of ``kind`` for ``ids`` of ``layer``, read those the store has, and make a
    job for each chunk with any missing. ``box``: a neuron render's receptive field; ``names``:
    class names by class id; ``photos``: ``{index: (canvas-sized photo, digest)}`` for dreams and
    inversions and the photo an accentuation starts from; ``vectors``: each group's channel mix by
    group id, and ``source`` the store key of the analysis that made them (what keys the renders).
    Found renders count as cached in ``report``."""
    from .optvis.render import choose_batch

    entry, ids = kind_of(kind), list(ids)
    settings = entry.settings(config.render)
    constants = recipe()
    keys = {i: render_key(loaded, kind, layer, i, settings, config.seed, box=box,
                          name=(names or {}).get(i, "") if kind == "class" else "",
                          photo=photos[i][1] if photos else None,
                          group=f"{source}/{i}" if kind == "group" else None, constants=constants) for i in ids}
    found = {i: store.get_render(keys[i]) for i in ids}
    report.cached += sum(stored is not None for stored in found.values())
    if entry.batched:  # images a batch of the batch size holds
        batch = max(1, choose_batch(loaded, len(ids), config.batch) // entry.images())
    else:  # classes, dreams and inversions: one batch
        batch = max(1, len(ids))
    jobs = []
    for start in range(0, len(ids), batch):
        chunk = tuple(ids[start:start + batch])
        todo = tuple(i for i in chunk if found[i] is None)
        if todo:
            jobs.append(RenderJob(kind, layer, chunk, todo, settings, config.seed,
                                  box=None if box is None else tuple(box),
                                  names=tuple((names or {}).get(i, "") for i in chunk) if kind == "class" else (),
                                  photos=tuple(photos[i][0] for i in chunk) if photos else (),
                                  vectors=tuple(vectors[i] for i in chunk) if vectors else ()))
    return RenderSet(kind, layer, loaded.name, keys, found, jobs)


def job_steps(job: RenderJob) -> int:
    """How many optimizer steps ``job`` runs (a DeepDream or an accentuation is a short climb)."""
    return kind_of(job.kind).steps(job.settings)


def job_work(job: RenderJob) -> float:
    """A job's cost in image-steps (images optimized x steps x transform samples): what the progress
    display counts, so that its ETA weighs a diversity job (three images a unit) and a DeepDream
    (a short climb) by what they cost."""
    return float(len(job.ids) * kind_of(job.kind).images() * job_steps(job) * job.settings.samples)


def run_job(loaded, job: RenderJob, magnitude=None, on_step: Callable[[int], None] | None = None) -> list:
    """Render ``job`` (worker side) and return the ``RenderResult`` of each id in ``job.todo``.

    The whole chunk is optimized, so that its batch is the one an uninterrupted build uses; a chunk
    that produced NaN or inf is optimized again at a tenth of the learning rate for the failed ids.
    ``magnitude`` is the spectrum of a ``maco`` build.
    """
    results = _render_in_memory(loaded, job, job.settings, magnitude, on_step)
    for result in results:
        result.extra["lr"] = job.settings.lr
    failed = [r.channel for r in results if not r.ok and r.channel in job.todo]
    if failed:
        gentler = dataclasses.replace(job.settings, lr=job.settings.lr * RETRY_LR_FACTOR)
        retried = {r.channel: r for r in _render_in_memory(loaded, job.part(failed), gentler, magnitude, None)}
        for result in retried.values():
            result.extra["lr"] = gentler.lr
        results = [retried.get(r.channel, r) for r in results]
    return [r for r in results if r.channel in job.todo]


def _render_in_memory(loaded, job: RenderJob, settings: RenderSettings, magnitude, on_step) -> list:
    """``_render``, split in halves (and those again) while the GPU runs out of memory for the
    batch: each unit has its own seed, so a unit's render does not depend on its batch mates."""
    import torch

    try:
        return _render(loaded, job, settings, magnitude, on_step)
    except torch.cuda.OutOfMemoryError:
        if len(job.ids) == 1:
            raise
    torch.cuda.empty_cache()
    half = len(job.ids) // 2
    return [result for ids in (job.ids[:half], job.ids[half:])
            for result in _render_in_memory(loaded, job.part(ids), settings, magnitude,
                                            _thinned(on_step, len(ids) / len(job.ids)))]


def _thinned(on_step: Callable[[int], None] | None, share: float) -> Callable[[int], None] | None:
    """``on_step`` called on about ``share`` of the steps: a part of a job reports its share of progress."""
    if on_step is None:
        return None
    return lambda step: on_step(step) if int((step + 1) * share) > int(step * share) else None


def run_timed(loaded, job: RenderJob, magnitude=None, on_step=None) -> tuple[list, float]:
    """``run_job`` and its wall time in seconds."""
    started = time.perf_counter()
    results = run_job(loaded, job, magnitude, on_step)
    return results, time.perf_counter() - started


def _render(loaded, job: RenderJob, settings: RenderSettings, magnitude, on_step) -> list:
    """One chunk of ``job.kind`` renders with ``settings`` (the kind's own ``render``)."""
    return kind_of(job.kind).render(loaded, job, settings, magnitude, on_step)


def _channels(loaded, job: RenderJob, settings: RenderSettings, magnitude, on_step) -> list:
    """Channel renders (a second seed starts from the next build seed), with their perturbed means."""
    from .optvis import render
    from .optvis.objectives import Channel
    from .optvis.trust import perturbed_scores

    chunk = list(job.ids)
    results = render.render_channels(loaded, job.layer, chunk, settings, job.seed + (job.kind == "second-seed"),
                                     on_step=on_step, magnitude=magnitude)
    perturbed = perturbed_scores(loaded, Channel(job.layer, tuple(chunk)), [r.image for r in results])
    for i, result in enumerate(results):
        result.extra["perturbed"] = {name: values[i] for name, values in perturbed.items()}
    return results


def _neurons(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.render import render_neurons

    return render_neurons(loaded, job.layer, list(job.ids), settings, job.seed, box=job.box, on_step=on_step)


def _negatives(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.render import render_negatives

    return render_negatives(loaded, job.layer, list(job.ids), settings, job.seed, on_step=on_step, magnitude=magnitude)


def _diversity(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.render import render_diversity, side_by_side

    groups = render_diversity(loaded, job.layer, list(job.ids), settings, job.seed, on_step=on_step, magnitude=magnitude)
    return [side_by_side(group) for group in groups]


def _accentuations(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.dream import accentuate

    return accentuate(loaded, job.layer, list(job.ids), list(job.photos), settings, job.seed, on_step=on_step)


def _groups(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.render import render_groups

    return render_groups(loaded, job.layer, list(job.ids), job.vectors, settings, job.seed, on_step=on_step,
                         magnitude=magnitude)


def _photos(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.dream import deep_dream, invert

    function = deep_dream if job.kind == "dream" else invert
    return function(loaded, job.layer, list(job.photos), settings, job.seed, indices=list(job.ids), on_step=on_step)


def _classes(loaded, job, settings, magnitude, on_step) -> list:
    from .optvis.render import render_classes

    return render_classes(loaded, list(job.ids), settings, job.seed, names=job.names, magnitude=magnitude,
                          on_step=on_step)


def _diversity_k() -> int:
    from .optvis.render import DIVERSITY_K

    return DIVERSITY_K


def _class_settings(settings: RenderSettings) -> RenderSettings:
    from .optvis.render import class_settings

    return class_settings(settings)


def _dream_steps(settings: RenderSettings) -> int:
    from .optvis.dream import DREAM_STEPS

    return min(settings.steps, DREAM_STEPS)


def _accent_steps(settings: RenderSettings) -> int:
    from .optvis.dream import ACCENT_STEPS

    return min(settings.steps, ACCENT_STEPS)


@dataclass(frozen=True)
class Kind:
    """One kind of render, in one place: its ``name`` (in keys, jobs and the store), the ``phase``
    of a build it renders in, what its ids are (``of``: ``unit`` channels, neuron ``group``s,
    ``photo``s or ``class``es), whether its ids are cut into batches of the batch size
    (``batched``; the others render in one batch), how many images one id optimizes (``images``),
    the settings it renders with (``settings``) and for how many steps (``steps``), the field of a
    unit's manifest entry that holds it where it is one of a unit's variants (``field``), and the
    function that renders a job (``render``: ``(loaded, job, settings, magnitude, on_step)`` ->
    one ``RenderResult`` per id)."""

    name: str
    phase: str
    of: str
    render: Callable
    batched: bool = True
    images: Callable[[], int] = lambda: 1
    settings: Callable[[RenderSettings], RenderSettings] = lambda settings: settings
    steps: Callable[[RenderSettings], int] = lambda settings: settings.steps
    field: str | None = None


# Every kind, in the order a build renders them, a phase at a time: the site is written after
# each phase, so the channel renders of every layer are browsable long before the extras are done.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("channel", "channel renders", "unit", _channels),
    Kind("group", "neuron groups", "group", _groups),
    Kind("neuron", "centre neurons", "unit", _neurons),
    Kind("second-seed", "variants", "unit", _channels, field="second_seed"),
    Kind("negative", "variants", "unit", _negatives, field="negative"),
    Kind("diversity", "variants", "unit", _diversity, images=_diversity_k, field="diversity"),
    Kind("accentuation", "variants", "unit", _accentuations, steps=_accent_steps, field="accentuation"),
    Kind("dream", "DeepDreams and inversions", "photo", _photos, batched=False, steps=_dream_steps),
    Kind("inversion", "DeepDreams and inversions", "photo", _photos, batched=False),
    Kind("class", "class visualizations", "class", _classes, batched=False, settings=_class_settings),
)}


def kind_of(name: str) -> Kind:
    """The kind called ``name``.

    Raises:
        ValueError: there is none.
    """
    if name not in KINDS:
        raise ValueError(f"unknown render kind {name!r}; use one of {', '.join(KINDS)}")
    return KINDS[name]


PHASES = tuple((phase, tuple(k for k in KINDS if KINDS[k].phase == phase))
               for phase in dict.fromkeys(kind.phase for kind in KINDS.values()))
PHOTO_KINDS = tuple(k for k in KINDS if KINDS[k].of == "photo")
VARIANT_FIELDS = {k: KINDS[k].field for k in KINDS if KINDS[k].field}  # kind -> its field in a unit's entry


# Module-level constants of these modules are part of every render's key (``recipe``): the render
# loop, the parameterizations, transforms, objectives, ReLU redirection, dreams, trust measures and
# the retries here. A constant added to any of them enters the key by itself.
RECIPE_MODULES = ("reportgen.optvis.render", "reportgen.optvis.param", "reportgen.optvis.transforms",
                  "reportgen.optvis.objectives", "reportgen.optvis.relu", "reportgen.optvis.dream",
                  "reportgen.optvis.trust", "reportgen.renders")
RECIPE_ALSO = (("reportgen.images", "FLAT_STD"),)  # elsewhere, but stored with every render (its flat flag)
# How many units share a batch is not in the key: a resumed or sharded build finds its renders
# whatever --batch says (batched kernels may differ from unbatched ones in the last bits only);
# nor is the order in which a build renders its kinds (PHASES).
NOT_IN_KEY = frozenset({"GPU_BATCH", "CPU_BATCH", "KINDS", "PHOTO_KINDS", "VARIANT_FIELDS", "PHASES", "RECIPE_MODULES",
                        "RECIPE_ALSO", "NOT_IN_KEY"})
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


def recipe() -> dict[str, object]:
    """Every constant the render code reads, by ``module.NAME``, JSON-ready (tensors as lists)."""
    import torch

    constants: dict[str, object] = {}
    named = [(module, name) for module in RECIPE_MODULES for name in vars(importlib.import_module(module))]
    for module, name in [*named, *RECIPE_ALSO]:
        value = getattr(importlib.import_module(module), name)
        if not _CONSTANT.fullmatch(name) or name in NOT_IN_KEY:
            continue
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, (bool, int, float, str, tuple, list)):
            constants[f"{module.rsplit('.', 1)[-1]}.{name}"] = value
    return constants


def render_key(loaded, kind: str, layer: str, index: int, settings: RenderSettings, seed: int,
               box: tuple[int, int, int, int] | None = None, name: str = "", photo: str | None = None,
               group: str | None = None, constants: dict | None = None) -> str:
    """The store key of one render of ``kind``: what it optimizes (its objective's own ``to_dict``,
    from ``optvis.render.render_objective``), every setting the loop reads (``settings``), every
    constant of the render code (``constants``, default ``recipe()``), the model, its weights and
    how they are fed (preprocessing, resized input), the build seed, and the neuron's ``box`` or the
    ``photo``'s digest. ``name`` is a class's name; ``group`` names a neuron group (the key of the
    analysis that found it and its index) rather than its mix of channels, whose last bits may
    differ between machines and thread counts. Two renders share a key only if they make the
    same pixels."""
    from .optvis import render

    return canonical_key({
        "v": RENDER_ALGO_VERSION, "kind": kind, "layer": layer, "index": index,
        "objective": render.render_objective(kind, layer, (index,), (name,) if kind == "class" else (),
                                             settings=settings).to_dict(),
        "box": list(box) if box and kind == "neuron" else None, "photo": photo, "settings": settings.to_dict(),
        "seed": seed, "recipe": recipe() if constants is None else constants, "model": loaded.name, "weights": loaded.weights.digest,
        "preprocess": vars(loaded.preprocess), "fixed_input": loaded.fixed_input,
        **({"group": group} if kind == "group" else {}),  # only groups have one: other keys stay as they were
    })
