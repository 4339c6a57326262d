#!/bin/sh
# Print the pip options that add DeepYeast's package sources to pip's own configuration.
#
#   scripts/pip_sources.sh PYTHON          (used by scripts/install_python_deps.sh and `make lock`)
#
#   WHEELHOUSE=DIR   a folder of wheels (pip --find-links), e.g. the CPU torch wheel on a
#                    machine that cannot reach PyTorch's index, or everything for an offline install
#   TORCH_INDEX=URL  PyTorch's CPU wheel index (default https://download.pytorch.org/whl/cpu),
#                    added as an extra index when it answers within 10 s (pip itself would retry an
#                    unreachable index for every package).  PyPI's Linux torch is the CUDA build
#                    (several GB); the lock pins the CPU build (torch==X+cpu), which only that index
#                    or a wheelhouse has.  TORCH_INDEX= (empty) leaves it out.
# A note on stderr says when the index is left out.  Paths with spaces are not supported.
set -eu

py=${1:?usage: $0 PYTHON}
torch_index=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
out=""
if [ -n "${WHEELHOUSE:-}" ]; then
    if [ ! -d "$WHEELHOUSE" ]; then
        echo "error: WHEELHOUSE=$WHEELHOUSE is not a folder" >&2
        exit 2
    fi
    out="--find-links $(cd "$WHEELHOUSE" && pwd)"
fi
if [ -n "$torch_index" ]; then
    if "$py" - "$torch_index" <<'PYEOF' 2>/dev/null
import os, ssl, sys, urllib.request
context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10, context=context).close()
PYEOF
    then
        out="$out --extra-index-url $torch_index"
    else
        echo "note: $torch_index does not answer here; torch comes from pip's configured sources or WHEELHOUSE" >&2
    fi
fi
echo $out
