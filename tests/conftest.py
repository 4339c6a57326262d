"""Shared fixtures for components that may be missing here (real Caffe, R, a browser), and the CI rules.

A test that needs one takes the fixture (``caffe_root_present``, ``r_present``,
``chromium_path``); without the component it is skipped for a user and fails in CI
(``tests/_requirements.py``).
"""

import shutil

import pytest

from _requirements import (in_ci, need, pytest_configure as _requirements_configure,  # noqa: F401 (hooks)
                           pytest_runtest_makereport, pytest_terminal_summary)


def pytest_configure(config):
    """The ``not_applicable`` marker; in CI the tests run in random order (pytest-randomly; the header
    prints its seed, and ``--randomly-seed=N`` repeats an order)."""
    _requirements_configure(config)
    if in_ci() and not config.pluginmanager.hasplugin("randomly"):
        raise pytest.UsageError("CI runs the tests in random order, but pytest-randomly is not active "
                                "(install it from requirements.txt; do not pass -p no:randomly)")


def _random_order_line(config):
    seed = getattr(config.option, "randomly_seed", None) if config.pluginmanager.hasplugin("randomly") else None
    return None if seed is None else f"random test order: --randomly-seed={seed} repeats it (-p no:randomly: file order)"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """The random order's seed, first and even under ``-q`` (``make test``), where pytest prints no header."""
    line = _random_order_line(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if line and reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def caffe_root_present():
    """Real Caffe can run here (the Caffe root exists and we may enter it)."""
    from deepyeast.caffe import root as caffe_root

    if not caffe_root.have_caffe_root():
        need("caffe", caffe_root.missing_reason())


@pytest.fixture(scope="session")
def r_present():
    """R and rpy2 are installed.  Any other failure (an error in random_forest.R, the randomForest
    package missing) is raised by ``have_r`` and fails the tests instead of skipping them."""
    from deepyeast.analysis import rbridge

    if not rbridge.have_r():
        need("R")


@pytest.fixture(scope="session")
def chromium_path():
    """Path of a headless-capable chromium."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        need("browser")
    return path


@pytest.fixture
def net_batches(monkeypatch):
    """The batch size of every engine Net forward pass during the test, in order (a spy: the real
    forward runs and its blobs are returned)."""
    from deepyeast.engine.net import Net

    seen = []
    forward = Net.forward

    def spy(self, **inputs):
        blobs = forward(self, **inputs)
        seen.append(int(next(iter(blobs.values())).shape[0]))  # an Input (or Data) blob comes first
        return blobs

    monkeypatch.setattr(Net, "forward", spy)
    return seen
