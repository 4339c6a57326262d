# `make demo`: the whole paper on the built-in synthetic screen, on a 2-core CPU.
# `make reproduce`: the paper's protocol on the real archive (fetch with md5
# checks, the full 195,000-iteration solver on a GPU, the paper's forest grid).
# Both run mk/pipeline.mk; re-running skips finished steps.

# The demo trains with CPU_SOLVER (models/deepyeast/solver_cpu.prototxt) as it is (its schedule is sized
# to the time budget); DEMO_SCHEDULE can override fields of it (FIELD=VALUE ...).
DEMO_SCHEDULE ?=
REPRO_GPU ?= 0
DEMO_BN_ITERS ?= 30
# CellProfiler features (the forest's and the quality filter's input, ~7 ms per cell on 2 cores)
# for a seeded random 6,000 of the 18,000 training cells: all of them would add ~1.5 minutes.
DEMO_CP_TRAIN_CELLS ?= 6000
# the comparison of two screens (issue 20): a synthetic pair of this many proteins, classified with the
# demo's network and compared (RUN/compare/report.html, linked from the report); 0 leaves it out
DEMO_COMPARE_PROTEINS ?= 80
# the model bundle's out-of-distribution class statistics from an even 6,000 of the 18,000 training cells (the
# fp32 net over all of them took 3 of the demo's 23 minutes on a 2-core AMD EPYC); empty: all (up to 20,000)
DEMO_OOD_CELLS ?= 6000
# the demo's run folder (bench/bench_demo.py times a demo in a fresh one, leaving runs/demo alone)
DEMO_RUN ?= runs/demo
REPRO_GRID ?= paper
# t-SNE: the demo's faster settings (a documented deviation), the paper's (scikit-learn's defaults) in reproduce
REPRO_TSNE ?= paper

.PHONY: demo reproduce
demo: deps
	@$(MAKE) --no-print-directory pipeline RUN=$(DEMO_RUN) SCREEN=synthetic SIZE=demo \
		SOLVER=$(CPU_SOLVER) SCHEDULE="$(DEMO_SCHEDULE)" GRID=small PRECISION=bf16 PREDICT_PRECISION=bf16 BN_ITERS=$(DEMO_BN_ITERS) \
		CP_TRAIN_CELLS=$(DEMO_CP_TRAIN_CELLS) COMPARE_PROTEINS=$(DEMO_COMPARE_PROTEINS) \
		OOD_CELLS=$(DEMO_OOD_CELLS)

# ENGINE=caffe trains with real Caffe instead (bin/caffe; CPU only in the Debian root).
# The published archive holds split lists, two class tables and PNG crops only; what else the paper
# used comes from NONCELLS=FILE (non-cells of the validation split), MIXED=FILE (proteins with two
# compartments, their crops beside the table) and CP_FEATURES=DIR (external CellProfiler tables);
# without them those analyses are reported as not run.
reproduce: deps
	@$(MAKE) --no-print-directory pipeline RUN=$(or $(REPRO_RUN),runs/reproduce) SCREEN=archive \
		SOLVER=$(PAPER_SOLVER) GPU="$(REPRO_GPU)" GRID=$(REPRO_GRID) \
		SNAPSHOT_RULE=val_loss SCHEDULE="$(REPRO_SCHEDULE)" ARCHIVE_SRC="$(ARCHIVE_SRC)" ENGINE=$(ENGINE) \
		TSNE=$(REPRO_TSNE)
