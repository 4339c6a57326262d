#!/bin/sh
# Install DeepYeast's Python dependencies into the environment of PYTHON, then the checkout itself.
#
#   scripts/install_python_deps.sh PYTHON          (make deps runs it for .venv/bin/python)
#
# PIP_INSTALL chooses what goes in (default auto: lock where it applies, else ranges):
#   lock    requirements.txt, the lock: the exact versions the tests ran with, every file
#           hash-checked (pip --require-hashes).  Written for CPython 3.11 on Linux x86-64
#           (the Docker image, a Debian bookworm host); regenerate it with `make lock`.
#   ranges  the ranges of pyproject.toml with the tests and r extras (other Pythons, platforms)
#   none    install nothing: check that PYTHON's environment (a conda environment, a module
#           system's Python) already satisfies pyproject.toml (scripts/check_python_deps.py)
# Where packages come from besides pip's own configuration: WHEELHOUSE=DIR and TORCH_INDEX
# (PyTorch's CPU wheels), see scripts/pip_sources.sh.
# Last, the checkout is installed in editable mode without dependencies (the `deepyeast` command).
set -eu

if [ $# != 1 ]; then
    echo "usage: $0 PYTHON" >&2
    exit 2
fi
py=$1
here=$(cd "$(dirname "$0")/.." && pwd)
mode=${PIP_INSTALL:-auto}

if [ "$mode" = auto ]; then
    if "$py" -c 'import platform, sys; sys.exit(not (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11) and platform.system() == "Linux" and platform.machine() == "x86_64"))'; then
        mode=lock
    else
        mode=ranges
    fi
fi

sources=""
if [ "$mode" != none ]; then sources=$("$here/scripts/pip_sources.sh" "$py"); fi
# shellcheck disable=SC2086
set -- $sources

case $mode in
lock)
    echo "installing the lock (requirements.txt, hash-checked) into $py"
    "$py" -m pip install -q --require-hashes -r "$here/requirements.txt" "$@"
    # the build backend is the lock's setuptools, already installed
    "$py" -m pip install -q --no-deps --no-build-isolation -e "$here"
    ;;
ranges)
    echo "installing pyproject.toml's ranges (not the lock: $py is not CPython 3.11 on Linux x86-64, or PIP_INSTALL=ranges)"
    "$py" -m pip install -q "$@" -e "$here[tests,r,napari,docs]"
    ;;
none)
    "$py" "$here/scripts/check_python_deps.py" tests r
    "$py" -m pip install -q --no-deps --no-build-isolation -e "$here"
    ;;
*)
    echo "error: PIP_INSTALL=$mode: use lock, ranges, none or auto" >&2
    exit 2
    ;;
esac
