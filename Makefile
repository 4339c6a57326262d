# DeepYeast pipeline.  `make demo` runs the whole paper on the built-in synthetic
# screen; `make test` runs the test suite.  Both install what they need first.
# Steps are file targets: a step re-runs only when its inputs change.

SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
# the Caffe root's location: $DEEPYEAST_CAFFE_ROOT, else deepyeast/caffe/root.py's default
export DEEPYEAST_CAFFE_ROOT := $(shell $(PYTHON_BOOT) deepyeast/caffe/root.py)
# the model-zoo solvers: the paper's schedule and the short CPU schedule (the demo's, and the default)
PAPER_SOLVER := models/deepyeast/solver.prototxt
CPU_SOLVER := models/deepyeast/solver_cpu.prototxt
SOLVER ?= $(CPU_SOLVER)

.PHONY: all deps lock test test-fast test-system demo reproduce classify caffe proto clean-demo help
all: help

help:
	@echo "make demo       run the whole analysis on the synthetic screen (runs/demo/report.html)"
	@echo "make test       install what is needed and run the test suite"
	@echo "make caffe      build the Debian bullseye root with real Caffe 1.0 (~1.5 min, ~1 GB)"
	@echo "make docker     build the Docker image (docker, else podman/buildah; see mk/docker.mk)"
	@echo "make reproduce  the paper's protocol on the real archive (needs internet and a GPU)"
	@echo "make classify MODEL=RUN/model IMAGES=images.csv OUT=DIR   per-protein calls for a new screen"
	@echo "make docs       build the documentation site into site/ (mkdocs)"

# ---------------------------------------------------------------- installation
# `make deps` makes sure what the pipeline needs is here, installing only what is missing:
#   system  R with randomForest, R's headers, python3-venv (system-packages.txt, group demo),
#           each looked for by what it does (R from conda or a module system counts); what is
#           missing is installed with apt-get where that can be done (root on Debian), else
#           named.  SKIP_SYSTEM=1 skips the step.  (scripts/system_deps.sh)
#   python  $(VENV) from requirements.txt, the hash-checked lock (scripts/install_python_deps.sh:
#           PIP_INSTALL=lock|ranges|none; scripts/pip_sources.sh: WHEELHOUSE=DIR of wheels, TORCH_INDEX
#           for PyTorch's CPU wheels).
# Another environment: VENV=DIR, e.g. `make demo VENV=$$CONDA_PREFIX PIP_INSTALL=none SKIP_SYSTEM=1`.
# `make lock` regenerates requirements.txt from pyproject.toml's ranges (pip-compile, with hashes;
# versions already in the lock are kept unless LOCK_FLAGS=--upgrade).
SKIP_SYSTEM ?= 0
export SKIP_SYSTEM PYTHON_BOOT
SYSTEM_STAMP := $(VENV)/.system-packages
PY_STAMP := $(VENV)/.requirements
PIP_TOOLS := pip-tools==7.6.2
LOCK_VENV := .venv-lock
LOCK_FLAGS ?=

$(SYSTEM_STAMP): system-packages.txt
	@scripts/system_deps.sh demo
	@mkdir -p $(VENV) && touch $@

$(PY_STAMP): requirements.txt pyproject.toml $(if $(filter 1,$(SKIP_SYSTEM)),,$(SYSTEM_STAMP))
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@scripts/install_python_deps.sh $(PY)
	@touch $@

deps: $(PY_STAMP)

lock:
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON_BOOT) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q $(PIP_TOOLS); }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --extra tests --extra r --extra napari --extra docs --no-strip-extras \
		--no-emit-find-links --no-emit-index-url \
		$$(scripts/pip_sources.sh $(LOCK_VENV)/bin/python) \
		$(LOCK_FLAGS) --output-file requirements.txt pyproject.toml

proto: deepyeast/caffe/caffe_pb2.py
deepyeast/caffe/caffe_pb2.py: deepyeast/caffe/proto/caffe.proto
	$(PY) -m pip install -q grpcio-tools==1.85.1
	$(PY) -m grpc_tools.protoc -Ideepyeast/caffe/proto --python_out=deepyeast/caffe deepyeast/caffe/proto/caffe.proto

# ---------------------------------------------------------------- tests
# Real-Caffe tests need the Caffe root; `caffe` builds it when debootstrap can run
# and is a no-op when the root is already there.
# The browser test and the image build test need more system packages (system-packages.txt,
# groups test and docker): installed here when root on Debian, else their tests skip.
test: deps test-system caffe-optional
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

test-system:
	@scripts/system_deps.sh --optional test docker

test-fast: deps
	$(VENV)/bin/pytest -q -m "not slow and not caffe"

-include mk/*.mk
