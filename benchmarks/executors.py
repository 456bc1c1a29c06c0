"""What Ray costs: the same build with ``--executor local`` and ``--executor ray``, side by side.

Runs the default build (tf_efficientnet_lite0, real weights, quick preset; pass build flags to change
it) into fresh folders, alternating executors over ``--reps`` repetitions so that background load
hits both alike, and prints wall time per executor with its stages and the ratio ray / local.
The Ray runs start a local cluster (``ray.init``) inside the timed build, as a user's first
``reportgen build --executor ray`` on one machine does; the cluster's start is also printed alone.
With no GPU the cluster has one worker per two CPUs, here one, so this measures Ray's overhead,
not a speed-up. Then the projection for N GPUs that docs/distributed.md explains.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/executors.py [--reps 1] [build flags...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline import flags_from  # noqa: E402  (benchmarks/pipeline.py: the CLI's own parser)

from reportgen.config import resolve_build_config  # noqa: E402
from reportgen.pipeline import build  # noqa: E402


def timed_build(flags: dict, executor: str) -> tuple[float, dict, int]:
    with tempfile.TemporaryDirectory() as tmp:
        config = resolve_build_config({**flags, "executor": executor, "out": Path(tmp) / "report"})
        started = time.perf_counter()
        report = build(config)
        seconds = time.perf_counter() - started
        if report.exit_code:
            raise SystemExit(f"{executor} build failed: {report.failed[:3]}")
        return seconds, report.timings, report.rendered


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    args, build_argv = parser.parse_known_args()
    flags = flags_from(build_argv)

    import ray

    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    cluster_start = time.perf_counter() - started
    ray.shutdown()

    walls = {"local": [], "ray": []}
    stages = {}
    rendered = 0
    for rep in range(args.reps):
        for executor in ("local", "ray"):
            seconds, timings, rendered = timed_build(flags, executor)
            walls[executor].append(seconds)
            stages[executor] = timings
            print(f"[rep {rep + 1}/{args.reps}] {executor}: {seconds:.1f} s", flush=True)

    print(f"\n{rendered} renders per build; {args.reps} alternating repetition(s); local Ray cluster start alone: "
          f"{cluster_start:.1f} s")
    print("| executor | wall (s, median) | load | analysis | render | pages | mkdocs |")
    print("|---|---|---|---|---|---|---|")
    for executor, seconds in walls.items():
        t = stages[executor]
        print(f"| {executor} | {statistics.median(seconds):.1f} | {t.get('load', 0):.1f} | {t.get('analysis', 0):.1f} | "
              f"{t.get('render', 0):.1f} | {t.get('pages', 0):.1f} | {t.get('mkdocs', 0):.1f} |")
    local, remote = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"\nray / local wall time: {remote / local:.3f} ({remote - local:+.1f} s)")

    ray_stages = stages["ray"]
    serial = sum(ray_stages.get(k, 0) for k in ("load", "analysis", "pages", "mkdocs"))
    fixed = max(0.0, remote - serial - ray_stages["render"])  # cluster start, actor start, the model sent
    print(f"\nProjection for N workers (one per GPU), same build: wall = serial part (load, analysis, pages, "
          f"site: {serial:.1f} s) + Ray's fixed cost ({fixed:.1f} s) + the Ray run's render time "
          f"({ray_stages['render']:.1f} s) / N, i.e. jobs spread evenly (true while they far outnumber the workers):")
    print("| workers | projected wall (s) | speed-up vs 1 worker | speed-up vs local |")
    print("|---|---|---|---|")
    for n in (1, 2, 4, 8, 16):
        wall = serial + fixed + ray_stages["render"] / n
        print(f"| {n} | {wall:.0f} | {remote / wall:.1f} | {local / wall:.1f} |")


if __name__ == "__main__":
    main()
