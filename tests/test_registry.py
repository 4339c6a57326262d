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
