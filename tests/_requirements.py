"""Tests that need a component this machine may lack: real Caffe, R, a browser, a virtual X server.

For a user running ``make test`` without one, those tests are skipped with a reason and the run
ends with one summary line per missing component.  In CI (the environment variable ``CI`` set,
as ``.ci/run`` does) such a skip is turned into a failure: CI must run them.  Only skips made
through :func:`need` (or the fixtures of ``conftest.py`` that call it) count; their reason starts
with :data:`PREFIX`.
"""

import os

import pytest

PREFIX = "missing "

COMPONENTS = {
    "caffe": "real Caffe 1.0 (the Caffe root: `make caffe`, needs root and debootstrap)",
    "R": "R with randomForest and rpy2 (apt-get install r-base-core r-cran-randomforest; pip install 'rpy2<3.6')",
    "browser": "a headless browser (apt-get install chromium)",
    "xvfb": "a virtual X server and the X/OpenGL libraries napari's Qt needs (the `test` group of "
            "system-packages.txt: apt-get install xvfb xauth libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 ...)",
}


def in_ci():
    """Whether this run is CI's: ``CI`` set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def reason(component, why=""):
    """The skip reason for a missing ``component`` (a key of :data:`COMPONENTS`)."""
    return f"{PREFIX}{component}: {why or COMPONENTS[component]}"


def need(component, why=""):
    """Skip the calling test because ``component`` is missing here (in CI: fail it)."""
    text = reason(component, why)
    if in_ci():
        pytest.fail(f"CI must run this test, but {text}", pytrace=False)
    pytest.skip(text)


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip for a missing component (also from a ``skipif`` marker) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        text = _skip_reason(report)
        if text.startswith(PREFIX):
            report.outcome = "failed"
            report.longrepr = f"CI must run this test, but {text}"


def pytest_terminal_summary(terminalreporter):
    """One line per missing component: how many tests it skipped and how to get it."""
    counts = {}
    for report in terminalreporter.stats.get("skipped", []):
        text = _skip_reason(report)
        if text.startswith(PREFIX):
            component = text[len(PREFIX):].split(":", 1)[0]
            counts[component] = counts.get(component, 0) + 1
    for component, n in sorted(counts.items()):
        terminalreporter.write_line(
            f"NOTE: {n} test{'s' if n != 1 else ''} skipped because {component} is missing here: "
            f"{COMPONENTS.get(component, component)}. CI (CI=1) fails instead of skipping.")
