# The paper's pipeline as file targets, shared by `make demo` (synthetic screen)
# and `make reproduce` (the real archive).  Every step writes its outputs
# atomically, so a step killed midway leaves nothing that a re-run would take
# for finished; training resumes from its newest .solverstate (-snapshot auto).
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
#   SCHEDULER  where the forests and the CellProfiler chunks run: local (a Dask LocalCluster of
#              JOBS processes) | tcp://HOST:PORT (a running Dask cluster) | none (one process);
#              empty: the DASK_SCHEDULER environment variable if set, else local
#   NONCELLS   the quality filter's non-cell list (validation cells, one path per line; default
#              MAIN/noncells.txt, which the synthetic screen writes; the published archive has none)

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
SCHEDULER ?=
CLUSTER = --jobs $(JOBS) $(if $(SCHEDULER),--scheduler $(SCHEDULER))
NONCELLS ?= $(MAIN)/noncells.txt
BLOBS := conv1,conv2,conv3,conv4,conv5,conv6,conv7,conv8,fc1,fc2,fc3
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

# log each step's command to RUN/commands.txt (the report shows them) and run it
step = @mkdir -p $(RUN) && echo "==> [$$(date +%H:%M:%S)] $(1)" && echo '$(2)' >> $(RUN)/commands.txt && $(2)

.PHONY: pipeline
pipeline: $(RUN)/report.html

# ---------------------------------------------------------------- data
ifeq ($(SCREEN),synthetic)
# the screen is the generator's output: a changed generator (sizes, rules) makes a new one
$(DATA)/screen.json: deepyeast/synthetic.py | deps
	$(call step,synthetic screen ($(SIZE)),$(PY) data_prep/make_synthetic.py $(DATA) --size $(SIZE) --seed $(SEED) --gallery $(RUN)/figures/gallery.png)
else
# The published archive: lists at DATA/, images unpacked into DATA/main and
# DATA/transfer.  ARCHIVE_SRC names a folder already in that layout (a local
# copy, or the CI's small archive) instead of downloading.  The lists are then
# copied next to the images, as the synthetic screen has them.
ARCHIVE_SRC ?=
$(DATA)/screen.json: | deps
ifeq ($(ARCHIVE_SRC),)
	$(call step,real archive,$(PY) data_prep/fetch_archive.py $(DATA))
else
	$(call step,local archive,mkdir -p $(DATA) && cp -r $(ARCHIVE_SRC)/. $(DATA)/)
endif
	cp $(DATA)/HOwt_doc.txt $(DATA)/HOwt_train.txt $(DATA)/HOwt_val.txt $(DATA)/HOwt_test.txt $(MAIN)/
	cp $(DATA)/HOwt_transfer_*.txt $(TRANSFER)/
	$(PY) data_prep/check_splits.py $(MAIN)/HOwt_train.txt $(MAIN)/HOwt_val.txt $(MAIN)/HOwt_test.txt > $(DATA)/.splits.json
	mv $(DATA)/.splits.json $@
endif

$(MEAN): $(DATA)/screen.json
	$(call step,LMDB and training mean,$(PY) data_prep/make_lmdb.py $(MAIN) $(LMDB) --seed $(SEED))

# ---------------------------------------------------------------- training
$(TRAIN)/solver.prototxt: $(MEAN) $(SOLVER) models/deepyeast/train_val.prototxt
	$(call step,run configuration,$(PY) data_prep/make_run_config.py --lmdb-dir $(LMDB) --out $(TRAIN) --solver $(SOLVER) $(foreach s,$(SCHEDULE),--set $(s)))

ifeq ($(ENGINE),caffe)
TRAIN_CMD = bin/caffe train -solver $(TRAIN)/solver.prototxt $(if $(GPU),-gpu $(GPU))
else
TRAIN_CMD = $(VENV)/bin/deepyeast train -solver $(TRAIN)/solver.prototxt -snapshot auto $(if $(GPU),-gpu $(GPU)) -precision $(PRECISION)
endif

$(TRAIN)/chosen.caffemodel: $(TRAIN)/solver.prototxt
	$(call step,training ($(ENGINE) engine),$(TRAIN_CMD) 2> >(tee -a $(TRAIN)/train.log >&2))
	$(PY) -m deepyeast.runconfig $(TRAIN)/solver.prototxt $@ --rule $(SNAPSHOT_RULE) --log $(TRAIN)/train.log

# BN_ITERS > 0: recompute BatchNorm statistics with the chosen weights (precise BN;
# see deepyeast/engine/bnstats.py); 0 keeps the statistics training left.
$(WEIGHTS): $(TRAIN)/chosen.caffemodel
ifeq ($(BN_ITERS),0)
	cp $< $@.partial && mv $@.partial $@
else
	$(call step,BatchNorm statistics ($(BN_ITERS) batches),$(VENV)/bin/deepyeast bnstats -model $(TRAIN)/train_val.prototxt -weights $< -out $@ -iterations $(BN_ITERS))
endif

# ---------------------------------------------------------------- network predictions and features
$(RUN)/cells_test.csv: $(WEIGHTS)
	$(call step,network predictions (test),$(PY) analysis/predict.py --engine $(ENGINE) --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN) --archive $(MAIN) --list $(MAIN)/HOwt_test.txt --split test --out $@ --features-out $(FEAT)/test --blobs $(BLOBS))

$(RUN)/cells_val.csv: $(WEIGHTS)
	$(call step,network predictions (val),$(PY) analysis/predict.py --engine $(ENGINE) --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN) --archive $(MAIN) --list $(MAIN)/HOwt_val.txt --split val --out $@)

# the transfer analysis needs conv blobs only as per-channel mean and max (pooled at extraction)
$(FEAT)/transfer_%/paths.txt: $(WEIGHTS) $(DATA)/screen.json
	$(call step,network features (transfer $*),$(PY) analysis/predict.py --engine $(ENGINE) --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN) --archive $(TRANSFER) --list $(TRANSFER)/HOwt_transfer_$*.txt --split transfer_$* --out $(FEAT)/transfer_$*/cells.csv --features-out $(FEAT)/transfer_$* --blobs $(BLOBS) --features-reduce pool)

# ---------------------------------------------------------------- CellProfiler features, random forest
$(CP)/%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features ($*),$(PY) analysis/cp_features.py --archive $(MAIN) --list $(MAIN)/HOwt_$*.txt --out $@ $(CLUSTER) $(if $(filter train,$*),$(if $(filter-out 0,$(CP_TRAIN_CELLS)),--sample $(CP_TRAIN_CELLS) --seed $(SEED))))

$(CP)/transfer_%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features (transfer $*),$(PY) analysis/cp_features.py --archive $(TRANSFER) --list $(TRANSFER)/HOwt_transfer_$*.txt --out $@ $(CLUSTER))

$(RUN)/rf/cells_test.csv: $(CP)/train.csv $(CP)/val.csv $(CP)/test.csv
	$(call step,random forest ($(GRID) grid),$(PY) analysis/random_forest.py --train $(CP)/train.csv --val $(CP)/val.csv --test $(CP)/test.csv --labels-from $(MAIN)/HOwt_train.txt $(MAIN)/HOwt_val.txt $(MAIN)/HOwt_test.txt --grid $(GRID) $(CLUSTER) --val-out $(RUN)/rf/cells_val.csv --out $@ --summary $(RUN)/rf/rf_grid.json)

# the paper's procedure: cells correct by both classifiers on the validation split + the listed
# non-cells (rf/cells_val.csv is written with rf/cells_test.csv)
$(RUN)/quality/quality_filter.json: $(CP)/val.csv $(CP)/test.csv $(RUN)/cells_val.csv $(RUN)/cells_test.csv $(RUN)/rf/cells_test.csv
	$(call step,quality filter,$(PY) analysis/quality_filter.py --val $(CP)/val.csv --net-val $(RUN)/cells_val.csv --rf-val $(RUN)/rf/cells_val.csv --noncells $(NONCELLS) --test $(CP)/test.csv --predictions $(RUN)/cells_test.csv --rf-predictions $(RUN)/rf/cells_test.csv $(if $(wildcard $(MAIN)/cell_quality.csv),--truth $(MAIN)/cell_quality.csv) --out $@ --cells $(RUN)/quality/cells.csv --training $(RUN)/quality/training_set.csv --figure $(RUN)/quality/quality_filter.png $(CLUSTER))

# ---------------------------------------------------------------- analyses
$(RUN)/cells/cell_metrics.json: $(RUN)/cells_test.csv $(RUN)/rf/cells_test.csv
	$(call step,per-cell evaluation,$(PY) analysis/evaluate_cells.py --predictions $(RUN)/cells_test.csv --rf-predictions $(RUN)/rf/cells_test.csv --out $(RUN)/cells $(EVAL_FLAGS))

$(RUN)/proteins.csv: $(RUN)/cells_test.csv
	$(call step,protein-level calls (network),$(PY) analysis/protein_level.py --predictions $< --out $@ $(if $(wildcard $(MAIN)/proteins.csv),--mixtures $(MAIN)/proteins.csv))

$(RUN)/rf_proteins.csv: $(RUN)/rf/cells_test.csv
	$(call step,protein-level calls (random forest),$(PY) analysis/protein_level.py --predictions $< --out $@)

TRANSFER_FEATS := $(foreach s,train val test,$(FEAT)/transfer_$(s)/paths.txt)
TRANSFER_CP := $(foreach s,train val test,$(CP)/transfer_$(s).csv)
$(RUN)/transfer/transfer.json: $(TRANSFER_FEATS) $(TRANSFER_CP)
	$(call step,transfer learning,$(PY) analysis/transfer.py --features $(foreach s,train val test,$(FEAT)/transfer_$(s)) --lists $(TRANSFER) --cellprofiler $(TRANSFER_CP) --out $(RUN)/transfer)

$(RUN)/interpret/interpret.json: $(RUN)/cells_test.csv $(CP)/test.csv
	$(call step,t-SNE and neurons,$(PY) analysis/interpret.py --features $(FEAT)/test --labels $(RUN)/cells_test.csv --cellprofiler $(CP)/test.csv --archive $(MAIN) --out $(RUN)/interpret)

REPORT_INPUTS := $(RUN)/cells/cell_metrics.json $(RUN)/proteins.csv $(RUN)/rf_proteins.csv \
	$(RUN)/quality/quality_filter.json $(RUN)/transfer/transfer.json $(RUN)/interpret/interpret.json
$(RUN)/report.html: $(REPORT_INPUTS)
	$(call step,report,$(PY) analysis/make_report.py --run $(RUN) --out $@ --metrics $(RUN)/metrics.json)
	@echo "report: $@"
	@echo "metrics: $(RUN)/metrics.json"
