#!/bin/sh
# Read and check caffe-packages.txt, the one list of the Debian bullseye packages of real Caffe.
#
#   scripts/caffe_packages.sh requested      names of the [requested] packages, one a line
#   scripts/caffe_packages.sh pins           every pinned package as NAME=VERSION (apt-get syntax)
#   scripts/caffe_packages.sh check ROOT     exit 0 when the root file system ROOT holds exactly
#                                            the pinned packages at the pinned versions; else one
#                                            line per difference on stderr and exit 1
#   scripts/caffe_packages.sh lock ROOT      rewrite the list's pins from ROOT's dpkg status (after
#                                            a deliberate change of the requested packages)
#
# The list has two sections: [requested] names what Caffe needs (installed with its
# dependencies); [pinned] holds every package of the resulting root (the minbase system
# included), each at the version it was built with.  scripts/build_caffe_root.sh
# (make caffe) and the Dockerfile both install from it and both run `check`, so the
# host's Caffe root and the image's cannot differ by a single package.
# The list's path: $CAFFE_PACKAGES (default: caffe-packages.txt next to this folder).
set -eu

list=${CAFFE_PACKAGES:-$(cd "$(dirname "$0")/.." && pwd)/caffe-packages.txt}

section() {
    # the NAME=VERSION (or NAME) lines of section $1, comments and blanks dropped
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | awk -v want="[$1]" '
        /^\[.*\]$/ { inside = ($0 == want); next }
        inside && NF { print }'
}

installed() {
    # NAME=VERSION of every package installed in root $1, read from its dpkg status file
    # (plain awk, so this runs where dpkg-query does not)
    awk '
        /^Package: / { name = $2 }
        /^Status: / { ok = ($0 == "Status: install ok installed") }
        /^Version: / { ver = $2 }
        /^$/ { if (ok && name != "") print name "=" ver; name = ""; ok = 0; ver = "" }
        END { if (ok && name != "") print name "=" ver }' "$1/var/lib/dpkg/status" | LC_ALL=C sort
}

need_root_arg() {
    if [ $# -lt 1 ] || [ ! -d "$1/var/lib/dpkg" ]; then
        echo "error: ${1:-ROOT} is not a Debian root file system (no var/lib/dpkg)" >&2
        exit 2
    fi
}

if [ ! -r "$list" ]; then
    echo "error: package list $list missing" >&2
    exit 2
fi

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
requested)
    section requested | sed -e 's/=.*//'
    ;;
pins)
    section pinned
    ;;
check)
    need_root_arg "$@"
    if [ -z "$(section pinned)" ]; then
        echo "error: $list has no [pinned] section" >&2
        exit 2
    fi
    have=$(mktemp)
    trap 'rm -f "$have"' EXIT
    installed "$1" > "$have"
    # awk reads the root's packages first, then the pins
    section pinned | awk -v root="$1" '
        function parse(line) { name = line; sub(/=.*/, "", name); ver = substr(line, length(name) + 2) }
        NR == FNR { parse($0); have[name] = ver; next }
        {
            parse($0); n++; listed[name] = 1
            if (!(name in have)) { print "caffe-packages.txt pins " $0 "; " root " lacks " name > "/dev/stderr"; bad = 1 }
            else if (have[name] != ver) {
                print "caffe-packages.txt pins " $0 "; " root " has " name "=" have[name] > "/dev/stderr"; bad = 1 }
        }
        END {
            for (name in have) if (!(name in listed)) {
                print root " has " name "=" have[name] ", which caffe-packages.txt does not list" > "/dev/stderr"; bad = 1 }
            if (bad) exit 1
            printf "%s: exactly the %d packages of caffe-packages.txt, at their pinned versions\n", root, n
        }' "$have" -
    ;;
lock)
    need_root_arg "$@"
    tmp=$list.tmp.$$
    trap 'rm -f "$tmp"' EXIT
    have=$(installed "$1")
    {
        # everything up to and including the [pinned] header stays as written
        awk '{ print } /^\[pinned\]/ { exit }' "$list"
        echo "$have"
    } > "$tmp"
    grep -q '^\[pinned\]' "$tmp" || { echo "error: $list has no [pinned] section" >&2; exit 2; }
    for name in $(section requested | sed -e 's/=.*//'); do
        echo "$have" | grep -q "^$name=" || { echo "error: $1 lacks requested package $name" >&2; exit 1; }
    done
    mv "$tmp" "$list"
    trap - EXIT
    echo "pinned $(echo "$have" | wc -l | tr -d ' ') packages of $1 in $list"
    ;;
*)
    echo "usage: $0 requested | pins | check ROOT | lock ROOT" >&2
    exit 2
    ;;
esac
