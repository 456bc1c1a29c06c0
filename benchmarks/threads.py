"""Threads and OpenMP wait policy on a quiet and on a loaded machine: what reportgen should default to.

Runs one build as a fresh process (``pipeline.build``, as ``reportgen build`` does without the
command line's own default policy: 8 units of tf_efficientnet_lite0's blocks.3.1, 64 steps, no
extras and no site, by default) under every combination of

- load: none, or ``--hogs`` processes that keep one core busy each (another user's job);
- the OpenMP environment (``--policies``): unset (libgomp spins a while before it sleeps),
  ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once when they wait), or a shorter spin
  (``GOMP_SPINCOUNT=N``);
- threads: 1 or every core (torch's thread count);

alternating the combinations over ``--reps`` rounds, and prints the median wall time of each.

    python benchmarks/threads.py [--reps 3] [--hogs 2] [--policies unset,OMP_WAIT_POLICY=PASSIVE]
        [--flags '{"model": ["test_resnet"], ...}']
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT = {"layers": "blocks.3.1", "units": "8", "steps": 64, "neurons": "0", "variants": "0", "classes": 0,
           "dreams": 0, "site": False}
CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from reportgen.config import resolve_build_config
from reportgen.pipeline import build
build(resolve_build_config({**json.loads(sys.argv[2]), "out": sys.argv[3]}))
"""


def hog(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def run(flags: str, policy: str, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    if policy != "unset":
        name, _, value = policy.partition("=")
        env[name] = value
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD, str(threads), flags, f"{tmp}/report"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--flags", default=json.dumps(DEFAULT), help="the build's settings, as JSON")
    parser.add_argument("--policies", default="unset,OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--threads", default=None, help="comma list (default: 1 and every core)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})
    combos = list(itertools.product(("quiet", "loaded"), args.policies.split(","), threads))
    times: dict[tuple, list[float]] = {combo: [] for combo in combos}
    for rep in range(args.reps):
        for load in ("quiet", "loaded"):
            stop = multiprocessing.Event()
            hogs = [multiprocessing.Process(target=hog, args=(stop,)) for _ in range(args.hogs if load == "loaded" else 0)]
            for process in hogs:
                process.start()
            try:
                for combo in [c for c in combos if c[0] == load]:
                    times[combo].append(run(args.flags, combo[1], combo[2]))
                    print(f"[{rep + 1}/{args.reps}] {combo}: {times[combo][-1]:.1f} s", file=sys.stderr, flush=True)
            finally:
                stop.set()
                for process in hogs:
                    process.join()
    print(f"build {args.flags}, {cores} cores, {args.hogs} busy processes when loaded, "
          f"median of {args.reps}")
    print("| machine | OpenMP environment | threads | wall (s) | vs best on this machine |")
    print("|---|---|---|---|---|")
    for load in ("quiet", "loaded"):
        best = min(statistics.median(times[c]) for c in combos if c[0] == load)
        for combo in [c for c in combos if c[0] == load]:
            median = statistics.median(times[combo])
            print(f"| {load} | {combo[1]} | {combo[2]} | {median:.1f} | {median / best:.2f} |")


if __name__ == "__main__":
    main()
