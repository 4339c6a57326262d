# Random-forest baseline and cell-quality filter of DeepYeast (Parnamaa & Parts 2017).
#
# Usable from R directly:
#   source("deepyeast/analysis/random_forest.R")
#   search <- rf_grid_search(x_train, y_train, x_val, y_val, grid = RF_SMALL_GRID, cores = 2)
#   model  <- rf_fit(x_train, y_train, search$best)
#   prob   <- rf_predict_proba(model, x_test)          # N x K, columns = class levels
#   qf     <- rf_quality_cv(x_lab, is_cell, mtry = c(2, 110, 218, 326, 435), cores = 2)
#
# x_*: numeric matrices (cells x features, no NA); y_*: class labels (factor, integer or
# character; converted with factor()).  Everything is seeded, so a run is reproducible and
# does not depend on the number of cores or on where a grid point runs: deepyeast/analysis/random_forest.py
# runs the same per-point functions (rf_grid_point, rf_quality_fold) as tasks on a Dask
# cluster and gets the same numbers.
#
# Speed: for each (mtry, nodesize) pair one forest with max(ntree) trees is grown; the
# forests with fewer trees are its first trees (randomForest grows trees one after the
# other from the same random stream, so the first k trees of a seeded forest ARE the
# k-tree forest with that seed; tests/test_rforest.py checks this).  Grid points run in
# parallel with parallel::mclapply here.
#
# Ties: a cell's class is the one randomForest's predict() gives -- ties between classes
# broken at random with R's generator (rf_vote_class), seeded per grid point.

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

# The class randomForest's predict() gives for vote counts (counts: N x K, columns in level
# order), with R's random-number generator seeded by set.seed(seed) just before: the class
# with the most votes; ties are broken at random exactly as classForest() in randomForest's
# rf.c does it.  That rule draws one uniform number per class that equals the running maximum
# (zero-vote classes before the first voted one included) and takes class j with probability
# 1/ntie, where ntie - 1 counts such classes since the last strict maximum: of two tied
# classes the later one wins with probability 1/3, not 1/2.  Returns 1-based level indices.
rf_vote_class <- function(counts, seed) {
  counts <- as.matrix(counts)
  n <- nrow(counts)
  running <- numeric(n)
  strict <- cond <- matrix(FALSE, n, ncol(counts))
  for (j in seq_len(ncol(counts))) {
    strict[, j] <- counts[, j] > running
    running <- pmax(running, counts[, j])
    cond[, j] <- counts[, j] == running
  }
  set.seed(as.integer(seed))
  u <- runif(sum(cond))               # the uniforms classForest draws, row by row
  used <- c(0, cumsum(rowSums(cond)))[seq_len(n)]
  jet <- integer(n)
  ntie <- rep(1L, n)
  for (j in seq_len(ncol(counts))) {
    s <- strict[, j]
    eq <- cond[, j]
    jet[s] <- j
    ntie[s] <- 1L
    ntie[eq] <- ntie[eq] + 1L
    used[eq] <- used[eq] + 1
    take <- eq
    take[eq] <- u[used[eq]] < 1 / ntie[eq]
    jet[take] <- j
  }
  jet
}

# Vote counts of the first k trees of a forest, for each k in ks: integer array
# N x K x length(ks) (columns in level order).
.prefix_counts <- function(model, x, ks) {
  ind <- predict(model, x, predict.all = TRUE)$individual  # N x ntree, class labels
  lev <- levels(model$y)
  codes <- matrix(match(ind, lev), nrow(ind))
  out <- array(0L, c(nrow(x), length(lev), length(ks)), dimnames = list(NULL, lev, NULL))
  acc <- matrix(0L, nrow(x), length(lev))
  done <- 0L
  for (i in seq_along(ks)) {
    if (ks[i] > done) {
      seg <- codes[, (done + 1L):ks[i], drop = FALSE]
      for (l in seq_along(lev)) acc[, l] <- acc[, l] + as.integer(rowSums(seg == l))
      done <- ks[i]
    }
    out[, , i] <- acc
  }
  out
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

# The (mtry, nodesize) pairs of a grid, each with its seed (seed, seed + 1, ... in this
# order: mtry varies fastest); mtry values above the feature count are capped at it.
rf_grid_pairs <- function(grid, n_features, seed = 0L) {
  mtrys <- sort(unique(pmin(as.integer(grid$mtry), as.integer(n_features))))
  pairs <- expand.grid(mtry = mtrys, nodesize = sort(unique(as.integer(grid$nodesize))))
  pairs$seed <- as.integer(seed) + seq_len(nrow(pairs)) - 1L
  pairs
}

# One grid point: a forest with max(ks) trees grown with set.seed(seed); every prefix of
# k trees (k in ks) is scored on the validation cells.  The class of a cell is the one
# randomForest's predict() gives for the k-tree forest with set.seed(seed) just before it
# (rf_vote_class).  Returns list(table = data.frame(ntree, mtry, nodesize, seed,
# val_correct, val_total, val_accuracy), levels, val_counts / test_counts (N x K x
# length(ks) vote counts), val_class / test_class (N x length(ks), 1-based level indices);
# the test entries only with x_test.
rf_grid_point <- function(x_train, y_train, x_val, y_val, ks, mtry, nodesize, seed, x_test = NULL) {
  y_train <- .as_factor(y_train)
  ks <- sort(unique(as.integer(ks)))
  model <- rf_fit(x_train, y_train, list(ntree = max(ks), mtry = mtry, nodesize = nodesize, seed = seed))
  lev <- levels(model$y)
  score <- function(x) {
    counts <- .prefix_counts(model, x, ks)
    cls <- vapply(seq_along(ks), function(i) rf_vote_class(matrix(counts[, , i], nrow(x)), seed),
                  integer(nrow(x)))
    list(counts = counts, class = matrix(cls, nrow(x)))
  }
  val <- score(x_val)
  correct <- colSums(matrix(lev[val$class] == as.character(y_val), nrow(x_val)))
  tab <- data.frame(ntree = ks, mtry = min(as.integer(mtry), ncol(x_train)), nodesize = as.integer(nodesize),
                    seed = as.integer(seed), val_correct = as.integer(correct), val_total = nrow(x_val),
                    val_accuracy = correct / nrow(x_val))
  out <- list(table = tab, levels = lev, val_counts = val$counts, val_class = val$class)
  if (!is.null(x_test)) {
    test <- score(x_test)
    out$test_counts <- test$counts
    out$test_class <- test$class
  }
  out
}

# The best row of a grid table: highest validation accuracy; ties: fewer trees, then
# smaller mtry, then larger nodesize.
rf_best_row <- function(tab) {
  tab[order(-tab$val_accuracy, tab$ntree, tab$mtry, -tab$nodesize)[1], , drop = FALSE]
}

# Grid search over ntree x mtry x nodesize (rf_grid_point for each (mtry, nodesize) pair,
# in parallel with mclapply).  Returns list(table, best = rf_best_row(table), test_prob =
# with x_test, the best forest's vote fractions of x_test (N x K, columns = class levels),
# test_class = its classes (level names)): what rf_fit(x_train, y_train, best) gives, without
# growing the forest again.
rf_grid_search <- function(x_train, y_train, x_val, y_val, grid = RF_SMALL_GRID,
                           cores = parallel::detectCores(), seed = 0L, x_test = NULL) {
  y_train <- .as_factor(y_train)
  .check_xy(x_train, y_train, "rf_grid_search(train)")
  .check_xy(x_val, y_val, "rf_grid_search(val)")
  if (ncol(x_val) != ncol(x_train)) stop("rf_grid_search: train and val have different feature counts")
  if (!is.null(x_test)) {
    .check_xy(x_test, NULL, "rf_grid_search(test)")
    if (ncol(x_test) != ncol(x_train)) stop("rf_grid_search: train and test have different feature counts")
  }
  pairs <- rf_grid_pairs(grid, ncol(x_train), seed)
  ks <- sort(unique(as.integer(grid$ntree)))
  one <- function(i) {
    rf_grid_point(x_train, y_train, x_val, y_val, ks, pairs$mtry[i], pairs$nodesize[i], pairs$seed[i], x_test)
  }
  res <- .parallel_map(seq_len(nrow(pairs)), one, cores)
  tab <- do.call(rbind, lapply(res, `[[`, "table"))
  best <- rf_best_row(tab)
  out <- list(table = tab, best = best)
  if (!is.null(x_test)) {
    r <- res[[which(pairs$mtry == best$mtry & pairs$nodesize == best$nodesize)]]
    i <- match(best$ntree, ks)
    out$test_prob <- r$test_counts[, , i] / best$ntree
    out$test_prob <- matrix(out$test_prob, nrow(x_test), dimnames = list(NULL, r$levels))
    out$test_class <- r$levels[r$test_class[, i]]
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
rf_stratified_folds <- function(y, k = 10L, seed = 0L) {
  y <- .as_factor(y)
  set.seed(as.integer(seed))
  folds <- integer(length(y))
  for (l in levels(y)) {
    idx <- which(y == l)
    folds[idx] <- sample(rep_len(seq_len(k), length(idx)))
  }
  folds
}

# Down-sampling options for a two-class problem: "none" (each tree sees a bootstrap of all
# rows) or "balanced" (each tree sees, per class, as many rows as the rarer class has: the
# cells down-sampled to the non-cell count).
.sampling_args <- function(y, sampling) {
  if (sampling == "none") return(list())
  if (sampling == "balanced") {
    m <- min(table(y))
    return(list(strata = y, sampsize = rep(m, nlevels(y)), replace = TRUE))
  }
  stop(sprintf("unknown sampling %s (use none or balanced)", sampling))
}

# The quality filter's grid: (mtry, sampling) points, mtry capped at the feature count
# (duplicates dropped), mtry varying fastest.
rf_quality_points <- function(mtry, sampling, n_features) {
  expand.grid(mtry = sort(unique(pmin(as.integer(mtry), as.integer(n_features)))), sampling = sampling,
              stringsAsFactors = FALSE)
}

# One cross-validation fold of one point: a forest on the rows with fold != k (set.seed(seed)
# before growing it), its classes of the rows with fold == k.  Returns c(tp, tn, n1, n0):
# cells kept, non-cells removed, cells and non-cells in the fold.
rf_quality_fold <- function(x, is_cell, fold, k, mtry, sampling, ntree = 100L, nodesize = 1L, seed = 0L) {
  y <- factor(as.integer(is_cell), levels = c(0L, 1L))
  test <- fold == k
  ytr <- y[!test]
  args <- c(list(x = x[!test, , drop = FALSE], y = ytr, ntree = as.integer(ntree),
                 mtry = min(as.integer(mtry), ncol(x)), nodesize = as.integer(nodesize)),
            .sampling_args(ytr, sampling))
  set.seed(as.integer(seed))
  model <- do.call(randomForest, args)
  pred <- predict(model, x[test, , drop = FALSE])
  c(tp = sum(pred == "1" & y[test] == "1"), tn = sum(pred == "0" & y[test] == "0"),
    n1 = sum(y[test] == "1"), n0 = sum(y[test] == "0"))
}

# The chosen quality point: highest cross-validated accuracy; ties: higher balanced
# accuracy, then smaller mtry, then the earlier sampling option.
rf_quality_best <- function(tab, sampling) {
  tab[order(-tab$cv_accuracy, -tab$cv_balanced_accuracy, tab$mtry, match(tab$sampling, sampling))[1], ,
      drop = FALSE]
}

# Cell-quality filter: k-fold cross-validation over mtry and down-sampling of a forest
# telling cells (is_cell = 1) from non-cells (0), chosen by cross-validated accuracy (as the
# paper); the balanced accuracy (mean of the two recalls) is reported beside it.  Fold j of
# point p (job i of expand.grid(point, fold), point fastest) grows its forest with seed + i.
# Returns list(table = per-point CV scores, best, model = the best setting refitted on all
# rows with set.seed(seed)).
rf_quality_cv <- function(x, is_cell, mtry = c(2, 110, 218, 326, 435), sampling = c("none", "balanced"),
                          folds = 10L, ntree = 100L, nodesize = 1L,
                          cores = parallel::detectCores(), seed = 0L) {
  y <- factor(as.integer(is_cell), levels = c(0L, 1L))
  .check_xy(x, y, "rf_quality_cv")
  if (any(table(y) < folds)) stop(sprintf("rf_quality_cv: need at least %d cells and %d non-cells", folds, folds))
  fold <- rf_stratified_folds(y, folds, seed)
  points <- rf_quality_points(mtry, sampling, ncol(x))
  jobs <- expand.grid(point = seq_len(nrow(points)), fold = seq_len(folds))
  one <- function(j) {
    p <- points[jobs$point[j], ]
    c(point = jobs$point[j], rf_quality_fold(x, is_cell, fold, jobs$fold[j], p$mtry, p$sampling, ntree, nodesize,
                                             as.integer(seed) + j))
  }
  res <- do.call(rbind, .parallel_map(seq_len(nrow(jobs)), one, cores))
  tab <- rf_quality_table(points, res)
  best <- rf_quality_best(tab, sampling)
  model <- rf_quality_fit(x, is_cell, best$mtry, best$sampling, ntree, nodesize, seed)
  list(table = tab, best = best, model = model)
}

# Per-point CV scores from per-fold counts (a matrix with columns point, tp, tn, n1, n0).
rf_quality_table <- function(points, res) {
  agg <- aggregate(res[, c("tp", "tn", "n1", "n0"), drop = FALSE], by = list(point = res[, "point"]), FUN = sum)
  tab <- cbind(points[agg$point, , drop = FALSE], agg[, c("tp", "tn", "n1", "n0")])
  tab$cv_accuracy <- (tab$tp + tab$tn) / (tab$n1 + tab$n0)
  tab$cv_recall_cell <- tab$tp / tab$n1
  tab$cv_recall_noncell <- tab$tn / tab$n0
  tab$cv_balanced_accuracy <- (tab$cv_recall_cell + tab$cv_recall_noncell) / 2
  rownames(tab) <- NULL
  tab
}

# The filter itself: the chosen setting on all rows, grown with set.seed(seed).
rf_quality_fit <- function(x, is_cell, mtry, sampling, ntree = 100L, nodesize = 1L, seed = 0L) {
  y <- factor(as.integer(is_cell), levels = c(0L, 1L))
  .check_xy(x, y, "rf_quality_fit")
  args <- c(list(x = x, y = y, ntree = as.integer(ntree), mtry = min(as.integer(mtry), ncol(x)),
                 nodesize = as.integer(nodesize)),
            .sampling_args(y, sampling))
  set.seed(as.integer(seed))
  do.call(randomForest, args)
}

# Probability that each row is a real cell (vote fraction) and the forest's class (1 = cell),
# the class as predict() gives it with set.seed(seed) just before (ties at random, see
# rf_vote_class).
rf_quality_predict <- function(model, x, seed = 0L) {
  .check_xy(x, NULL, "rf_quality_predict")
  p <- as.numeric(predict(model, x, type = "prob")[, "1"])
  set.seed(as.integer(seed))
  cls <- as.integer(as.character(predict(model, x)))
  list(p_cell = p, is_cell = cls)
}
