"""The one ``deepyeast`` command (deepyeast/commands): every step and engine verb as a subcommand,
listed by ``deepyeast --help`` with a one-line description; the same flags and exit codes as the
scripts, which are thin callers of the same modules.  (The wheel installed alone runs it:
tests/test_environment.py.)"""

import contextlib
import io
import os
import re
import runpy
import subprocess
import sys

import pytest

from _data_helpers import REPO_ROOT
from deepyeast import commands


def _deepyeast(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", "deepyeast", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def test_help_lists_every_subcommand_with_a_one_line_description():
    res = _deepyeast("--help")
    assert res.returncode == 0, res.stderr
    listed = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^  ([a-z][a-z-]+) {2,}(\S.*)$", line)
        if m:
            listed[m.group(1)] = m.group(2)
    assert set(commands.names()) <= set(listed), set(commands.names()) - set(listed)
    for name in commands.names():
        assert len(listed[name]) > 15, (name, listed[name])
    from deepyeast.engine.cli import ACTIONS

    assert set(commands.ENGINE_VERBS) == set(ACTIONS) == {"train", "test", "time", "extract", "bnstats"}
    for name in ("segment", "crop", "classify", "predict", "bundle", "export-bioimageio", "convert-keras",
                 "fetch-weights"):
        assert name in listed
    bare = _deepyeast()
    assert bare.returncode == 2 and "classify" in bare.stderr
    typo = _deepyeast("clasify", "--model", "x")
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1 and "did you mean classify" in typo.stderr


def test_every_script_is_a_registered_thin_caller():
    """Each script under data_prep/ and analysis/ is one row of the registry and runs the command's module;
    every module of deepyeast/commands is registered."""
    scripts = {f"{d}/{f}" for d in ("data_prep", "analysis") for f in os.listdir(os.path.join(REPO_ROOT, d))
               if f.endswith(".py")}
    by_script = {s.script: s for s in commands.STEPS}
    assert scripts == set(by_script)
    for script, step in by_script.items():
        text = open(os.path.join(REPO_ROOT, script)).read()
        assert f"from deepyeast.commands import {step.module} as step" in text, script
        assert len(text.splitlines()) < 15, f"{script} is no thin caller"
    modules = {f[:-3] for f in os.listdir(os.path.dirname(commands.__file__))
               if f.endswith(".py") and f != "__init__.py"}
    assert modules == {s.module for s in commands.STEPS}


def _help_of(call):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        call()
    assert stop.value.code == 0
    return out.getvalue()


def _options(help_text):
    return sorted(set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_text.split("\n\n", 1)[0])))


@pytest.mark.parametrize("step", commands.STEPS, ids=lambda s: s.name)
def test_subcommand_and_script_take_the_same_flags(step, monkeypatch):
    script = os.path.join(REPO_ROOT, step.script)
    monkeypatch.setattr(sys, "argv", [script, "-h"])
    from_script = _help_of(lambda: runpy.run_path(script, run_name="__main__"))
    from_command = _help_of(lambda: commands.main([step.name, "-h"]))
    assert from_command.startswith(f"usage: deepyeast {step.name} ")
    assert _options(from_script) == _options(from_command) and len(_options(from_command)) >= 2
    # the examples name the subcommand, not the script
    assert f"python {step.script}" not in from_command
    assert commands.build_parser(step.name).prog == f"deepyeast {step.name}"


def test_bad_input_gives_the_scripts_exit_code_and_line(tmp_path):
    """A folder that is no model bundle: exit 2 and one line, the same through the script and the command."""
    (tmp_path / "empty").mkdir()
    table = tmp_path / "images.csv"
    table.write_text("image,protein\nfield.tif,YAL001C\n")
    args = ["--model", tmp_path / "empty", "--images", table, "--out", tmp_path / "out"]
    by_script = subprocess.run([sys.executable, "analysis/classify_screen.py", *map(str, args)], cwd=REPO_ROOT,
                               capture_output=True, text=True)
    by_command = _deepyeast("classify", *args, cwd=tmp_path)
    assert by_script.returncode == by_command.returncode == 2
    assert by_command.stderr.count("\n") == 1 and by_command.stderr.startswith("deepyeast classify: error: ")
    assert by_script.stderr.replace("classify_screen.py: ", "deepyeast classify: ") == by_command.stderr
    assert not (tmp_path / "out").exists()


def test_engine_verbs_keep_caffe_flags(tmp_path):
    res = _deepyeast("time", "-model", tmp_path / "missing.prototxt")
    assert res.returncode == 2 and res.stderr.startswith("deepyeast time: error: ")
    assert "-solver" in _deepyeast("train", "-h").stdout
