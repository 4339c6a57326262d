# Random-forest baseline and cell-quality filter of DeepYeast (Parnamaa & Parts 2017).
#
# Usable from R directly:
#   source("deepyeast/analysis/random_forest.R")
#   search <- rf_grid_search(x_train, y_train, x_val, y_val, grid = RF_SMALL_GRID, cores = 2)
#   model  <- rf_fit(x_train, y_train, search$best)
#   prob   <- rf_predict_proba(model, x_test)          # N x K, columns = class levels
#   qf     <- rf_quality_cv(x_lab, is_cell, mtry = c(10, 25, 50), cores = 2)
#
# x_*: numeric matrices (cells x features, no NA); y_*: class labels (factor, integer or
# character; converted with factor()).  Everything is seeded, so a run is reproducible and
# does not depend on the number of cores.
#
# Speed: for each (mtry, nodesize) pair one forest with max(ntree) trees is grown; the
# forests with fewer trees are its first trees (randomForest grows trees one after the
# other from the same random stream, so the first k trees of a seeded forest ARE the
# k-tree forest with that seed; tests/test_rforest.py checks this).  Grid points run in
# parallel with parallel::mclapply.

suppressPackageStartupMessages(library(randomForest))
library(parallel)

# The paper's grid (Parnamaa & Parts 2017, Methods).
RF_PAPER_GRID <- list(
  ntree = c(50, 100, 250, 500, 1000),
  mtry = c(10, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300),
  nodesize = c(1, 2, 5, 10, 50)
)

# A small grid for the 2-core demo: 2 forests of 150 trees, 4 grid points.
RF_SMALL_GRID <- list(
  ntree = c(50, 150),
  mtry = c(20, 50),
  nodesize = c(1)
)

.as_factor <- function(y) {
  if (is.factor(y)) droplevels(y) else factor(y)
}

.check_xy <- function(x, y, what) {
  if (!is.matrix(x) || !is.numeric(x)) stop(sprintf("%s: x must be a numeric matrix", what))
  if (anyNA(x) || any(!is.finite(x))) stop(sprintf("%s: x has NA/NaN/Inf values (impute first)", what))
  if (!is.null(y) && length(y) != nrow(x)) {
    stop(sprintf("%s: %d labels for %d rows", what, length(y), nrow(x)))
  }
}

# Vote fractions of the first k trees: a list (one N x K matrix per k), columns = levels.
.votes_by_ntree <- function(model, x, ks) {
  ind <- predict(model, x, predict.all = TRUE)$individual  # N x ntree, class labels
  lev <- levels(model$y)
  lapply(ks, function(k) {
    sub <- ind[, seq_len(k), drop = FALSE]
    votes <- vapply(lev, function(l) rowSums(sub == l), numeric(nrow(sub)))
    votes <- matrix(votes, nrow = nrow(sub), dimnames = list(NULL, lev))
    votes / k
  })
}

# Fit one forest; params is a list/data.frame row with ntree, mtry, nodesize, seed.
rf_fit <- function(x, y, params, ...) {
  y <- .as_factor(y)
  .check_xy(x, y, "rf_fit")
  set.seed(as.integer(params$seed))
  randomForest(x = x, y = y, ntree = as.integer(params$ntree),
               mtry = min(as.integer(params$mtry), ncol(x)),
               nodesize = as.integer(params$nodesize), ...)
}

# Class probabilities (vote fractions), N x K with columns named by class level.
rf_predict_proba <- function(model, x) {
  .check_xy(x, NULL, "rf_predict_proba")
  p <- predict(model, x, type = "prob")
  p <- matrix(as.numeric(p), nrow = nrow(x), dimnames = list(NULL, colnames(p)))
  p
}

# Grid search over ntree x mtry x nodesize, each point scored by accuracy on the
# validation set (argmax of the vote fractions; ties go to the first class).
# Returns list(table = data.frame(ntree, mtry, nodesize, seed, val_correct, val_total,
# val_accuracy), best = the best row (ties: fewer trees, then smaller mtry, then larger
# nodesize), test_prob = when x_test is given, the best forest's class probabilities of
# x_test (N x K, columns = class levels): the same numbers rf_predict_proba(rf_fit(x_train,
# y_train, best), x_test) gives, without growing the forest again).
rf_grid_search <- function(x_train, y_train, x_val, y_val, grid = RF_SMALL_GRID,
                           cores = parallel::detectCores(), seed = 1L, x_test = NULL) {
  y_train <- .as_factor(y_train)
  .check_xy(x_train, y_train, "rf_grid_search(train)")
  .check_xy(x_val, y_val, "rf_grid_search(val)")
  if (ncol(x_val) != ncol(x_train)) stop("rf_grid_search: train and val have different feature counts")
  if (!is.null(x_test)) {
    .check_xy(x_test, NULL, "rf_grid_search(test)")
    if (ncol(x_test) != ncol(x_train)) stop("rf_grid_search: train and test have different feature counts")
  }
  y_val <- as.character(y_val)
  mtrys <- sort(unique(pmin(as.integer(grid$mtry), ncol(x_train))))
  pairs <- expand.grid(mtry = mtrys, nodesize = sort(unique(as.integer(grid$nodesize))))
  pairs$seed <- as.integer(seed) + seq_len(nrow(pairs)) - 1L
  ks <- sort(unique(as.integer(grid$ntree)))
  one <- function(i) {
    p <- pairs[i, ]
    model <- rf_fit(x_train, y_train, list(ntree = max(ks), mtry = p$mtry,
                                           nodesize = p$nodesize, seed = p$seed))
    probs <- .votes_by_ntree(model, x_val, ks)
    tab <- do.call(rbind, lapply(seq_along(ks), function(j) {
      pred <- colnames(probs[[j]])[max.col(probs[[j]], ties.method = "first")]
      correct <- sum(pred == y_val)
      data.frame(ntree = ks[j], mtry = p$mtry, nodesize = p$nodesize, seed = p$seed,
                 val_correct = correct, val_total = length(y_val),
                 val_accuracy = correct / length(y_val))
    }))
    test <- if (is.null(x_test)) NULL else .votes_by_ntree(model, x_test, ks)
    list(table = tab, test = test)
  }
  res <- .parallel_map(seq_len(nrow(pairs)), one, cores)
  tab <- do.call(rbind, lapply(res, `[[`, "table"))
  ord <- order(-tab$val_accuracy, tab$ntree, tab$mtry, -tab$nodesize)
  best <- tab[ord[1], , drop = FALSE]
  out <- list(table = tab, best = best)
  if (!is.null(x_test)) {
    pair <- which(pairs$mtry == best$mtry & pairs$nodesize == best$nodesize)
    out$test_prob <- res[[pair]]$test[[match(best$ntree, ks)]]
  }
  out
}

# mclapply that fails loudly (a worker error comes back as a try-error object).
.parallel_map <- function(items, f, cores) {
  cores <- max(1L, as.integer(cores))
  res <- if (cores > 1L) {
    mclapply(items, f, mc.cores = cores, mc.preschedule = FALSE)
  } else {
    lapply(items, f)
  }
  bad <- vapply(res, function(r) inherits(r, "try-error") || is.null(r), logical(1))
  if (any(bad)) {
    msg <- res[[which(bad)[1]]]
    stop(sprintf("random forest worker failed: %s", if (is.null(msg)) "killed (out of memory?)" else as.character(msg)))
  }
  res
}

# Stratified fold ids 1..k (each class spread evenly over the folds), seeded.
rf_stratified_folds <- function(y, k = 10L, seed = 1L) {
  y <- .as_factor(y)
  set.seed(as.integer(seed))
  folds <- integer(length(y))
  for (l in levels(y)) {
    idx <- which(y == l)
    folds[idx] <- sample(rep_len(seq_len(k), length(idx)))
  }
  folds
}

# Down-sampling options for a two-class problem: "none" (bootstrap of all rows) or
# "balanced" (each tree sees, per class, as many rows as the rarer class has).
.sampling_args <- function(y, sampling) {
  if (sampling == "none") return(list())
  if (sampling == "balanced") {
    m <- min(table(y))
    return(list(strata = y, sampsize = rep(m, nlevels(y)), replace = TRUE))
  }
  stop(sprintf("unknown sampling %s (use none or balanced)", sampling))
}

# Cell-quality filter: 10-fold cross-validation over mtry and down-sampling of a forest
# telling cells (is_cell = 1) from non-cells (0).  The criterion is balanced accuracy (mean
# of the two recalls), since non-cells are rare.  Returns list(table = per-point CV scores,
# best = best row, model = the best setting refitted on all rows).
rf_quality_cv <- function(x, is_cell, mtry = c(10, 25, 50, 100), sampling = c("none", "balanced"),
                          folds = 10L, ntree = 200L, nodesize = 1L,
                          cores = parallel::detectCores(), seed = 1L) {
  y <- factor(as.integer(is_cell), levels = c(0L, 1L))
  .check_xy(x, y, "rf_quality_cv")
  if (any(table(y) < folds)) stop(sprintf("rf_quality_cv: need at least %d cells and %d non-cells", folds, folds))
  fold <- rf_stratified_folds(y, folds, seed)
  points <- expand.grid(mtry = sort(unique(pmin(as.integer(mtry), ncol(x)))), sampling = sampling,
                        stringsAsFactors = FALSE)
  jobs <- expand.grid(point = seq_len(nrow(points)), fold = seq_len(folds))
  one <- function(j) {
    p <- points[jobs$point[j], ]
    test <- fold == jobs$fold[j]
    ytr <- y[!test]
    args <- c(list(x = x[!test, , drop = FALSE], y = ytr, ntree = as.integer(ntree),
                   mtry = p$mtry, nodesize = as.integer(nodesize)),
              .sampling_args(ytr, p$sampling))
    set.seed(as.integer(seed) + j)
    model <- do.call(randomForest, args)
    pred <- predict(model, x[test, , drop = FALSE])
    c(point = jobs$point[j], tp = sum(pred == "1" & y[test] == "1"), tn = sum(pred == "0" & y[test] == "0"),
      n1 = sum(y[test] == "1"), n0 = sum(y[test] == "0"))
  }
  res <- do.call(rbind, .parallel_map(seq_len(nrow(jobs)), one, cores))
  agg <- aggregate(res[, c("tp", "tn", "n1", "n0")], by = list(point = res[, "point"]), FUN = sum)
  tab <- cbind(points[agg$point, ], agg[, c("tp", "tn", "n1", "n0")])
  tab$cv_accuracy <- (tab$tp + tab$tn) / (tab$n1 + tab$n0)
  tab$cv_recall_cell <- tab$tp / tab$n1
  tab$cv_recall_noncell <- tab$tn / tab$n0
  tab$cv_balanced_accuracy <- (tab$cv_recall_cell + tab$cv_recall_noncell) / 2
  rownames(tab) <- NULL
  best <- tab[order(-tab$cv_balanced_accuracy, -tab$cv_accuracy, tab$mtry), , drop = FALSE][1, , drop = FALSE]
  args <- c(list(x = x, y = y, ntree = as.integer(ntree), mtry = best$mtry, nodesize = as.integer(nodesize)),
            .sampling_args(y, best$sampling))
  set.seed(as.integer(seed))
  model <- do.call(randomForest, args)
  list(table = tab, best = best, model = model)
}

# Probability that each row is a real cell, from a model of rf_quality_cv.
rf_quality_predict <- function(model, x) {
  .check_xy(x, NULL, "rf_quality_predict")
  as.numeric(predict(model, x, type = "prob")[, "1"])
}
