"""One registry of results: the make rules of a run and the report's expectations list the same analyses."""

import os
import re

from deepyeast.report.metrics_json import EXPECTED_RESULTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE = os.path.join(REPO, "mk", "pipeline.mk")


def _pipeline():
    with open(PIPELINE, encoding="utf-8") as f:
        return f.read()


def test_make_results_are_the_reports_expected_results():
    text = _pipeline()
    m = re.search(r"^RESULTS := (.*)$", text, re.M)
    assert m, "mk/pipeline.mk has no RESULTS line"
    results = m.group(1).split()
    assert len(results) == len(set(results))
    folders = [folder for folder, _, _ in EXPECTED_RESULTS.values()]
    assert sorted(results) == sorted(folders), (
        "mk/pipeline.mk RESULTS and report/metrics_json.py EXPECTED_RESULTS name different result folders: "
        f"only in make {sorted(set(results) - set(folders))}, only in the report {sorted(set(folders) - set(results))}")
    # results that some settings add (e.g. the comparison of a synthetic pair) are not expected of every run
    m = re.search(r"^OPTIONAL_RESULTS := (.*)$", text, re.M)
    optional = re.findall(r"(?:^|[\s,])([a-z_]+)\)*$", m.group(1)) if m else []
    assert optional and not set(optional) & set(folders), optional
    # each one has a make rule for its result.json, and report.html waits for all of them
    for folder in results + optional:
        assert re.search(r"^\$\(RUN\)/" + re.escape(folder) + r"/result\.json:", text, re.M), folder
    assert re.search(r"^\$\(RUN\)/report\.html: \$\(foreach r,\$\(RESULTS\) \$\(OPTIONAL_RESULTS\),"
                     r"\$\(RUN\)/\$\(r\)/result\.json\)", text, re.M)


def test_each_expected_result_names_the_step_that_writes_it():
    for name, (folder, producer, metrics) in EXPECTED_RESULTS.items():
        script = producer.split()[0]
        assert os.path.isfile(os.path.join(REPO, script)), (name, script)
        assert f"RUN/{folder}" in producer, (name, producer)
        assert script in _pipeline(), (name, script)


def test_the_pipelines_mean_file_is_the_constant():
    """Make cannot import deepyeast.constants: the training mean's file name in the LMDB folder is tied here."""
    from deepyeast.constants import MEAN_FILE

    assert re.search(r"^MEAN := \$\(LMDB\)/" + re.escape(MEAN_FILE) + r"$", _pipeline(), re.M)


SHARED_MODULE_STEPS = {"check_splits": "deepyeast.data.lists", "fetch_archive": "deepyeast.data.download",
                       "fetch_weights": "deepyeast.data.download", "make_run_config": "deepyeast.engine.run_config",
                       "choose_snapshot": "deepyeast.engine.run_config"}
"""The steps that are thin calls of a module several steps share (docs/reference/layout.md, Names)."""

LIBRARY_LAYERS = ("report", "analysis", "model", "data", "engine")


def _imported_modules(path):
    """Every ``deepyeast...`` module a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_each_step_runs_the_library_module_of_its_name():
    """The naming rule: step X = script */X.py = deepyeast/commands/X.py -> deepyeast/<layer>/X.py (or X/)."""
    from deepyeast.commands import STEPS

    pkg = os.path.join(REPO, "deepyeast")
    for step in STEPS:
        assert os.path.basename(step.script) == step.module + ".py", step
        assert os.path.isfile(os.path.join(REPO, step.script)), step.script
        homes = [layer for layer in LIBRARY_LAYERS
                 if os.path.isfile(os.path.join(pkg, layer, step.module + ".py"))
                 or os.path.isfile(os.path.join(pkg, layer, step.module, "__init__.py"))]
        imports = _imported_modules(os.path.join(pkg, "commands", step.module + ".py"))
        if step.module in SHARED_MODULE_STEPS:
            assert not homes, f"{step.module} has a library module {homes} but is listed as a shared-module step"
            assert SHARED_MODULE_STEPS[step.module] in imports, step
            continue
        assert len(homes) == 1, f"step {step.module}: library module in {homes or 'no layer'} (want exactly one)"
        assert f"deepyeast.{homes[0]}.{step.module}" in imports, f"{step.module} does not run its library module"


def test_no_library_module_is_named_after_another_step():
    """A module named like a step is that step's library: no second module of a step's name in another layer."""
    from deepyeast.commands import STEPS

    steps = {s.module for s in STEPS}
    pkg = os.path.join(REPO, "deepyeast")
    seen = {}
    for layer in LIBRARY_LAYERS + ("caffe", "utils"):
        for name in os.listdir(os.path.join(pkg, layer)):
            mod = name[:-3] if name.endswith(".py") else name
            if mod in steps:
                seen.setdefault(mod, []).append(layer)
    assert {m: layers for m, layers in seen.items() if len(layers) > 1} == {}
