#!/usr/bin/env bash
# The GPU check of issue 15, in one command that installs nothing (no network is needed):
# parity tests on the device, 2,000 iterations of the paper's schedule projected to 195,000,
# inference cells/s and GPU-resident data loading, written into bench/RESULTS.md after each stage.
#
#   bench/gpu_check.sh                       # on a CUDA machine, from anywhere in the checkout
#   bench/gpu_check.sh --device cpu --iterations 3 --batch 8 --train-cells 300 --val-cells 200 \
#       --test-iter 2 --infer-batch 8 --results /tmp/r.md    # the CPU dry run CI makes
#
# Python: $PYTHON, else the checkout's .venv, else python3; it needs torch (CUDA build), numpy,
# lmdb, protobuf and pytest already installed.  Options: bench/bench_gpu.py --help.
# Budget: about 3-6 minutes on one H100/H200 (parity ~1 min, LMDBs ~1 min, 3 x 2,000 iterations,
# inference); every timed loop stops at --stage-seconds (default 120).
set -u
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["torch", "numpy", "lmdb", "google.protobuf", "pytest"]
print(" ".join(m for m in need if importlib.util.find_spec(m.split(".")[0]) is None))
PYEOF
) || { echo "gpu_check: cannot run $PY" >&2; exit 2; }
if [ -n "$missing" ]; then
  echo "gpu_check: $PY lacks: $missing (this script installs nothing; set PYTHON to an interpreter that has them)" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/bench_gpu.py "$@"
