"""Manifest entries from a build: what the analysis found and the store holds, as the typed
records of ``manifest.py`` that every page is written from (``OUT/manifest.json``).

``model_entry`` makes a model's entry from a planned build, its analysis and its render sets
(``renders.RenderSet``); it calls the helpers below, one per part of a layer's entry: its units
and drivers (``_unit_entries``), their centre neurons, variants and circuits, its neuron groups,
dreams, and the model's class visualizations. Failed renders are reported as they are met.
"""

from __future__ import annotations

import math
import platform
import statistics
from typing import TYPE_CHECKING, Sequence

from . import __version__
from .manifest import (Accentuation, ClassEntry, Diversity, Dream, DreamEntry, ERFEntry, Group, GroupFit, GroupTop,
                       GroupUnit, Inversion, LayerEntry, Link, Maps, ModelEntry, Neuron, Partner, References, RFEntry,
                       TopImage, Twin, UnitEntry, Vote, record_of, to_json)
from .pages import slug, unit_image, with_pages
from .renders import VARIANT_FIELDS

if TYPE_CHECKING:
    from .config import BuildConfig
    from .pipeline import BuildReport, Plan
    from .store import Store


def model_entry(loaded, plan: Plan, config: BuildConfig, analysis, sets: dict, refs, classes: list[int],
                 store: Store, timings: dict[str, float], report: BuildReport, executor, rendered: int,
                 pending: list[str]) -> ModelEntry:
    """A model's manifest entry from what the store holds now. Failed renders go to ``report``
    (a throwaway one for a snapshot); renders of the ``pending`` phases that are not stored yet
    are left out rather than counted as failed."""
    import timm
    import torch

    from .analysis import stage
    from .analysis.activations import REDUNDANT_R
    from .optvis.objectives import LOGITS
    from .optvis.render import class_settings, reach_scales
    from .renders import PHASES

    waiting = {kind for label, kinds in PHASES if label in pending for kind in kinds}

    def found(kind: str, layer: str) -> dict:
        renders = sets[kind, layer].found
        return {i: s for i, s in renders.items() if s is not None} if kind in waiting else renders

    name, units = loaded.name, plan.units
    layer_entries = []
    for layer in plan.layers:
        m = layer.module
        channels = sets["channel", m].found
        stats = analysis.stats[m]
        dead, twins = stats.dead(), stats.redundant(REDUNDANT_R)
        unit_entries = _unit_entries(name, layer, {c: channels[c] for c in units[m] if c in channels}, stats,
                                     dead, twins, report, config.seed)
        drawn = [c for c in analysis.drivers[m][:config.drivers] if c in channels]
        drivers = _unit_entries(name, layer, {c: channels[c] for c in drawn}, stats, dead, twins, report, config.seed,
                                unrendered=[c for c in analysis.drivers[m] if c not in drawn])
        for driver in drivers:  # the images its page shows (stage.map_pairs)
            driver.top = driver.top[:stage.DRIVER_TOP]
        fit = analysis.groups.get(m)
        entry = LayerEntry(
            **layer.to_dict(), slug=slug(m), units=unit_entries, dead=dead,
            redundant_r=REDUNDANT_R,
            redundant=[Twin(channel=c, partner=int(stats.partner[c]), r=float(stats.partner_r[c])) for c in twins],
            median_ratio=_median(u.activation_ratio for u in unit_entries),
            median_perturbed_ratio=_median(u.perturbed_ratio for u in unit_entries),
            drivers=drivers,
            dreams=_dreams(loaded, m, found("dream", m), found("inversion", m), report),
            groups=_groups(name, m, fit, found("group", m), analysis.shown, report),
            group_fit=None if not fit else GroupFit(key=analysis.groups_key, count=len(fit["vectors"]),
                                                    error=fit["error"], positions=fit["positions"],
                                                    images=fit["images"]),
            rf=RFEntry(size=analysis.fields[m].size, padding=analysis.fields[m].padding,
                       global_=analysis.fields[m].is_global),
            erf=ERFEntry(**analysis.erfs[m], key=analysis.erf_key),
            maps=Maps(key=analysis.maps_key, images=analysis.grid_images, units=analysis.grid_units[m]))
        _add_neurons(name, entry, found("neuron", m), analysis.boxes.get(m), stats, report)
        _add_variants(loaded, entry, channels, {kind: found(kind, m) for kind in VARIANT_FIELDS}, report)
        _add_circuits(entry, analysis.circuits.get(m) or {}, analysis.labels)
        layer_entries.append(entry)
    _add_feeds(layer_entries)
    class_renders = found("class", LOGITS)
    class_entries = _classes(loaded, [c for c in classes if c in class_renders], class_renders, analysis.labels, report)
    timings = {**timings, "total": sum(v for k, v in timings.items() if k != "total")}
    arrays = analysis.arrays
    total = sum(len(rendered.keys) for rendered in sets.values())
    shown = [u for e in layer_entries for u in e.units]
    # The plain dicts in their JSON form (lists, not tuples), so pages written from this entry and
    # from the manifest read back (`reportgen site`) are the same.
    return ModelEntry(
        name=name,
        slug=slug(name),
        weights=to_json({**vars(loaded.weights), "description": loaded.weights.describe()}),
        preprocess=to_json(vars(loaded.preprocess)),
        fixed_input=loaded.fixed_input,
        normalization=to_json(analysis.normalization),
        device=str(loaded.device),
        threads=torch.get_num_threads(),
        executor=executor.name,
        settings=to_json(config.to_dict()),
        seed=config.seed,
        versions={"reportgen": __version__, "torch": str(torch.__version__), "timm": timm.__version__,
                  "python": platform.python_version()},
        timings={k: round(v, 2) for k, v in timings.items()},
        pending=list(pending),
        rendered=rendered,
        cached=total - rendered,
        unit_count=sum(len(u) for u in units.values()),
        neuron_count=sum(len(ids[:config.neurons]) for ids in units.values()),
        variant_count=sum(len(ids[:config.variants]) for ids in units.values()),
        render_seconds=round(sum(u.seconds for u in shown), 1),
        median_ratio=_median(u.activation_ratio for u in shown),
        median_perturbed_ratio=_median(u.perturbed_ratio for u in shown),
        classes=class_entries,
        class_render=to_json(class_settings(config.render).to_dict()),
        unit_scales=[round(s, 3) for s in reach_scales(loaded, config.render)],  # what channel renders drew
        references=References(
            label=refs.label, digest=refs.digest, skipped=[str(s) for s in arrays["skipped"]], used=len(arrays["used"]),
            images=stage.reference_entries(loaded, refs, arrays, analysis.shown, store)),
        layers=layer_entries,
    )


def _unit_entries(model_name: str, layer, found: dict, stats, dead: Sequence[int], twins: Sequence[int],
                  report: BuildReport, config_seed: int, unrendered: Sequence[int] = ()) -> list[UnitEntry]:
    """Per shown unit of a layer: the render (``None`` if it failed), its activation ratio, its
    statistics over the reference images (``stats``; the layer's ``dead`` and redundant channels,
    ``twins``) and its top images. The ``unrendered`` channels follow with their statistics only
    (``rendered`` false: no render was asked for)."""
    from .optvis.render import render_objective, unit_seed

    entries = []
    for c, stored in [*found.items(), *((c, NOT_RENDERED) for c in unrendered)]:
        rendered = stored is not NOT_RENDERED
        stored = stored if rendered else None
        failed = rendered and stored is None
        meta = {} if stored is None else stored.meta
        activation = meta.get("activation")
        ref_max, ref_mean = _finite(stats.max_mean[c]), _finite(stats.mean[c])
        if failed:
            report.failed.append(f"{model_name} {layer.module} unit {c}")
        partner = int(stats.partner[c])
        usable = stored is not None and ref_max is not None and ref_max > 0
        perturbed = {kind: value / ref_max for kind, value in meta.get("perturbed", {}).items()} if usable else {}
        if meta.get("flat"):
            report.flat.append(f"{model_name} {layer.module} unit {c}")
        entries.append(UnitEntry(
            channel=c,
            key=None if stored is None else stored.key,
            render=None if stored is None else unit_image(slug(model_name), slug(layer.module), c),
            activation=activation,
            ref_max=ref_max,
            ref_mean=ref_mean,
            ref_peak=_finite(stats.peak[c]),
            fire_rate=float(stats.fire_rate[c]),
            dead=c in dead,
            partner=None if partner < 0 else Partner(channel=partner, r=float(stats.partner_r[c])),
            redundant=c in twins,
            top=[TopImage(image=int(i), value=float(v)) for i, v in zip(stats.top_index[c], stats.top_value[c])
                 if i >= 0 and math.isfinite(v)],
            ref_best_image=None if ref_max is None else int(stats.argmax[c]),
            activation_ratio=activation / ref_max if usable else None,
            perturbed=perturbed,
            perturbed_ratio=statistics.fmean(perturbed.values()) if perturbed else None,
            flat=bool(meta.get("flat", False)),
            seed=meta.get("seed", unit_seed(config_seed, layer.module, c)),
            objective=meta.get("objective", render_objective("channel", layer.module, (c,)).describe()),
            curve=to_json(meta.get("curve", [])),  # lists, as read back from the store
            seconds=meta.get("seconds", 0.0),
            failed=failed,
            rendered=rendered,
        ))
    return entries


NOT_RENDERED = object()  # a channel shown with its statistics only


def _add_neurons(model_name: str, entry: LayerEntry, found: dict, box, stats, report: BuildReport) -> None:
    """Attach each centre-neuron render to its unit: key, receptive-field box, activation and its
    ratio to the unit's highest activation at any position of any reference image."""
    for unit in entry.units:
        c = unit.channel
        if c not in found:
            continue
        stored = found[c]
        if stored is None:
            report.failed.append(f"{model_name} {entry.module} unit {c} (centre neuron)")
            unit.neuron = Neuron(failed=True, key=None, box=list(box))
            continue
        peak = _finite(stats.peak[c])
        activation = stored.meta["activation"]
        unit.neuron = Neuron(failed=False, key=stored.key, box=list(box), activation=activation,
                             ratio=activation / peak if peak is not None and peak > 0 else None,
                             objective=stored.meta["objective"], seed=stored.meta["seed"])


def _add_variants(loaded, entry: LayerEntry, channels: dict, found: dict[str, dict], report: BuildReport) -> None:
    """Attach each unit's further renders (the kinds with a unit ``field``: second seed, negative,
    diversity, accentuation), and the layer's seed agreement: per unit, how alike its two seeds'
    renders drive the rest of the layer, against the same measure between different units'
    renders (``seed_baseline``)."""
    from .optvis.trust import cross_agreement, seed_agreement

    by_channel = {u.channel: u for u in entry.units}
    for kind, renders in found.items():
        name = VARIANT_FIELDS[kind]
        record = record_of(UnitEntry, name)
        for c, stored in renders.items():
            unit = by_channel[c]
            if stored is None:
                report.failed.append(f"{loaded.name} {entry.module} unit {c} ({kind})")
                continue
            if stored.meta.get("flat"):
                report.flat.append(f"{loaded.name} {entry.module} unit {c} ({kind})")
            scale = unit.ref_max if unit.ref_max is not None and unit.ref_max > 0 else None
            extra = {}
            if record is Accentuation:  # from the unit's top image: its mean there, and how far the features moved
                extra = dict(image=unit.ref_best_image, start=stored.meta["start"], distance=stored.meta["distance"])
            if record is Diversity:  # each variant's own ratio
                extra = dict(ratios=[a / scale for a in stored.meta["activations"]] if scale else None)
            setattr(unit, name, record(
                key=stored.key, activation=stored.meta["activation"], flat=bool(stored.meta.get("flat")),
                ratio=stored.meta["activation"] / scale if scale else None,
                objective=stored.meta["objective"], seed=stored.meta["seed"], **extra))
    pairs = [(c, channels[c].image(), s.image()) for c, s in found.get("second-seed", {}).items()
             if s is not None and channels.get(c) is not None]
    if pairs:
        values = seed_agreement(loaded, entry.module, [c for c, _, _ in pairs], [a for _, a, _ in pairs],
                                [b for _, _, b in pairs])
        for (c, _, _), value in zip(pairs, values):
            by_channel[c].second_seed.agreement = value
        shown = [c for c, stored in channels.items() if stored is not None]
        entry.seed_baseline = cross_agreement(loaded, entry.module, shown, [channels[c].image() for c in shown])


def _add_circuits(entry: LayerEntry, circuit: dict, labels: dict[int, str]) -> None:
    """Give each unit of a layer entry its ``inputs`` (``circuits.chosen_inputs``: the channels of
    the layer before that drive it most, then those that inhibit it most) and its ``promotes``
    (the ``TOP_CLASSES`` classes it raises most), from ``Analysis.circuits``; left ``None`` where
    they were not measured (the first layer; layers that are not late; the extra drivers)."""
    import numpy as np

    from .analysis.circuits import TOP_CLASSES, chosen_inputs

    scores, votes = circuit.get("inputs"), circuit.get("promotes")
    rows = {c: row for row, c in enumerate(circuit.get("units", []))}
    for unit in entry.units:
        row = rows.get(unit.channel)
        if row is None:
            continue
        if scores is not None:
            unit.inputs = [Link(layer=circuit["source"], channel=j, score=float(scores[row][j]))
                           for j in chosen_inputs(scores[row])]
        if votes is not None:
            values = votes[row]
            order = np.argsort(-values, kind="stable")
            unit.promotes = [Vote(class_=int(k), label=labels.get(int(k), f"class {int(k)}"), score=float(values[k]))
                             for k in order[:TOP_CLASSES] if values[k] > 0]


def _groups(model_name: str, layer: str, fit: dict | None, found: dict, shown: Sequence[int],
            report: BuildReport) -> list[Group]:
    """A layer's neuron groups for the manifest (``stage.groups``), largest share first: each with
    its render (``None`` if it failed or is still to come), its share of the layer's activation, the
    units that weigh most in it, the reference images where it is present most and its render's
    mean along the mix against the best of those images'."""
    from .analysis.stage import GROUP_UNITS

    if not fit:
        return []
    groups = []
    for g, vector in enumerate(fit["vectors"]):
        stored = found.get(g)
        if g in found and stored is None:
            report.failed.append(f"{model_name} {layer} group {g}")
        meta = {} if stored is None else stored.meta
        activation, best = meta.get("activation"), _finite(fit["best"][g])
        weights = sorted(((float(w), c) for c, w in enumerate(vector) if w > 0), reverse=True)[:GROUP_UNITS]
        groups.append(Group(
            index=g,
            key=None if stored is None else stored.key,
            failed=g in found and stored is None,
            share=float(fit["share"][g]),
            units=[GroupUnit(channel=c, weight=w) for w, c in weights],
            top=[GroupTop(image=int(i), presence=float(p)) for i, p in zip(fit["top"][g], fit["presence"][g])
                 if i >= 0 and int(i) in shown],
            activation=activation,
            ref_max=best,
            activation_ratio=activation / best if activation is not None and best and best > 0 else None,
            objective=meta.get("objective"),
            seconds=meta.get("seconds", 0.0),
        ))
    return groups


def _add_feeds(layers: list[LayerEntry]) -> None:
    """The other direction of ``inputs``: each unit and driver gets ``feeds``, the shown units of
    the next layer that list it as an input, with the same score."""
    by_channel = {(layer.module, u.channel): u for layer in layers for u in with_pages(layer)}
    for layer in layers:
        for unit in layer.units:
            for d in unit.inputs or []:
                source = by_channel.get((d.layer, d.channel))
                if source is not None:
                    source.feeds.append(Link(layer=layer.module, channel=unit.channel, score=d.score))


def _dreams(loaded, layer: str, dreams: dict, inversions: dict, report: BuildReport) -> list[DreamEntry]:
    """DeepDream and feature inversion of each photo at ``layer``: keys and how far each went."""
    entries = []
    for i in sorted(set(dreams) | set(inversions)):  # (a snapshot may hold one of the two so far)
        dream, inversion = dreams.get(i), inversions.get(i)
        for kind, renders in (("DeepDream", dreams), ("inversion", inversions)):
            if i in renders and renders[i] is None:
                report.failed.append(f"{loaded.name} {layer} {kind} of reference image {i}")
        entries.append(DreamEntry(
            image=i,
            dream=None if dream is None else Dream(
                key=dream.key, start=dream.meta["curve"][0][1] if dream.meta["curve"] else None,
                activation=dream.meta["activation"]),
            inversion=None if inversion is None else Inversion(
                key=inversion.key, error=-inversion.meta["activation"],
                start=-inversion.meta["curve"][0][1] if inversion.meta["curve"] else None),
        ))
    return entries


def _classes(loaded, classes: list[int], found: dict, labels: dict, report: BuildReport) -> list[ClassEntry]:
    """Class visualizations and what the model itself predicts on each (its top class and probability)."""
    import numpy as np
    import torch

    from .analysis.activations import model_input

    if not classes:
        return []
    done = [c for c in classes if found[c] is not None]
    predictions = {}
    if done:
        with torch.no_grad():
            pixels = np.stack([found[c].image() for c in done])
            probs = torch.softmax(loaded.module(model_input(loaded, pixels)).float(), dim=1)
        for c, row in zip(done, probs.cpu()):
            top = int(row.argmax())
            predictions[c] = {"prob": float(row[c]), "rank": 1 + int((row > row[c]).sum()), "top": top,
                              "top_label": labels.get(top, f"class {top}")}
    entries = []
    for c in classes:
        stored = found[c]
        if stored is None:
            report.failed.append(f"{loaded.name} class {c} visualization")
        elif stored.meta.get("flat"):
            report.flat.append(f"{loaded.name} class {c} visualization")
        entries.append(ClassEntry(class_=c, label=labels.get(c, f"class {c}"), key=None if stored is None else stored.key,
                                  logit=None if stored is None else stored.meta["activation"],
                                  flat=bool(stored and stored.meta.get("flat")), **predictions.get(c, {})))
    return entries


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _finite(value) -> float | None:
    """A JSON-safe number: ``None`` for NaN and infinities."""
    value = float(value)
    return value if math.isfinite(value) else None
