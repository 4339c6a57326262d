"""Tests that need a missing component skip for a user and fail in CI; a broken R is no "missing R".

The plugin (``tests/_requirements.py``) runs here in real pytest subprocesses on a small test file.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TESTS = textwrap.dedent("""
    import pytest
    from _requirements import need, reason

    def test_needs_r():
        need("R")

    @pytest.mark.skipif(True, reason=reason("caffe", "no Caffe root here"))
    def test_marked_for_caffe():
        pass

    def test_other_skip():
        pytest.skip("an ordinary skip, not a missing component")

    @pytest.mark.not_applicable(reason="needs a CUDA GPU; none is lent here")
    @pytest.mark.skipif(True, reason="no CUDA device")
    def test_gpu_only():
        pass

    @pytest.mark.not_applicable(reason="a GPU test")
    def test_marked_but_missing_a_component():
        need("browser")

    def test_runs():
        pass
""")


def _pytest(tmp_path, ci, tests=TESTS):
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {HERE!r})\n"
        "from _requirements import pytest_configure, pytest_runtest_makereport, pytest_terminal_summary  # noqa\n")
    (tmp_path / "test_probe.py").write_text(tests)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-rs",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_missing_component_skips_for_a_user_with_a_summary_line(tmp_path):
    res = _pytest(tmp_path, None)
    assert res.returncode == 0, res.stdout
    assert "1 passed, 5 skipped" in res.stdout, res.stdout
    assert "NOTE: 1 test skipped because R is missing here" in res.stdout
    assert "NOTE: 1 test skipped because caffe is missing here" in res.stdout
    assert "NOTE: 1 test skipped because browser is missing here" in res.stdout  # the mark does not hide it
    assert "NOT APPLICABLE here (1, allowed to skip in CI):" in res.stdout
    assert "test_probe.py::test_gpu_only: needs a CUDA GPU; none is lent here (no CUDA device)" in res.stdout


@pytest.mark.parametrize("ci", ["1", "true"])
def test_in_ci_every_skip_fails_but_the_not_applicable_one(tmp_path, ci):
    res = _pytest(tmp_path, ci)
    assert res.returncode == 1, res.stdout
    # call-time skips are failures, the markers' (at setup) errors: all fail the run, but the marked GPU test
    summary = res.stdout.strip().splitlines()[-1]
    for part in ("3 failed", "1 passed", "1 skipped", "1 error"):  # (warnings, if any, sit among them)
        assert re.search(rf"\b{part}\b", summary), res.stdout
    assert "CI must run this test, but missing R" in res.stdout
    assert "CI must run this test, but missing caffe: no Caffe root here" in res.stdout
    assert "CI must run this test, but missing browser" in res.stdout
    assert ("CI must run this test, but it skipped (an ordinary skip, not a missing component); a test that cannot "
            "apply on some machines says so with @pytest.mark.not_applicable(reason=...)") in res.stdout
    assert "test_probe.py::test_gpu_only: needs a CUDA GPU; none is lent here" in res.stdout


def test_ci_false_is_not_ci(tmp_path):
    assert _pytest(tmp_path, "false").returncode == 0


def test_not_applicable_without_a_reason_is_an_error(tmp_path):
    res = _pytest(tmp_path, "1", textwrap.dedent("""
        import pytest

        @pytest.mark.not_applicable
        @pytest.mark.skipif(True, reason="whatever")
        def test_x():
            pass
    """))
    assert res.returncode != 0 and "needs reason=" in res.stdout + res.stderr, res.stdout + res.stderr


R_PROBE = textwrap.dedent("""
    import sys
    from deepyeast.analysis import rbridge
    rbridge.R_SCRIPT = sys.argv[1]
    try:
        print("have_r:", rbridge.have_r())
    except Exception as err:
        print("raised:", type(err).__name__, str(err).splitlines()[0][:200])
""")


def test_a_broken_r_script_fails_instead_of_skipping(tmp_path, r_present):
    broken = tmp_path / "random_forest.R"
    broken.write_text("train_forest <- function(x, y {\n")  # a syntax error
    res = subprocess.run([sys.executable, "-c", R_PROBE, str(broken)], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert "raised:" in res.stdout, res.stdout + res.stderr


def test_r_absent_from_the_path_is_a_skip(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, PATH=str(tmp_path))  # no R program on this PATH
    res = subprocess.run([sys.executable, "-c", R_PROBE, os.path.join(REPO, "deepyeast", "analysis", "random_forest.R")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert "have_r: False" in res.stdout, res.stdout + res.stderr
