# The paper's pipeline as file targets, shared by `make demo` (synthetic screen)
# and `make reproduce` (the real archive).  Every step writes its outputs
# atomically, so a step killed midway leaves nothing that a re-run would take
# for finished; training resumes from its newest .solverstate (-snapshot auto).
# Each analysis writes RUN/<name>/result.json last (its make target); the report
# finds every result.json under RUN, so a new analysis is a rule here and one entry
# in RESULTS, nothing in the report.
#
# Variables (set by demo / reproduce, or on the command line):
#   RUN        run folder (all outputs under it)
#   SCREEN     how the data come: synthetic | archive
#   SIZE       synthetic screen size (tiny, small, demo, paper)
#   SOLVER     model-zoo solver the run's schedule starts from (default: Makefile's CPU_SOLVER)
#   SCHEDULE   schedule overrides, e.g. "max_iter=300 stepsize=100"
#   ENGINE     ours | caffe (real Caffe 1.0 in the Caffe root)
#   GPU        -gpu flag for training (empty: the solver's mode)
#   GRID       random-forest grid: small | paper
#   CP_TRAIN_CELLS  CellProfiler features (so the forest and the quality filter) for a seeded
#              random sample of N training cells (0: all of them)
#   PRECISION  training arithmetic: fp32 (Caffe parity) | bf16 (autocast, faster on CPU)
#   BN_ITERS   batches for recomputing BatchNorm statistics after training (0: keep)
#   SNAPSHOT_RULE  final | val_loss (the snapshot the analyses use)
#   SEED       seed of every step (--seed)
#   JOBS       worker processes of the parallel steps (--jobs)

RUN ?= runs/demo
SCREEN ?= synthetic
SIZE ?= demo
SEED ?= 0
SCHEDULE ?=
ENGINE ?= ours
GPU ?=
GRID ?= small
SNAPSHOT_RULE ?= final
PRECISION ?= fp32
BN_ITERS ?= 0
CP_TRAIN_CELLS ?= 0
JOBS ?= $(shell nproc)
DEPLOY := models/deepyeast/deploy.prototxt

DATA := $(RUN)/data
MAIN := $(DATA)/main
TRANSFER := $(DATA)/transfer
LMDB := $(RUN)/lmdb
TRAIN := $(RUN)/train
FEAT := $(RUN)/features
CP := $(RUN)/cellprofiler
MEAN := $(LMDB)/mean.binaryproto
WEIGHTS := $(TRAIN)/final.caffemodel
SPLITS := train val test
# split lists of the main and the transfer set (names: deepyeast/constants.py, list_file)
LIST = $(MAIN)/HOwt_$(1).txt
TLIST = $(TRANSFER)/HOwt_transfer_$(1).txt

# log each step's command to RUN/commands.txt (the report shows them) and run it
step = @mkdir -p $(RUN) && echo "==> [$$(date +%H:%M:%S)] $(1)" && echo '$(2)' >> $(RUN)/commands.txt && $(2)

# the options every step shares (deepyeast/launcher.py)
STEP_OPTS := --seed $(SEED)
PAR_OPTS := --jobs $(JOBS) --seed $(SEED)
# the trained net, for predictions and features
NET_OPTS = --engine $(ENGINE) --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN)

.PHONY: pipeline
pipeline: $(RUN)/report.html

# ---------------------------------------------------------------- data
ifeq ($(SCREEN),synthetic)
# the screen is the generator's output: a changed generator (sizes, rules) makes a new one
$(DATA)/screen.json: $(wildcard deepyeast/data/synthetic/*.py) | deps
	$(call step,synthetic screen ($(SIZE)),$(PY) data_prep/make_synthetic.py --out $(DATA) --size $(SIZE) \
		$(STEP_OPTS) --gallery $(RUN)/figures/gallery.png)
else
# The published archive: lists at DATA/, images unpacked into DATA/main and
# DATA/transfer.  ARCHIVE_SRC names a folder already in that layout (a local
# copy, or the CI's small archive) instead of downloading.  The lists are then
# copied next to the images, as the synthetic screen has them.
ARCHIVE_SRC ?=
$(DATA)/screen.json: | deps
ifeq ($(ARCHIVE_SRC),)
	$(call step,real archive,$(PY) data_prep/fetch_archive.py --out $(DATA))
else
	$(call step,local archive,mkdir -p $(DATA) && cp -r $(ARCHIVE_SRC)/. $(DATA)/)
endif
	cp $(DATA)/HOwt_doc.txt $(foreach s,$(SPLITS),$(DATA)/HOwt_$(s).txt) $(MAIN)/
	cp $(DATA)/HOwt_transfer_*.txt $(TRANSFER)/
	$(PY) data_prep/check_splits.py $(foreach s,$(SPLITS),$(call LIST,$(s))) > $(DATA)/.splits.json
	mv $(DATA)/.splits.json $@
endif

$(MEAN): $(DATA)/screen.json
	$(call step,LMDB and training mean,$(PY) data_prep/make_lmdb.py $(MAIN) --out $(LMDB) $(STEP_OPTS))

# ---------------------------------------------------------------- training
$(TRAIN)/solver.prototxt: $(MEAN) $(SOLVER) models/deepyeast/train_val.prototxt
	$(call step,run configuration,$(PY) data_prep/make_run_config.py --lmdb $(LMDB) --out $(TRAIN) \
		--solver $(SOLVER) $(foreach s,$(SCHEDULE),--set $(s)))

ifeq ($(ENGINE),caffe)
TRAIN_CMD = bin/caffe train -solver $(TRAIN)/solver.prototxt $(if $(GPU),-gpu $(GPU))
else
TRAIN_CMD = $(VENV)/bin/deepyeast train -solver $(TRAIN)/solver.prototxt -snapshot auto $(if $(GPU),-gpu $(GPU)) \
	-precision $(PRECISION)
endif

$(TRAIN)/chosen.caffemodel: $(TRAIN)/solver.prototxt
	$(call step,training ($(ENGINE) engine),$(TRAIN_CMD) 2> >(tee -a $(TRAIN)/train.log >&2))
	$(PY) -m deepyeast.engine.runconfig $(TRAIN)/solver.prototxt $@ --rule $(SNAPSHOT_RULE) \
		--log $(TRAIN)/train.log

# BN_ITERS > 0: recompute BatchNorm statistics with the chosen weights (precise BN;
# see deepyeast/engine/bnstats.py); 0 keeps the statistics training left.
$(WEIGHTS): $(TRAIN)/chosen.caffemodel
ifeq ($(BN_ITERS),0)
	cp $< $@.partial && mv $@.partial $@
else
	$(call step,BatchNorm statistics ($(BN_ITERS) batches),$(VENV)/bin/deepyeast bnstats \
		-model $(TRAIN)/train_val.prototxt -weights $< -out $@ -iterations $(BN_ITERS))
endif

# ---------------------------------------------------------------- network predictions and features
# features of every layer with learned weights (predict.py's default blob list)
$(RUN)/cells_test.csv: $(WEIGHTS)
	$(call step,network predictions (test),$(PY) analysis/predict.py $(NET_OPTS) \
		--archive $(MAIN) --list $(call LIST,test) --split test --out $@ --features-out $(FEAT)/test)

# the transfer analysis needs conv blobs only as per-channel mean and max (pooled at extraction)
$(FEAT)/transfer_%/paths.txt: $(WEIGHTS) $(DATA)/screen.json
	$(call step,network features (transfer $*),$(PY) analysis/predict.py $(NET_OPTS) \
		--archive $(TRANSFER) --list $(call TLIST,$*) --split transfer_$* \
		--out $(FEAT)/transfer_$*/cells.csv --features-out $(FEAT)/transfer_$* --features-reduce pool)

# ---------------------------------------------------------------- CellProfiler features, random forest
CP_SAMPLE = $(if $(filter train,$(1)),$(if $(filter-out 0,$(CP_TRAIN_CELLS)),--sample $(CP_TRAIN_CELLS)))

$(CP)/%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features ($*),$(PY) analysis/cp_features.py --archive $(MAIN) \
		--list $(call LIST,$*) --out $@ $(PAR_OPTS) $(call CP_SAMPLE,$*))

$(CP)/transfer_%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features (transfer $*),$(PY) analysis/cp_features.py --archive $(TRANSFER) \
		--list $(call TLIST,$*) --out $@ $(PAR_OPTS))

$(RUN)/rf/cells_test.csv: $(foreach s,$(SPLITS),$(CP)/$(s).csv)
	$(call step,random forest ($(GRID) grid),$(PY) analysis/random_forest.py \
		--train $(CP)/train.csv --val $(CP)/val.csv --test $(CP)/test.csv \
		--labels-from $(foreach s,$(SPLITS),$(call LIST,$(s))) --grid $(GRID) $(PAR_OPTS) \
		--out $@ --summary $(RUN)/rf/rf_grid.json)

# ---------------------------------------------------------------- analyses (each writes <folder>/result.json)
PREDICTIONS := $(RUN)/cells_test.csv $(RUN)/rf/cells_test.csv

$(RUN)/quality/result.json: $(CP)/train.csv $(CP)/test.csv $(PREDICTIONS)
	$(call step,quality filter,$(PY) analysis/quality_filter.py --train $(CP)/train.csv \
		--quality $(MAIN)/cell_quality.csv --test $(CP)/test.csv \
		--predictions $(RUN)/cells_test.csv --rf-predictions $(RUN)/rf/cells_test.csv \
		--out $(@D) $(PAR_OPTS))

$(RUN)/cells/result.json: $(PREDICTIONS)
	$(call step,per-cell evaluation,$(PY) analysis/evaluate_cells.py --predictions $(RUN)/cells_test.csv \
		--rf-predictions $(RUN)/rf/cells_test.csv --out $(@D) $(STEP_OPTS) $(EVAL_FLAGS))

MIXTURES = $(if $(wildcard $(MAIN)/proteins.csv),--mixtures $(MAIN)/proteins.csv)
$(RUN)/proteins/result.json: $(RUN)/cells_test.csv
	$(call step,protein-level calls (network),$(PY) analysis/protein_level.py --predictions $< \
		--out $(@D) $(MIXTURES))

$(RUN)/rf_proteins/result.json: $(RUN)/rf/cells_test.csv
	$(call step,protein-level calls (random forest),$(PY) analysis/protein_level.py --predictions $< \
		--classifier random_forest --out $(@D))

TRANSFER_FEATS := $(foreach s,$(SPLITS),$(FEAT)/transfer_$(s))
TRANSFER_CP := $(foreach s,$(SPLITS),$(CP)/transfer_$(s).csv)
$(RUN)/transfer/result.json: $(addsuffix /paths.txt,$(TRANSFER_FEATS)) $(TRANSFER_CP)
	$(call step,transfer learning,$(PY) analysis/transfer.py --features $(TRANSFER_FEATS) \
		--lists $(TRANSFER) --cellprofiler $(TRANSFER_CP) --out $(@D) $(PAR_OPTS))

$(RUN)/interpret/result.json: $(RUN)/cells_test.csv $(CP)/test.csv
	$(call step,t-SNE and neurons,$(PY) analysis/interpret.py --features $(FEAT)/test \
		--labels $(RUN)/cells_test.csv --cellprofiler $(CP)/test.csv --archive $(MAIN) --out $(@D) $(STEP_OPTS))

# ---------------------------------------------------------------- report
RESULTS := cells quality proteins rf_proteins transfer interpret
$(RUN)/report.html: $(foreach r,$(RESULTS),$(RUN)/$(r)/result.json)
	$(call step,report,$(PY) analysis/make_report.py --run $(RUN) --out $(RUN))
	@echo "report: $@"
	@echo "metrics: $(RUN)/metrics.json"
