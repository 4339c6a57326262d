# Classify a new screen with a trained model bundle (issue 13):
#   make classify MODEL=runs/demo/model IMAGES=myscreen/images.csv OUT=runs/mine/classified
# MODEL: a bundle folder (RUN/model/ of `make demo` / `make reproduce`, or a converted one);
# IMAGES: the images table (image or marker_image,protein_image; plate, protein; label and mask
# optional); OUT: the output folder (cells.csv, proteins.csv, report.html, ...).
# CLASSIFY_FLAGS passes further options, e.g. "--channels 1 0 --bits 12 --skip-bad --precision bf16".
CLASSIFY_FLAGS ?=

.PHONY: classify
classify: deps
	@test -n "$(MODEL)" -a -n "$(IMAGES)" -a -n "$(OUT)" || \
		{ echo "usage: make classify MODEL=BUNDLE_DIR IMAGES=images.csv OUT=DIR [CLASSIFY_FLAGS=...]"; exit 2; }
	$(PY) analysis/classify_screen.py --model $(MODEL) --images $(IMAGES) --out $(OUT) $(CLASSIFY_FLAGS)
