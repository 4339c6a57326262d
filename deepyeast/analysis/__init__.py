"""The paper's analyses; each reads the predictions table or features and writes a result folder.
cluster.py runs their independent tasks (forest grid points, CV folds, feature chunks) on Dask."""
