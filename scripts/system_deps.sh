#!/bin/sh
# Check, and install where missing, what DeepYeast needs outside Python (system-packages.txt).
#
#   scripts/system_deps.sh [--optional] GROUP...
#
# For every line of system-packages.txt in one of the GROUPs, its COMMAND tells whether
# what the package provides is already here (from Debian, conda, a module system ...).
# Missing ones are installed with apt-get when this runs as root on Debian; otherwise
# they are named with the command that would install them and the script exits 1
# (with --optional: 0, after a warning; the tests that need them skip with a reason).
# SKIP_SYSTEM=1: do nothing.  PYTHON_BOOT: the python3 that makes the venv (default python3).
# SYSTEM_PACKAGES: another list than system-packages.txt.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
list=${SYSTEM_PACKAGES:-$here/system-packages.txt}
optional=0
if [ "${1:-}" = --optional ]; then
    optional=1
    shift
fi
if [ $# = 0 ]; then
    echo "usage: $0 [--optional] GROUP..." >&2
    exit 2
fi
if [ "${SKIP_SYSTEM:-0}" = 1 ]; then
    echo "SKIP_SYSTEM=1: not checking system packages ($*)"
    exit 0
fi
PYTHON_BOOT=${PYTHON_BOOT:-python3}
export PYTHON_BOOT

in_groups() {
    for g in "$@"; do [ "$g" = "$group" ] && return 0; done
    return 1
}

missing() {
    # the packages of the groups whose command fails
    sed -e 's/^[[:space:]]*#.*//' "$list" | while read -r pkg group check; do
        [ -n "$pkg" ] || continue
        in_groups "$@" || continue
        sh -c "$check" >/dev/null 2>&1 </dev/null || echo "$pkg"
    done
}

need=$(missing "$@" | tr '\n' ' ' | sed -e 's/ *$//')
[ -z "$need" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
    echo "installing Debian packages ($*): $need"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    still=$(missing "$@" | tr '\n' ' ' | sed -e 's/ *$//')
    [ -z "$still" ] && exit 0
    echo "error: installed, but still not working: $still (see system-packages.txt for the check)" >&2
    exit 1
fi

how="install them (Debian: apt-get install $need), make them available another way (conda, module load), or run with SKIP_SYSTEM=1"
if [ $optional = 1 ]; then
    echo "warning: not found ($*): $need; the tests that need them will be skipped; $how" >&2
    exit 0
fi
echo "error: not found ($*): $need; $how" >&2
exit 1
