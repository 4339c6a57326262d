"""Skips and CI: in CI every skip fails, unless the test is explicitly not applicable there.

* A test that needs a component this machine may lack (real Caffe, R, a browser, a virtual X server,
  the published split lists, root namespaces) calls :func:`need` (or takes a fixture of ``conftest.py``
  that does, or uses a ``skipif`` whose reason is :func:`reason`): a user without it gets a skip with the reason and one
  summary line per missing component; CI (the environment variable ``CI`` set, as ``.ci/run`` does)
  gets a failure.  Such a skip fails CI even on a test marked not applicable.
* A test that genuinely cannot apply on some machines (a GPU test where no GPU is lent) carries
  ``@pytest.mark.not_applicable(reason="...")`` together with its skip condition; CI lets that skip
  pass, and the run's summary lists each such test with the reason.
* Every other skip fails CI (a skip with any other words used to pass silently).
"""

import os

import pytest

PREFIX = "missing "

COMPONENTS = {
    "caffe": "real Caffe 1.0 (the Caffe root: `make caffe`, needs root and debootstrap)",
    "R": "R with randomForest and rpy2 (apt-get install r-base-core r-cran-randomforest; pip install 'rpy2<3.6')",
    "browser": "a headless browser (apt-get install chromium)",
    "splits": "the published split lists in ../shared/deepyeast-splits beside the clone (CI has them)",
    "namespaces": "root with CAP_SYS_ADMIN and unshare (private mount and network namespaces)",
    "gloo": "torch.distributed with the gloo backend",
    "xvfb": "a virtual X server and the X/OpenGL libraries napari's Qt needs (the `test` group of "
            "system-packages.txt: apt-get install xvfb xauth libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 ...)",
}

MARK = "not_applicable"
"""The marker of a test that may skip in CI: ``@pytest.mark.not_applicable(reason="...")``."""


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARK}(reason): the test genuinely does not apply on some machines "
                                       "(e.g. needs a GPU); its skip there does not fail CI (every other skip does)")


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


def _not_applicable_reason(item):
    """The reason of the item's ``not_applicable`` mark, or None; a mark without a reason is an error."""
    mark = item.get_closest_marker(MARK)
    if mark is None:
        return None
    text = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
    if not str(text).strip():
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARK} needs reason=\"why it cannot apply here\"")
    return str(text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI every skip is a failure, except the skip of a test marked not applicable (not for a missing
    component: that one fails CI always)."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    text = _skip_reason(report)
    allowed = _not_applicable_reason(item)
    if allowed is not None and not text.startswith(PREFIX):
        report.user_properties.append((MARK, allowed))
        return
    if in_ci():
        report.outcome = "failed"
        report.longrepr = (f"CI must run this test, but {text}" if text.startswith(PREFIX) else
                           f"CI must run this test, but it skipped ({text}); a test that cannot apply on some "
                           f"machines says so with @pytest.mark.{MARK}(reason=...)")


def pytest_terminal_summary(terminalreporter):
    """One line per missing component (how many tests it skipped, how to get it), and one per test skipped
    as not applicable here (with its reason)."""
    counts = {}
    not_applicable = []
    for report in terminalreporter.stats.get("skipped", []):
        text = _skip_reason(report)
        marked = dict(report.user_properties).get(MARK)
        if marked is not None:
            not_applicable.append((report.nodeid, marked, text))
        elif text.startswith(PREFIX):
            component = text[len(PREFIX):].split(":", 1)[0]
            counts[component] = counts.get(component, 0) + 1
    for component, n in sorted(counts.items()):
        terminalreporter.write_line(
            f"NOTE: {n} test{'s' if n != 1 else ''} skipped because {component} is missing here: "
            f"{COMPONENTS.get(component, component)}. CI (CI=1) fails instead of skipping.")
    if not_applicable:
        terminalreporter.write_line(f"NOT APPLICABLE here ({len(not_applicable)}, allowed to skip in CI):")
        for nodeid, marked, text in not_applicable:
            terminalreporter.write_line(f"  {nodeid}: {marked} ({text})")
