# DeepYeast with real Caffe 1.0 (CPU), for reproduction: exact on the same CPU type (another CPU type trains
# another network; docs/results.md, "On another CPU, and over seeds").
#
#   make docker                          (docker, else podman/buildah; see mk/docker.mk)
#   docker run --rm -v "$PWD/runs:/opt/deepyeast/runs" deepyeast make demo
#   docker run --rm deepyeast bin/caffe --version
#
# Two Debian systems, as on a host set up by `make deps` and `make caffe`:
#  - the image itself is Debian bookworm: Python 3.11 with the project's venv
#    (/opt/deepyeast/.venv, from the hash-checked lock requirements.txt) and R 4.2 with
#    randomForest (system-packages.txt, group demo);
#  - real Caffe 1.0 and pycaffe (Python 3.9) live in a Debian bullseye root at
#    /opt/caffe-root: exactly the packages and versions of caffe-packages.txt (checked),
#    the list scripts/build_caffe_root.sh builds the host's root from.
# bin/caffe, bin/caffe-python and deepyeast.caffe.root run the root's programs through
# the root's own dynamic loader and libraries (DEEPYEAST_CAFFE_EXEC=loader): no chroot,
# no mounts, so real Caffe works under a plain `docker run` (no --privileged, no added
# capabilities).
#
# Build inputs besides Debian's and PyPI's packages, both optional:
#   --build-context wheelhouse=DIR   wheels for pip --find-links (e.g. the CPU torch wheel
#                                    where PyTorch's index cannot be reached)
#   --secret id=ca,src=FILE          a CA bundle for pip (machines whose TLS is intercepted)

# ------------------------------------------------------------------ the Caffe root
FROM debian:bullseye AS caffe-root
COPY caffe-packages.txt /tmp/deepyeast/
COPY scripts/caffe_packages.sh /tmp/deepyeast/scripts/
# Every package of the list at its pinned version (--allow-downgrades: a base image with
# newer security updates is brought back to the pins), then the same check as make caffe.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades \
      $(/tmp/deepyeast/scripts/caffe_packages.sh pins) >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && /tmp/deepyeast/scripts/caffe_packages.sh check / \
 && caffe --version && python3 -c "import caffe" \
 && rm -rf /tmp/deepyeast

# Optional local wheels (replaced by --build-context wheelhouse=DIR).
FROM scratch AS wheelhouse

# ------------------------------------------------------------------ the image
FROM debian:bookworm
# SKIP_SYSTEM=1: the image's system packages are fixed here; make deps/test do not apt-get.
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    SKIP_SYSTEM=1 \
    DEEPYEAST_CAFFE_ROOT=/opt/caffe-root \
    DEEPYEAST_CAFFE_EXEC=loader

WORKDIR /opt/deepyeast
# System packages: the group `demo` of system-packages.txt, plus make.
COPY system-packages.txt ./
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends make python3 \
      $(awk '!/^#/ && $2 == "demo" { print $1 }' system-packages.txt) >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# The Caffe root (after the system packages, so a builder running stages in parallel
# installs both at once).
COPY --from=caffe-root / /opt/caffe-root/

# Python packages: the lock, hash-checked (this layer depends on the lock alone).
COPY requirements.txt ./
COPY scripts/pip_sources.sh scripts/
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && if [ -n "$(ls -A /wheelhouse)" ]; then export WHEELHOUSE=/wheelhouse; fi \
 && python3 -m venv .venv \
 && .venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check --require-hashes \
      -r requirements.txt $(scripts/pip_sources.sh .venv/bin/python)

# The checkout; `make deps` finds everything installed (its stamps are set here).
COPY . .
RUN .venv/bin/python -m pip install -q --no-cache-dir --no-deps --no-build-isolation -e . \
 && touch .venv/.system-packages .venv/.requirements \
 && scripts/caffe_packages.sh check /opt/caffe-root \
 && bin/caffe --version

ENV PATH=/opt/deepyeast/.venv/bin:$PATH
CMD ["make", "help"]
