"""Layers point down only: the import-linter contract of ``.importlinter`` holds, imports inside functions included."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd):
    assert os.path.isfile(LINT), f"{LINT}: import-linter (the tests extra of pyproject.toml) is not installed"
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([LINT], cwd=cwd, env=env, capture_output=True, text=True)


def test_package_layers_point_down():
    r = _lint(REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    """The same kind of contract on a two-layer package: an import of the upper layer hidden in a
    function of the lower one is reported (what the package's contract guards against)."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    for d in (pkg, pkg / "low", pkg / "high"):
        (d / "__init__.py").write_text("")
    (pkg / "high" / "step.py").write_text("from pkg.low import io\n")
    (pkg / "low" / "io.py").write_text(textwrap.dedent("""\
        def helper():
            from pkg.high import step  # hidden upward import
            return step
        """))
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = pkg

        [importlinter:contract:layers]
        name = layers
        type = layers
        layers =
            pkg.high
            pkg.low
        """))
    r = _lint(tmp_path)
    assert r.returncode != 0 and "pkg.low.io -> pkg.high.step" in r.stdout, r.stdout
