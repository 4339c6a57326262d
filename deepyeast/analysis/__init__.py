"""Analyses of the paper (issue 11 layout); cluster.py runs their independent tasks on Dask."""
