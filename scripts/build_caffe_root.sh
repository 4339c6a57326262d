#!/bin/sh
# Build the Debian bullseye root that holds real Caffe 1.0 (CPU) and pycaffe.
#
#   scripts/build_caffe_root.sh            (or: make caffe)
#
# Installs the [requested] packages of caffe-packages.txt with debootstrap (about
# 1.5 min, about 1 GB) into $DEEPYEAST_CAFFE_ROOT (default ~/.cache/deepyeast/caffe-root)
# and checks that the root holds exactly the list's [pinned] packages and versions
# (scripts/caffe_packages.sh check), the same check the Dockerfile makes.
# The root is built under a temporary name next to it and renamed at the end, so
# an interrupted build never leaves a half root.  A root built from the same
# package list whose packages still match the pins is reused; another is rebuilt.
# Needs root privileges and debootstrap (apt-get install debootstrap).
# Mirror: $DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Exit status: 0 root ready, 3 this machine cannot build it (not root, no
# debootstrap), anything else the build failed.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
root=${DEEPYEAST_CAFFE_ROOT:-$(python3 "$here/deepyeast/caffe/root.py")}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
list="$here/caffe-packages.txt"
marker=.deepyeast-caffe-packages.txt   # copy of the list the root was built from

if [ ! -r "$list" ]; then
    echo "error: package list $list missing" >&2
    exit 1
fi
packages=$("$here/scripts/caffe_packages.sh" requested | tr -s ' \t\n' ',' | sed -e 's/^,//' -e 's/,$//')
if [ -z "$packages" ]; then
    echo "error: $list names no packages" >&2
    exit 1
fi

if [ -x "$root/usr/bin/caffe" ]; then
    if [ -f "$root/$marker" ] && [ "$(cat "$root/$marker")" != "$packages" ]; then
        echo "Caffe root at $root was built from another package list ($(cat "$root/$marker")); rebuilding"
    elif ! "$here/scripts/caffe_packages.sh" check "$root" >/dev/null; then
        echo "Caffe root at $root differs from the pins of caffe-packages.txt (above); rebuilding"
    else
        echo "Caffe root present at $root (reused; make caffe-clean to rebuild)"
        exit 0
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: building the Caffe root needs root (debootstrap and chroot); run as root, e.g. sudo make caffe" >&2
    exit 3
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "error: debootstrap not found; install it with: apt-get install -y debootstrap" >&2
    exit 3
fi

mkdir -p "$(dirname "$root")"
tmp="$root.partial.$$"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

echo "Building Caffe root (Debian bullseye: $packages) in $root ..."
debootstrap --variant=minbase --include="$packages" bullseye "$tmp" "$mirror"
# Check before the rename that the tool and pycaffe load.
chroot "$tmp" /usr/bin/caffe --version
chroot "$tmp" /usr/bin/python3 -c "import caffe"
chroot "$tmp" /bin/sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/*'
if ! "$here/scripts/caffe_packages.sh" check "$tmp"; then
    rm -rf "$root.unpinned"
    mv "$tmp" "$root.unpinned"
    echo "error: $mirror served other packages than caffe-packages.txt pins (above); the root is" >&2
    echo "  left at $root.unpinned.  Build from a mirror that keeps bullseye's last release" >&2
    echo "  (DEBIAN_MIRROR=...), or accept it deliberately: scripts/caffe_packages.sh lock $root.unpinned," >&2
    echo "  then mv $root.unpinned $root" >&2
    exit 1
fi
printf '%s\n' "$packages" > "$tmp/$marker"
if [ -e "$root" ]; then
    mv "$root" "$root.old.$$"
    mv "$tmp" "$root"
    rm -rf "$root.old.$$"
else
    mv "$tmp" "$root"
fi
trap - EXIT
echo "Caffe root ready at $root"
