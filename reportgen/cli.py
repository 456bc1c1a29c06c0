"""The command line: flags -> config -> one library call; domain errors -> one line and an exit code.

Exit codes: 0 done, 1 some units failed (the rest published), 2 usage or input error, 70 an internal
error (a bug: the traceback shows with ``--debug``), 130 interrupted.
torch and timm are imported only inside commands, so ``reportgen --help`` answers at once.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from pathlib import Path

import click

# Idle OpenMP threads spin before they sleep: on a machine shared with other work they take the CPU
# from the threads doing it. A short spin holds up on a quiet machine and a loaded one alike
# (benchmarks/threads.py, docs/performance.md#shared-cpus). Set before torch loads; a wait policy or
# spin count the user set wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from . import __version__
from .config import DEFAULT_MODEL, OBJECTIVES, PARAMS, PENALTIES, PRESETS, resolve_build_config
from .errors import ReportgenError

PAGES_WARN_BYTES = 900e6  # GitHub Pages refuses sites over 1 GB


INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click < 8.2 has none


def _handle_errors(func):
    """The boundary between the library and the user: a ReportgenError becomes ``error: ...`` and
    its exit code; an OS error on a named file one line naming it; Ctrl-C what was kept (a command
    that keeps something says so through ``_on_interrupt``); anything else ``internal error: ...``
    and exit 70, with the traceback only under ``--debug``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ReportgenError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            kept = click.get_current_context().meta.get("reportgen.kept")
            click.echo(f"\ninterrupted{': ' + kept() if kept else ''}", err=True)
            sys.exit(130)
        except OSError as exc:
            if _debug():
                raise
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = f" (writing {exc.filename})" if exc.filename else ""
                click.echo(f"error: the disk is full{where}; free some space and run the same command again", err=True)
                sys.exit(2)
            if not exc.filename:
                raise
            click.echo(f"error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions", err=True)
            sys.exit(2)

    return wrapper


def _on_interrupt(kept) -> None:
    """What an interrupted command tells the user it kept: ``kept()`` returns the sentence (else
    the command says only that it was interrupted)."""
    click.get_current_context().meta["reportgen.kept"] = kept


def _debug() -> bool:
    return bool(click.get_current_context().find_root().params.get("debug"))


class _Main(click.Group):
    """The command group; whatever escapes a command that is not a usage error is an internal error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:  # click 8.2+: a group called bare shows its help this way
            raise
        except BrokenPipeError:  # `reportgen layers | head`: click's own main exits quietly
            raise
        except click.UsageError as exc:  # a flag click itself refused: one line too, like every other mistake
            sub = exc.ctx.info_name if exc.ctx is not None and exc.ctx.parent is not None else None
            where = f"reportgen {sub}" if sub else "reportgen"
            click.echo(f"error: {exc.format_message()} (`{where} -h` lists the options)", err=True)
            sys.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"internal error: {type(exc).__name__}{': ' + message if message else ''} (please report "
                       "it with the command you ran; `reportgen --debug COMMAND ...` shows the traceback)", err=True)
            sys.exit(INTERNAL_ERROR)


def _render_flags(func):
    """Flags shared by ``build`` and ``render``."""
    for option in reversed([
        click.option("--weights", default=None, help="auto (bundled or hub), none (random init), or a local state-dict file."),
        click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
                     help="quick (CPU preview), standard or full. Default: quick on CPU, standard on GPU."),
        click.option("--size", type=int, default=None, help="Canvas size in pixels (overrides the preset)."),
        click.option("--steps", type=int, default=None, help="Optimization steps (overrides the preset)."),
        click.option("--device", default=None, help="auto, cpu, cuda or cuda:N."),
        click.option("--seed", type=int, default=None, help="Random seed (same seed, same images)."),
        click.option("--param", type=click.Choice(list(PARAMS)), default=None,
                     help="Image parameterization: fft (default), pixel, or maco (fixed photo spectrum, phase only)."),
        click.option("--threads", type=int, default=None,
                     help="CPU threads torch computes with (default: one per core)."),
        click.option("--objective", default=None,
                     help=f"What a channel render maximizes: {' or '.join(OBJECTIVES)} (the channel's mean, the "
                          "default; or the square root of its sum of squares)."),
        click.option("--penalty", default=None,
                     help=f"Image penalties subtracted from every render's objective: name=weight pairs such as "
                          f"tv=256,l2=16 ({', '.join(PENALTIES)}). Default: none."),
    ]):
        func = option(func)
    return func


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reportgen")
@click.option("--debug", is_flag=True, envvar="REPORTGEN_DEBUG",
              help="Show the traceback of an internal error (or of an OS error) instead of one line.")
def main(debug):
    """Browsable per-layer feature-visualization reports for any timm model."""


@main.command()
@click.option("--model", "models", multiple=True, help="timm model name; repeat for several (default tf_efficientnet_lite0).")
@_render_flags
@click.option("--layers", default=None, help="Indices, slices, dotted paths or globs (0,3,-1  -4:  'blocks.*'), or all.")
@click.option("--units", default=None, help="First N units per layer, all, or channel ids like 0,6,12.")
@click.option("--neurons", default=None,
              help="Also render the centre neuron of the first N shown units of each layer (0: none; all). "
                   "Default: 4 (quick), 8 (standard), all (full).")
@click.option("--variants", default=None,
              help="Also render a second seed, the negative, diversity variants and the accentuation of its top "
                   "image for the first N shown units (0: none; all). Default: 1 (quick), 8 (standard), all (full).")
@click.option("--classes", type=int, default=None,
              help="Class visualizations on the model page (0: none). Default: 8 (quick), 24 (standard), 48 (full).")
@click.option("--dreams", type=int, default=None,
              help="Reference images each layer dreams on and inverts (0: none). Default: 2 (quick), 4, 8.")
@click.option("--drivers", type=int, default=None,
              help="Also render the N channels of each layer that drive the most shown units of the next layer "
                   "(0: none). Every driver a unit page names gets a page. Default: 4 (quick), 8 (standard, full).")
@click.option("--groups", type=int, default=None,
              help="Factor each layer's activations into N neuron groups (NMF over up to 16,384 positions of "
                   "32 reference images) and render each (0: none). Default: 6.")
@click.option("--images", type=click.Path(path_type=Path), default=None, help="Folder of reference images (default: scikit-image photographs).")
@click.option("--batch", type=int, default=None, help="Units optimized together (default: from free memory).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default report/).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="TOML file with the same settings.")
@click.option("--no-site", is_flag=True, help="Write pages but skip the mkdocs build.")
@click.option("--store", default=None,
              help="Where renders and analyses are kept: a folder or an fsspec URL such as s3://bucket/cache "
                   "(default OUT/.cache).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="local (this process, the default) or ray (workers of a Ray cluster; pip install 'reportgen[ray]').")
@click.option("--ray-address", default=None, help="A running Ray cluster (default: start one on this machine).")
@click.option("--shard", default=None,
              help="i/N: render only the i-th of N shares of the jobs (0 <= i < N) into the store; when every "
                   "shard is done, `reportgen site --out OUT` writes the pages.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@_handle_errors
def build(models, weights, preset, size, steps, device, seed, param, threads, objective, penalty, layers, units,
          neurons, variants, classes, dreams, drivers, groups, images, batch, out, config_file, no_site, store, executor,
          ray_address, shard, quiet):
    """Render the selected units of each model and build the report site."""
    _set_threads(threads)
    from .pipeline import build as run_build
    from .progress import TerminalProgress

    config = resolve_build_config(
        {"model": list(models), "weights": weights, "preset": preset, "size": size, "steps": steps, "device": device,
         "seed": seed, "param": param, "objective": objective, "penalty": penalty, "layers": layers, "units": units,
         "neurons": neurons, "variants": variants,
         "classes": classes, "dreams": dreams, "drivers": drivers, "groups": groups, "images": images, "batch": batch, "out": out,
         "site": False if no_site else None, "store": store, "executor": executor, "ray_address": ray_address,
         "shard": shard},
        config_file,
    )
    _on_interrupt(functools.partial(_build_kept, config))
    report = run_build(config, TerminalProgress(enabled=not quiet))
    if config.shard:
        i, count = config.shard
        click.echo(f"shard {i}/{count} done in {report.seconds:.0f} s: {report.rendered} rendered, {report.cached} "
                   f"already stored, {len(report.failed)} failed, in {config.store_root}. When every shard is done, "
                   f"run `reportgen site --out {report.out}` (or, from another --out with the same --store, this "
                   "command without --shard): it renders nothing left and writes the pages.")
        sys.exit(report.exit_code)
    renders = report.rendered + report.cached
    click.echo(f"built {report.out}/ in {report.seconds:.0f} s: {renders} renders "
               f"({report.rendered} rendered, {report.cached} from cache, {len(report.failed)} failed), "
               f"{report.pages} pages{_site_summary(report)}")
    if report.skipped:
        click.echo(f"warning: {len(report.skipped)} reference image(s) skipped as unreadable or too small, e.g. "
                   f"{report.skipped[0]} (all are listed on the model page)", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.flat:
        click.echo(f"warning: {len(report.flat)} flat render(s) (almost no contrast), e.g. {report.flat[0]}; "
                   "their pages say so", err=True)
    for failure in report.failed[:10]:
        click.echo(f"failed: {failure}", err=True)
    sys.exit(report.exit_code)


def _build_kept(config) -> str:
    """What an interrupted build kept, where (``--out`` and ``--store`` as resolved, config file included)."""
    site = Path(config.out) / "site" / "index.html"
    last = f", and the last site written is in {site}" if site.is_file() else ""
    return (f"finished renders are kept in {config.store_root}{last}; run the same command again to resume")


def _set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU thread count (``None``: torch's default, one per core).

    Raises:
        UsageError: N is not at least 1.
    """
    if threads is None:
        return
    if threads < 1:
        from .errors import UsageError

        raise UsageError(f"--threads {threads} must be at least 1 (one per core is the default)")
    import torch

    torch.set_num_threads(threads)


def _site_summary(report) -> str:
    """How big the built site is and where to open it; warns (on stderr) near GitHub Pages' 1 GB."""
    if report.site is None:
        return ""
    if report.site.bytes > PAGES_WARN_BYTES:
        click.echo(f"warning: the site is {report.site.bytes / 1e6:.0f} MB; GitHub Pages publishes at most 1 GB "
                   "(select fewer layers or units, or a smaller --size)", err=True)
    return (f"; site {report.site.bytes / 1e6:.1f} MB built in {report.site.seconds:.1f} s. "
            f"Open {report.site.path}/index.html or run `reportgen serve --out {report.out}`")


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="timm model name.")
@click.option("--weights", default="none", show_default=True, help="Weights do not change shapes; a PATH is checked.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--rf/--no-rf", default=True, show_default=True,
              help="Compute theoretical receptive fields (deep layers of big models take a minute or two on a CPU).")
@click.option("--threads", type=int, default=None, help="CPU threads torch computes with (default: one per core).")
@_handle_errors
def layers(model, weights, as_json, rf, threads):
    """List the layers worth visualizing: index, module, kind, output shape, channels, stride, receptive field."""
    _set_threads(threads)
    from .pipeline import list_layers

    catalogue = list_layers(model, weights, receptive_fields=rf)
    if as_json:
        click.echo(json.dumps([{**layer.to_dict(), **({"rf": field.to_dict()} if field else {})}
                               for layer, field in catalogue], indent=1))
        return
    rows = [("index", "module", "kind", "out shape", "channels", "stride") + (("receptive field",) if rf else ())]
    rows += [(str(l.index), l.module, l.kind, "x".join(map(str, l.out_shape)), str(l.channels), str(l.stride))
             + ((field.describe(),) if field else ()) for l, field in catalogue]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@main.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="timm model name.")
@click.option("--layer", required=True, help="Layer index or dotted module path.")
@click.option("--unit", type=int, required=True, help="Channel id.")
@click.option("--neuron", is_flag=True, help="Optimize the centre neuron instead of the whole channel.")
@_render_flags
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=Path("render.png"), show_default=True)
@_handle_errors
def render(model, layer, unit, neuron, weights, preset, size, steps, device, seed, param, threads, objective, penalty,
           out_file):
    """Render one unit to a PNG file."""
    _set_threads(threads)
    from .pipeline import render_unit

    config = resolve_build_config({"model": [model], "weights": weights, "preset": preset, "size": size,
                                   "steps": steps, "device": device, "seed": seed, "param": param,
                                   "objective": objective, "penalty": penalty, "units": "1"})
    _on_interrupt(lambda: f"{out_file} was not written")
    path = render_unit(config, layer, unit, neuron, out_file)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@_handle_errors
def site(out):
    """Re-write pages and rebuild the site from stored results (no optimization); after a
    `--shard` build, assemble its pages once every shard has finished."""
    from .pipeline import rebuild_site

    _on_interrupt(lambda: f"the site in {out}/site is the one before this command (it is swapped in whole); "
                          "run the same command again")
    report = rebuild_site(out)
    click.echo(f"wrote {report.pages} pages{_site_summary(report)}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--address", default="127.0.0.1:8000", show_default=True)
@_handle_errors
def serve(out, address):
    """Browse the report locally (mkdocs serve)."""
    from .site import serve_site

    serve_site(out, address, announce=lambda text: click.echo(text, err=True))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("report"), show_default=True)
@click.option("--remote", default="origin", show_default=True, help="git remote to push the gh-pages branch to.")
@click.option("--workflow", is_flag=True, help="Instead, write a GitHub Actions workflow that publishes on push.")
@click.option("--branch", default="main", show_default=True, help="With --workflow: the branch whose pushes publish.")
@_handle_errors
def deploy(out, remote, workflow, branch):
    """Publish the site to the gh-pages branch of the git repository you are in."""
    from .site import deploy_site, write_workflow

    if workflow:
        path = write_workflow(out, branch)
        click.echo(f"wrote {path}; commit it with {out}/ (mkdocs.yml and docs/), then set "
                   "Settings -> Pages -> Source to 'GitHub Actions'")
        return
    deploy_site(out, remote=remote)
    click.echo(f"published {out}/site to the gh-pages branch of {remote}")
