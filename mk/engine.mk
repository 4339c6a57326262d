# Engine targets (issue 3), included by the top-level Makefile.
#   make train SOLVER=models/deepyeast/solver_cpu.prototxt   train with our engine; re-running resumes
#                                                          from the newest {snapshot_prefix}_iter_N.solverstate
#   make bench-engine                                      FLOPs, the machine's limit (GEMMs, ISA peak), ours (fp32,
#                                                          bf16) vs real `caffe time` -> bench/RESULTS.md
#                                                          (BENCH_ENGINE_FLAGS=--quick: a few minutes, no Caffe)
#   make bench-screen                                      a whole screen micrograph -> call, profiled -> bench/RESULTS.md
#   make gpu-check                                         bench/gpu_check.sh on a CUDA machine (installs nothing)
#   make test-engine                                       the solver / CLI / resume / DDP / parity tests
.PHONY: train bench-engine bench-screen gpu-check test-engine
train: deps
	$(PY) -m deepyeast train -solver $(SOLVER) -snapshot auto

bench-engine: deps
	$(PY) bench/bench_engine.py $(BENCH_ENGINE_FLAGS)

bench-screen: deps
	$(PY) bench/bench_screen.py

gpu-check:
	bench/gpu_check.sh

test-engine: deps
	$(VENV)/bin/pytest -q tests/test_lr_policy.py tests/test_solver.py tests/test_cli.py tests/test_resume.py \
	  tests/test_ddp.py tests/test_solver_parity.py
