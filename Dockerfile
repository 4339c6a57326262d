# DeepYeast with real Caffe 1.0 (CPU) for exact reproduction.
#
#   docker build -t deepyeast .
#   docker run --rm -it deepyeast make test        # or: make demo, bin/caffe train -solver ...
#
# Equivalent to what `make caffe` + `make deps` set up on a Debian host: Caffe
# and pycaffe come from the same package list (caffe-packages.txt, which
# scripts/build_caffe_root.sh debootstraps into ~/.cache/deepyeast/caffe-root),
# here installed on the image's own system.  DEEPYEAST_CAFFE_ROOT=/ tells
# bin/caffe, bin/caffe-python and deepyeast.caffe_root to run that system Caffe
# directly (no chroot).  The project's Python side (requirements.txt, Python
# 3.11) lives in /opt/deepyeast/.venv.  CI has no Docker engine, so this file is
# not built there; keep it in step with caffe-packages.txt and system-packages.txt.
FROM debian:bullseye

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    DEEPYEAST_CAFFE_ROOT=/ \
    PYTHONUNBUFFERED=1

WORKDIR /opt/deepyeast
COPY caffe-packages.txt system-packages.txt ./

# Real Caffe 1.0 + pycaffe (python3.9): exactly the list the debootstrap root gets.
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(sed -e 's/#.*//' caffe-packages.txt) \
 && caffe --version && python3 -c "import caffe" \
 && rm -rf /var/lib/apt/lists/*

# The project's system packages (R, randomForest, ...); debootstrap is not needed
# here because Caffe is installed directly.  Plus make, a compiler, and pip for uv.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make ca-certificates build-essential python3-pip \
      $(sed -e 's/#.*//' system-packages.txt | grep -v -x -e debootstrap -e '') \
 && rm -rf /var/lib/apt/lists/*

# requirements.txt pins wheels for Python 3.11, which bullseye lacks: uv fetches a
# standalone CPython 3.11 for the project venv (Caffe keeps the system's 3.9).
RUN python3 -m pip install --no-cache-dir uv \
 && uv python install 3.11 \
 && uv venv --python 3.11 /opt/deepyeast/.venv

COPY requirements.txt pyproject.toml ./
RUN uv pip install --python /opt/deepyeast/.venv/bin/python --no-cache -r requirements.txt \
      --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match

COPY . .
RUN uv pip install --python /opt/deepyeast/.venv/bin/python --no-cache --no-deps -e . \
 && mkdir -p .venv && touch .venv/.system-packages .venv/.requirements \
 && bin/caffe --version

ENV PATH=/opt/deepyeast/.venv/bin:$PATH
CMD ["make", "help"]
