# The paper's pipeline as file targets, shared by `make demo` (synthetic screen)
# and `make reproduce` (the real archive).  Every step writes its outputs
# atomically, so a step killed midway leaves nothing that a re-run would take
# for finished; training resumes from its newest .solverstate (-snapshot auto).
# Each analysis writes RUN/<name>/result.json last (its make target); the report
# finds every result.json under RUN.  RESULTS below lists the result folders a complete
# run has: the same folders as deepyeast/report/metrics_json.py's EXPECTED_RESULTS (which
# the report's completeness check reads), and tests/test_registry.py fails when the two
# lists differ or a listed folder has no rule here.
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
#   PREDICT_PRECISION  arithmetic of the network's predictions and features (analysis/predict.py
#              --precision) and of the model bundle's out-of-distribution statistics (make_bundle.py
#              --precision): fp32 (default; Caffe's) | bf16 (our engine only; ~2x faster on CPUs with bf16)
#   BN_ITERS   batches for recomputing BatchNorm statistics after training (0: keep)
#   SNAPSHOT_RULE  final | val_loss (the snapshot the analyses use)
#   KEEP_SNAPSHOTS  1 keeps every training snapshot; by default only the chosen one and the newest
#              (the resume point) stay (84 MiB each for DeepYeast)
#   SEED       seed of every step (--seed)
#   JOBS       worker processes of the parallel steps (--jobs)
#   SCHEDULER  where the forests, the filter's CV folds and the CellProfiler chunks run (--scheduler):
#              local (a Dask LocalCluster of JOBS processes) | tcp://HOST:PORT (a running Dask
#              cluster) | none (in one process, no Dask); empty: $DASK_SCHEDULER if set, else local
#   NONCELLS   the non-cell filter's list of non-cells (validation crops, archive-relative paths, one
#              a line; the paper picked 118 by eye). Synthetic default: the screen's main/noncells.txt
#              (its known non-cells of the validation split). The published archive has none: without
#              it the filter is reported as not run (null metrics, a `missing` entry naming NONCELLS=FILE).
#   MIXED      table of proteins with two compartments (protein,compartment_a,compartment_b; their
#              crops as plateNN/<f1>-*.png next to the table, in no split list). Synthetic default:
#              the screen's main/mixed_proteins.csv; the published archive has none (reported as not run).
#   CP_FEATURES  folder of external per-cell feature tables ({train,val,test}.csv and
#              transfer_{train,val,test}.csv or transfer.csv; path,<feature>,... keyed by archive
#              path), used instead of our cp-measure features by the forest, the non-cell filter,
#              transfer and interpretation
#   TSNE       t-SNE settings: fast (standardised, 50 PCs, 500 iterations, on per-channel mean and max of the
#              convolution maps) | paper (scikit-learn's defaults on every neuron's output: the whole maps of
#              TSNE_CELLS random test cells are extracted for it, 4 MiB per cell)
#   TSNE_CELLS cells of the t-SNE maps (default 1000, the paper's)
#   TRAINED_ON one line on the training data for the model bundle's readme
#   OOD_CELLS  training cells (an even sample of the training list) whose fc1 features give the model bundle's
#              out-of-distribution class statistics (make_bundle.py --ood-cells; empty: its default)
#   COMPARE_PROTEINS  with a synthetic screen: N > 0 adds the comparison of two screens (a synthetic pair of
#              N proteins, some relocalised, classified with the run's network; RUN/compare/, in the report)

RUN ?= runs/demo
SCREEN ?= synthetic
SIZE ?= demo
SEED ?= 0
SCHEDULE ?=
ENGINE ?= ours
GPU ?=
GRID ?= small
SNAPSHOT_RULE ?= final
KEEP_SNAPSHOTS ?=
PRECISION ?= fp32
PREDICT_PRECISION ?= fp32
BN_ITERS ?= 0
CP_TRAIN_CELLS ?= 0
JOBS ?= $(shell nproc)
SCHEDULER ?=
CP_FEATURES ?=
TSNE ?= fast
TSNE_CELLS ?= 1000
OOD_CELLS ?=
comma := ,
TRAINED_ON ?= $(if $(filter synthetic,$(SCREEN)),the synthetic screen (size $(SIZE)$(comma) seed $(SEED)),the published \
	DeepYeast archive (HOwt_train.txt))
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

# A step that fails after its target was written (or touched) leaves no target behind: make deletes a
# target its failed recipe changed (as it does on Ctrl-C), so a rerun redoes the step instead of
# taking a half-finished output as done.  Only files a failed recipe changed go; nothing else.
.DELETE_ON_ERROR:

# log each step's command to RUN/commands.txt (the report shows them) and run it
step = @mkdir -p $(RUN) && echo "==> [$$(date +%H:%M:%S)] $(1)" && echo '$(2)' >> $(RUN)/commands.txt && $(2)

# the options every step shares (deepyeast/launcher.py)
STEP_OPTS := --seed $(SEED)
PAR_OPTS := --jobs $(JOBS) --seed $(SEED)
# ... and of the steps whose tasks run on Dask (forests, CV folds, chunks of cells)
CLUSTER_OPTS := $(PAR_OPTS) $(if $(SCHEDULER),--scheduler $(SCHEDULER))
# the trained net, for predictions and features
NET_OPTS = --engine $(ENGINE) --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN) --precision $(PREDICT_PRECISION)

.PHONY: pipeline
pipeline: $(RUN)/report.html $(RUN)/model/bundle.json

# ---------------------------------------------------------------- data
ifeq ($(SCREEN),synthetic)
# the screen is the generator's output: a changed generator (sizes, rules) makes a new one
$(DATA)/screen.json: $(wildcard deepyeast/data/make_synthetic/*.py) | deps
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
	$(PY) data_prep/check_splits.py $(foreach s,$(SPLITS),$(call LIST,$(s))) --result $(RUN)/figures \
		--transfer $(foreach s,$(SPLITS),$(call TLIST,$(s))) $(if $(NONCELLS),--noncells $(NONCELLS)) \
		$(if $(MIXED),--mixed $(MIXED)) > $(DATA)/.splits.json
	mv $(DATA)/.splits.json $@
endif

# proteins with two compartments and the non-cell list: the synthetic screen writes its own; an archive has none
ifeq ($(SCREEN),synthetic)
MIXED ?= $(MAIN)/mixed_proteins.csv
NONCELLS ?= $(MAIN)/noncells.txt
else
MIXED ?=
NONCELLS ?=
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
	$(PY) data_prep/choose_snapshot.py $(TRAIN)/solver.prototxt $@ --rule $(SNAPSHOT_RULE) \
		--log $(TRAIN)/train.log $(if $(filter 1,$(KEEP_SNAPSHOTS)),,--prune)

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

# the validation cells' predictions: the non-cell filter's training cells are those both classifiers get right
$(RUN)/cells_val.csv: $(WEIGHTS)
	$(call step,network predictions (val),$(PY) analysis/predict.py $(NET_OPTS) \
		--archive $(MAIN) --list $(call LIST,val) --split val --out $@)

# the transfer analysis needs conv blobs only as per-channel mean and max (pooled at extraction)
$(FEAT)/transfer_%/paths.txt: $(WEIGHTS) $(DATA)/screen.json
	$(call step,network features (transfer $*),$(PY) analysis/predict.py $(NET_OPTS) \
		--archive $(TRANSFER) --list $(call TLIST,$*) --split transfer_$* \
		--out $(FEAT)/transfer_$*/cells.csv --features-out $(FEAT)/transfer_$* --features-reduce pool)

# ---------------------------------------------------------------- CellProfiler features, random forest
CP_SAMPLE = $(if $(filter train,$(1)),$(if $(filter-out 0,$(CP_TRAIN_CELLS)),--sample $(CP_TRAIN_CELLS)))

ifeq ($(CP_FEATURES),)
$(CP)/%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features ($*),$(PY) analysis/cp_features.py --archive $(MAIN) \
		--list $(call LIST,$*) --out $@ $(CLUSTER_OPTS) $(call CP_SAMPLE,$*))

$(CP)/transfer_%.csv: $(DATA)/screen.json
	$(call step,CellProfiler features (transfer $*),$(PY) analysis/cp_features.py --archive $(TRANSFER) \
		--list $(call TLIST,$*) --out $@ $(CLUSTER_OPTS))
TRANSFER_CP = $(foreach s,$(SPLITS),$(CP)/transfer_$(s).csv)
else
# an external table per split: the rows of the listed cells are taken (a listed cell without one is an error)
$(CP)/%.csv: $(DATA)/screen.json $(CP_FEATURES)/%.csv
	$(call step,external features ($*),$(PY) analysis/cp_features.py --from $(CP_FEATURES)/$*.csv \
		--archive $(MAIN) --list $(call LIST,$*) --out $@ $(STEP_OPTS) $(call CP_SAMPLE,$*))

CP_TRANSFER_TABLE = $(firstword $(wildcard $(CP_FEATURES)/transfer_$(1).csv) $(wildcard $(CP_FEATURES)/transfer.csv))
$(CP)/transfer_%.csv: $(DATA)/screen.json
	$(call step,external features (transfer $*),$(PY) analysis/cp_features.py --from $(call CP_TRANSFER_TABLE,$*) \
		--archive $(TRANSFER) --list $(call TLIST,$*) --out $@ $(STEP_OPTS))
# without a transfer table the transfer analysis runs on network features alone (and says so)
TRANSFER_CP = $(if $(call CP_TRANSFER_TABLE,train),$(foreach s,$(SPLITS),$(CP)/transfer_$(s).csv))
endif

$(RUN)/rf/cells_test.csv: $(foreach s,$(SPLITS),$(CP)/$(s).csv)
	$(call step,random forest ($(GRID) grid),$(PY) analysis/random_forest.py \
		--train $(CP)/train.csv --val $(CP)/val.csv --test $(CP)/test.csv \
		--labels-from $(foreach s,$(SPLITS),$(call LIST,$(s))) --grid $(GRID) $(CLUSTER_OPTS) \
		--out $@ --val-out $(RUN)/rf/cells_val.csv --summary $(RUN)/rf/rf_grid.json)

# ---------------------------------------------------------------- analyses (each writes <folder>/result.json)
PREDICTIONS := $(RUN)/cells_test.csv $(RUN)/rf/cells_test.csv

# The non-cell filter, the paper's way: validation cells both classifiers get right (rf/cells_val.csv
# is written with rf/cells_test.csv) against the non-cells of NONCELLS (the synthetic screen writes
# its own list, main/noncells.txt).  An archive without a list gets a result naming the filter as not run.
ifneq ($(NONCELLS),)
QUALITY_INPUTS = $(CP)/val.csv $(CP)/test.csv $(RUN)/cells_val.csv $(PREDICTIONS)
$(RUN)/quality/result.json: $(QUALITY_INPUTS) $(filter-out $(MAIN)/%,$(NONCELLS))
	$(call step,quality filter,$(PY) analysis/quality_filter.py --noncells $(NONCELLS) --val $(CP)/val.csv \
		--net-val $(RUN)/cells_val.csv --rf-val $(RUN)/rf/cells_val.csv --test $(CP)/test.csv \
		--predictions $(RUN)/cells_test.csv --rf-predictions $(RUN)/rf/cells_test.csv \
		$(if $(filter synthetic,$(SCREEN)),--truth $(MAIN)/cell_quality.csv) --out $(@D) $(CLUSTER_OPTS))
else
$(RUN)/quality/result.json: $(DATA)/screen.json
	$(call step,quality filter (not run: no non-cell list; NONCELLS=FILE),$(PY) analysis/quality_filter.py \
		--out $(@D))
endif

$(RUN)/cells/result.json: $(PREDICTIONS)
	$(call step,per-cell evaluation,$(PY) analysis/evaluate_cells.py --predictions $(RUN)/cells_test.csv \
		--rf-predictions $(RUN)/rf/cells_test.csv --out $(@D) $(STEP_OPTS) $(EVAL_FLAGS))

# proteins with two compartments: the network's predictions of their cells, checked top two / top three
$(RUN)/mixed/cells.csv: $(WEIGHTS) $(DATA)/screen.json $(filter-out $(MAIN)/%,$(MIXED))
	$(call step,network predictions (proteins with two compartments),$(PY) analysis/predict.py $(NET_OPTS) \
		--mixed $(MIXED) --not-in $(foreach s,$(SPLITS),$(call LIST,$(s))) --out $@)

PROTEIN_MIXED = $(if $(MIXED),--mixed $(MIXED) --mixed-predictions $(RUN)/mixed/cells.csv)
$(RUN)/proteins/result.json: $(RUN)/cells_test.csv $(if $(MIXED),$(RUN)/mixed/cells.csv)
	$(call step,protein-level calls (network),$(PY) analysis/protein_level.py --predictions $< \
		--out $(@D) $(PROTEIN_MIXED))

$(RUN)/rf_proteins/result.json: $(RUN)/rf/cells_test.csv
	$(call step,protein-level calls (random forest),$(PY) analysis/protein_level.py --predictions $< \
		--classifier random_forest --out $(@D))

TRANSFER_FEATS := $(foreach s,$(SPLITS),$(FEAT)/transfer_$(s))
$(RUN)/transfer/result.json: $(addsuffix /paths.txt,$(TRANSFER_FEATS)) $(TRANSFER_CP)
	$(call step,transfer learning,$(PY) analysis/transfer.py --features $(TRANSFER_FEATS) \
		--lists $(TRANSFER) $(if $(TRANSFER_CP),--cellprofiler $(TRANSFER_CP)) --tsne $(TSNE) --out $(@D) \
		$(PAR_OPTS))

# TSNE=paper: the t-SNE runs on the whole maps (every neuron's output) of TSNE_CELLS random test cells
TSNE_FULL := $(if $(filter paper,$(TSNE)),$(FEAT)/tsne_full)
$(FEAT)/tsne_full/paths.txt: $(WEIGHTS)
	$(call step,network features (whole maps of $(TSNE_CELLS) t-SNE cells),$(PY) analysis/predict.py $(NET_OPTS) \
		--archive $(MAIN) --list $(call LIST,test) --split test --sample $(TSNE_CELLS) $(STEP_OPTS) \
		--out $(FEAT)/tsne_full/cells.csv --features-out $(FEAT)/tsne_full --features-reduce full)

$(RUN)/interpret/result.json: $(RUN)/cells_test.csv $(CP)/test.csv $(if $(TSNE_FULL),$(TSNE_FULL)/paths.txt)
	$(call step,t-SNE and neurons,$(PY) analysis/interpret.py --features $(FEAT)/test \
		--labels $(RUN)/cells_test.csv --cellprofiler $(CP)/test.csv --archive $(MAIN) --tsne $(TSNE) \
		$(if $(TSNE_FULL),--tsne-features $(TSNE_FULL)) --n-tsne $(TSNE_CELLS) --weights $(WEIGHTS) \
		--out $(@D) $(PAR_OPTS))

# the paper's Results item by item, ours beside theirs (per-class counts and claims, confusions and galleries,
# forest / filter / snapshot settings, Figure S2, the nucleus + cytoplasm proteins, Figure 3C)
$(RUN)/paper/result.json: $(RUN)/cells/result.json $(RUN)/quality/result.json $(RUN)/proteins/result.json \
		$(RUN)/rf_proteins/result.json $(RUN)/interpret/result.json
	$(call step,the paper's results item by item,$(PY) analysis/paper_results.py --predictions $(RUN)/cells_test.csv \
		--archive $(MAIN) --rf-predictions $(RUN)/rf/cells_test.csv --forest-summary $(RUN)/rf/rf_grid.json \
		--quality $(RUN)/quality/result.json --proteins $(RUN)/proteins/proteins.csv \
		--rf-proteins $(RUN)/rf_proteins/proteins.csv $(if $(MIXED),--mixed $(RUN)/proteins/proteins_mixed.csv) \
		--tsne $(RUN)/interpret/tsne.csv --solver $(TRAIN)/solver.prototxt --chosen $(TRAIN)/chosen.caffemodel \
		--snapshot-rule $(SNAPSHOT_RULE) --out $(@D))

# ---------------------------------------------------------------- report
# the forest's result.json is written with its predictions table (random_forest.py)
$(RUN)/rf/result.json: $(RUN)/rf/cells_test.csv
	@test -f $@ || { echo "$@ is missing: remove $< and run again"; exit 1; }

# RESULTS: every complete run's (= EXPECTED_RESULTS); OPTIONAL_RESULTS: those some settings add
RESULTS := cells quality rf proteins rf_proteins transfer interpret paper
OPTIONAL_RESULTS := $(if $(and $(filter synthetic,$(SCREEN)),$(filter-out 0,$(COMPARE_PROTEINS))),compare)
$(RUN)/report.html: $(foreach r,$(RESULTS) $(OPTIONAL_RESULTS),$(RUN)/$(r)/result.json)
	$(call step,report,$(PY) analysis/make_report.py --run $(RUN) --out $(RUN))
	@echo "report: $@"
	@echo "metrics: $(RUN)/metrics.json"

# ---------------------------------------------------------------- the trained model as a bundle (RUN/model/)
# deploy net, weights, mean, class table, model-zoo readme with the run's metrics, bundle.json
# (analysis/make_bundle.py); analysis/classify_screen.py --model RUN/model classifies a new screen.
# metrics.json is written with the report, after report.html.
$(RUN)/metrics.json: $(RUN)/report.html
	@test -f $@ || { echo "$@ is missing: remove $< and run again"; exit 1; }

# (the split lists come with the screen: $(DATA)/screen.json is the target that makes them)
$(RUN)/model/bundle.json: $(WEIGHTS) $(MEAN) $(RUN)/metrics.json $(TRAIN)/solver.prototxt $(DEPLOY) $(DATA)/screen.json
	$(call step,model bundle,$(PY) analysis/make_bundle.py --model $(DEPLOY) --weights $(WEIGHTS) --mean $(MEAN) \
		--classes $(MAIN)/HOwt_doc.txt --solver $(TRAIN)/solver.prototxt --metrics $(RUN)/metrics.json \
		--examples $(call LIST,test) --ood-train $(call LIST,train) --ood-val $(call LIST,val) \
		$(if $(OOD_CELLS),--ood-cells $(OOD_CELLS)) --precision $(PREDICT_PRECISION) --trained-on "$(TRAINED_ON)" \
		--out $(@D))

# ---------------------------------------------------------------- comparing two screens (COMPARE_PROTEINS)
# A synthetic pair of micrograph screens (same proteins, some relocalised in the condition; micrograph
# effects on both sides), each classified from its micrographs with the run's network (a bundle of the
# weights, made before the report, so the report can show the comparison), then compared.
# PAIR/screens/truth.csv says which proteins moved; the comparison does not read it.
PAIR := $(RUN)/compare_pair
$(PAIR)/screens/truth.csv:
	$(call step,a pair of screens to compare ($(COMPARE_PROTEINS) proteins),$(PY) data_prep/make_synthetic.py \
		--pair micrographs --size $(SIZE) --pair-proteins $(COMPARE_PROTEINS) --seed $(SEED) --jobs $(JOBS) \
		--out $(@D))

$(PAIR)/model/bundle.json: $(WEIGHTS) $(MEAN) $(DEPLOY) $(DATA)/screen.json
	$(call step,the network as a bundle (for the comparison),$(PY) analysis/make_bundle.py --model $(DEPLOY) \
		--weights $(WEIGHTS) --mean $(MEAN) --classes $(MAIN)/HOwt_doc.txt --trained-on "$(TRAINED_ON)" --out $(@D))

$(PAIR)/%/cells.csv: $(PAIR)/model/bundle.json $(PAIR)/screens/truth.csv
	$(call step,classify the $* screen,$(PY) analysis/classify_screen.py --model $(PAIR)/model \
		--images $(PAIR)/screens/$*/images.csv --out $(@D) --precision bf16)

$(RUN)/compare/result.json: $(PAIR)/reference/cells.csv $(PAIR)/condition/cells.csv
	$(call step,compare the two screens,$(PY) analysis/compare_screens.py --reference $(PAIR)/reference \
		--condition $(PAIR)/condition --out $(@D) --seed $(SEED))
