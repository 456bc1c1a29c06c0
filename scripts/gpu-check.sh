#!/usr/bin/env bash
# The GPU check: the CUDA tests, then timed standard-preset builds (benchmarks/gpu.py: renders a
# second and peak GPU memory for tf_efficientnet_lite0 with its real weights and for inception_v3
# with random weights, all 16 layers x 32 units). About ten minutes on one GPU; on a machine
# without CUDA it says so and exits 0. Run from the repository root after
# `pip install -e '.[test]'`; PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: skipped, no CUDA GPU here (torch.cuda.is_available() is false)"
  exit 0
fi
"$py" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, torch {torch.__version__}")'
"$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_devices.py
"$py" benchmarks/gpu.py "$@"
