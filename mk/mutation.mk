# Mutation testing of the statistical core (mutmut, configured in setup.cfg's [mutmut] section):
# the functions that compute the paper's numbers -- cell metrics and their bootstrap, the protein
# calls, the quality filter's choice of training cells, the learning-rate policies and the loss clamp
# -- are mutated one change at a time, and each mutant must make a test of tests/test_metrics.py,
# test_protein_level.py, test_quality_filter.py, test_lr_policy.py, test_engine_layers.py or
# test_float_cancellation.py fail.  Not part of `make test` (it runs the tests once per mutant:
# tens of minutes on 2 cores).  Results stay in mutants/ (resumed by the next run); the table of
# killed shares is printed (scripts/mutation_score.py; goal: 90% of the mutants a test runs).
MUTATION_JOBS ?= 2
MUTATED := \
	'deepyeast.analysis.evaluate_cells.x__as_labels__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_count__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_accuracy__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_confusion_*' \
	'deepyeast.analysis.evaluate_cells.x_kappa_from_confusion__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_cohen_kappa__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_precision_recall__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_stratified_*' \
	'deepyeast.analysis.evaluate_cells.x_paired_accuracy_difference__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_bootstrap_precision_recall__mutmut_*' \
	'deepyeast.analysis.evaluate_cells.x_evaluate_cells__mutmut_*' \
	'deepyeast.analysis.protein_level.x_dirichlet_map__mutmut_*' \
	'deepyeast.analysis.protein_level.x_call_cells__mutmut_*' \
	'deepyeast.analysis.protein_level.x_protein_calls__mutmut_*' \
	'deepyeast.analysis.protein_level.x_protein_accuracy__mutmut_*' \
	'deepyeast.analysis.protein_level.x_check_mixed__mutmut_*' \
	'deepyeast.analysis.quality_filter.x_pick_training_cells__mutmut_*' \
	'deepyeast.analysis.quality_filter.x_filter_accuracy__mutmut_*' \
	'deepyeast.engine.lr_policy.x_learning_rate__mutmut_*' \
	'deepyeast.engine.lr_policy.x__powf__mutmut_*' \
	'deepyeast.engine.lr_policy.x__expf__mutmut_*' \
	'deepyeast.engine.lr_policy.x__check_gamma__mutmut_*' \
	'deepyeast.engine.layers.loss.x*SoftmaxWithLossLayer*forward__mutmut_*' \
	'deepyeast.engine.layers.loss.x*_ClampedLogProb*__mutmut_*' \
	'deepyeast.engine.layers.loss.x__labels_view__mutmut_*'

.PHONY: mutation mutation-score
mutation: deps
	PYTHONPATH= $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTATED) > mutants.log 2>&1 || \
		{ tail -40 mutants.log; exit 1; }
	@$(MAKE) --no-print-directory mutation-score

mutation-score:
	@PYTHONPATH= $(VENV)/bin/mutmut results --all true | $(VENV)/bin/python scripts/mutation_score.py $(MUTATED)
