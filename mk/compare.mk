# Compare two classified screens (issue 20):
#   make compare REFERENCE=runs/wt/classified CONDITION=runs/cond/classified OUT=runs/compare
# REFERENCE, CONDITION: classify_screen output folders (several, space-separated: replicates of that side);
# OUT: the output folder (changes.csv, report.html, summary.json).  COMPARE_FLAGS passes further options,
# e.g. "--fdr 0.05 --min-micrographs 3".
COMPARE_FLAGS ?=

.PHONY: compare
compare: deps
	@test -n "$(REFERENCE)" -a -n "$(CONDITION)" -a -n "$(OUT)" || \
		{ echo "usage: make compare REFERENCE=DIR CONDITION=DIR OUT=DIR [COMPARE_FLAGS=...]"; exit 2; }
	$(PY) analysis/compare_screens.py --reference $(REFERENCE) --condition $(CONDITION) --out $(OUT) $(COMPARE_FLAGS)
