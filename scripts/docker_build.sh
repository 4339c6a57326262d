#!/bin/sh
# Build the Docker image (Dockerfile) with whatever builds images here.   (make docker)
#
#   scripts/docker_build.sh [EXTRA BUILD FLAGS...]
#
# Engine ($DOCKER_ENGINE, default: docker where a Docker engine answers `docker info`, else
# podman, else buildah; as root on Debian, podman and buildah are installed when none is
# there).  Podman and buildah build with --isolation chroot (BUILD_ISOLATION), which works
# where their OCI runtime cannot start containers (some VMs), --network host, and
# --jobs 2 (BUILD_JOBS: the Caffe root and the image's system packages at once).
# The base images debian:bookworm and debian:bullseye are made first where no registry
# answers (scripts/docker_base.sh: debootstrap + import, Debian packages only).
# Optional inputs, neither of which ends up in the image:
#   WHEELHOUSE=DIR   wheels for the build's pip (--build-context wheelhouse=DIR); default: the
#                    folder pip's configuration on this machine takes wheels from (find-links)
#   CA_BUNDLE=FILE   a CA bundle for the build's pip (--secret id=ca,src=FILE), for machines
#                    whose TLS is intercepted; default: the cert pip's configuration names
# IMAGE (default deepyeast) is the name.  Prints the build time and the image size.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-deepyeast}
boot=${PYTHON_BOOT:-python3}

pip_config() {
    # a value from the environment (PIP_X) or pip's configuration (global.x)
    env_name=PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')
    eval "value=\${$env_name:-}"
    if [ -z "$value" ]; then
        value=$("$boot" -m pip config get "global.$1" 2>/dev/null || true)
    fi
    echo "$value"
}

engine=${DOCKER_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null 2>&1; then
        engine=podman
    elif command -v buildah >/dev/null 2>&1; then
        engine=buildah
    else
        "$here/scripts/system_deps.sh" docker
        engine=podman
    fi
fi

case $engine in
docker) base_engine=docker; build="docker build" ;;
podman) base_engine=podman; build="podman build --isolation ${BUILD_ISOLATION:-chroot} --network host --jobs ${BUILD_JOBS:-2}" ;;
buildah)
    # buildah stores images where podman does; docker_base.sh needs podman's import
    command -v podman >/dev/null 2>&1 || "$here/scripts/system_deps.sh" docker
    base_engine=podman; build="buildah build --isolation ${BUILD_ISOLATION:-chroot} --network host --jobs ${BUILD_JOBS:-2}" ;;
*) echo "error: DOCKER_ENGINE=$engine: use docker, podman or buildah" >&2; exit 2 ;;
esac

if ! command -v debootstrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    for suite in bookworm bullseye; do
        if ! "$base_engine" image inspect "docker.io/library/debian:$suite" >/dev/null 2>&1; then
            "$here/scripts/system_deps.sh" docker
            break
        fi
    done
fi
"$here/scripts/docker_base.sh" "$base_engine" bookworm bullseye

set --  "$@"
wheelhouse=${WHEELHOUSE-$(pip_config find-links)}
if [ -n "$wheelhouse" ] && [ -d "$wheelhouse" ]; then
    set -- --build-context "wheelhouse=$wheelhouse" "$@"
fi
ca=${CA_BUNDLE-$(pip_config cert)}
if [ -n "$ca" ] && [ -f "$ca" ]; then
    set -- --secret "id=ca,src=$ca" "$@"
fi

echo "building $image with $engine ($build $* -t $image .)"
start=$(date +%s)
# shellcheck disable=SC2086
$build "$@" -t "$image" -f "$here/Dockerfile" "$here"
end=$(date +%s)
size=$("$base_engine" image inspect --format '{{.Size}}' "$image")
echo "built $image in $((end - start)) s; image size $(echo "$size" | awk '{ printf "%.2f GB", $1 / 1e9 }')"
