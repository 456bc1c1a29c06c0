"""Does a build's peak memory grow with the number of reference images? And are only bad files skipped?

For each count N (default 500 and 2,000) it writes a fresh folder of N distinct photographs (random
crops, flips, colour shifts and noise of scikit-image's bundled photographs; 160-640 px; JPEG, PNG
and WebP; nested folders) plus odd files that must be used (grayscale, 16-bit, RGBA, CMYK TIFF and
JPEG) and bad ones that must be skipped (corrupt, empty, truncated, a decompression bomb, a 2×2 px
image); see ``messy_images.py``. It then runs, in a child process,

    reportgen build --images DIR --out OUT --layers 0,-1 --units 1 --steps 2 --size 64 --no-site -q

(tf_efficientnet_lite0 with its real weights), and reads OUT/manifest.json for the images used and the
files skipped. Renders are tiny on purpose: the reference pass is what is measured.

Peak memory is the child's peak resident set size as the kernel records it (``ru_maxrss``, its
RSS high-water mark, exact rather than sampled), returned by ``os.wait4`` for that child alone; so
runs measured side by side in one process do not mix. Wall time is the child's, from start to exit.
The folders are written before the timer starts.

A fresh build's peak is set by the theoretical receptive fields (canvases up to 8× the input size),
about 1 GB above the reference pass, and would hide the reference pass growing. So each measured
build runs into an OUT whose cache already holds them (keyed by architecture only): an earlier
build with the default photographs (the warm-up, whose own peak is printed too) writes them.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 python benchmarks/references_memory.py [--counts 500,2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from messy_images import write_bad_files, write_odd_files, write_photos

BUILD = ["--layers", "0,-1", "--units", "1", "--steps", "2", "--size", "64", "--no-site", "-q"]


def messy_folder(folder: Path, count: int) -> tuple[list[str], list[str]]:
    """Write ``count`` photographs plus the odd and bad files; returns (names to use, names to skip)."""
    rng = np.random.default_rng(1)
    good = write_photos(folder, count) + [f"odd/{n}" for n in write_odd_files(folder / "odd", rng)]
    bad = [f"odd/{n}" for n in write_bad_files(folder / "odd", rng)]
    return good, bad


def measured_build(images: Path | None, out: Path, log: Path) -> tuple[int, float, float]:
    """Run ``reportgen build`` on ``images`` (None: the default photographs) in a child; returns
    (exit code, wall s, peak RSS MB)."""
    env = {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "NO_MKDOCS_2_WARNING": "1", **os.environ}
    command = [sys.executable, "-m", "reportgen", "build", "--out", str(out), *BUILD]
    command += ["--images", str(images)] if images else []
    with open(log, "wb") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's so far
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, wall, usage.ru_maxrss / 1024  # Linux reports kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="500,2000", help="numbers of photographs, comma-separated")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

    rows, peaks, floors, logs = [], {}, {}, {}
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="reportgen-refs-") as tmp:
            images, out, log = Path(tmp) / "images", Path(tmp) / "out", Path(tmp) / "build.log"
            print(f"writing {count} photographs + odd and bad files ...", file=sys.stderr, flush=True)
            good, bad = messy_folder(images, count)
            print("warm-up build (default photographs) ...", file=sys.stderr, flush=True)
            code, _, floors[count] = measured_build(None, out, log)
            if code != 0:
                sys.exit(f"the warm-up build failed (exit {code}):\n{log.read_text(errors='replace')}")
            print(f"building on {len(good) + len(bad)} files ...", file=sys.stderr, flush=True)
            code, wall, peak = measured_build(images, out, log)
            logs[count] = log.read_text(errors="replace").splitlines()
            if code != 0:
                rows.append(f"| {count} | {len(good)} | build failed (exit {code}) | | | {wall:.0f} | {peak:.0f} |")
                continue
            refs = json.loads((out / "manifest.json").read_text())["models"][0]["references"]
            skipped = sorted(s.split(": ", 1)[0] for s in refs["skipped"])
            exact = "yes" if skipped == sorted(bad) else (
                f"no: also {sorted(set(skipped) - set(bad))}, missing {sorted(set(bad) - set(skipped))}")
            used = refs.get("used", "?")
            peaks[count] = peak
            rows.append(f"| {count} | {len(good)} | {used} | {len(skipped)} | {exact} | {wall:.0f} | {peak:.0f} |")

    print("| photographs | good files (photos + 5 odd) | used | skipped | skipped = the bad files | wall (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if len(peaks) >= 2:
        low, high = min(peaks), max(peaks)
        print(f"\npeak RSS {high}/{low} images: {peaks[high] / peaks[low]:.2f} "
              f"({peaks[high] - peaks[low]:+.0f} MB for {high - low} more images)")
    print(f"(receptive fields cached; a fresh build of the 16 default photographs peaks at "
          f"{max(floors.values()):.0f} MB, set by computing them)")
    for count, lines in logs.items():
        if lines:
            shown = lines if len(lines) <= 12 else lines[:6] + [f"... {len(lines) - 12} more lines ..."] + lines[-6:]
            print(f"\nbuild output with {count} photographs ({len(lines)} lines):\n" + "\n".join(f"    {line}" for line in shown))


if __name__ == "__main__":
    main()
