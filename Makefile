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

.PHONY: all deps test test-fast demo reproduce caffe proto clean-demo help
all: help

help:
	@echo "make demo       run the whole analysis on the synthetic screen (runs/demo/report.html)"
	@echo "make test       install what is needed and run the test suite"
	@echo "make caffe      build the Debian bullseye root with real Caffe 1.0 (~1.5 min, ~1 GB)"
	@echo "make reproduce  the paper's protocol on the real archive (needs internet and a GPU)"

# ---------------------------------------------------------------- installation
SYSTEM_STAMP := $(VENV)/.system-packages
PY_STAMP := $(VENV)/.requirements

$(SYSTEM_STAMP): system-packages.txt
	@pkgs=$$(grep -v '^#' system-packages.txt | tr '\n' ' '); \
	missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install them): $$missing"; exit 1; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(PY_STAMP): requirements.txt pyproject.toml $(SYSTEM_STAMP)
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

deps: $(PY_STAMP)

proto: deepyeast/caffe/caffe_pb2.py
deepyeast/caffe/caffe_pb2.py: deepyeast/caffe/proto/caffe.proto
	$(PY) -m pip install -q grpcio-tools==1.85.1
	$(PY) -m grpc_tools.protoc -Ideepyeast/caffe/proto --python_out=deepyeast/caffe deepyeast/caffe/proto/caffe.proto

# ---------------------------------------------------------------- tests
# Real-Caffe tests need the Caffe root; `caffe` builds it when debootstrap can run
# and is a no-op when the root is already there.
test: deps caffe-optional
	$(VENV)/bin/pytest -q

test-fast: deps
	$(VENV)/bin/pytest -q -m "not slow and not caffe"

-include mk/*.mk
