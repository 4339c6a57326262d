"""What `make reproduce` runs for the options that supply what the published archive lacks, read from
make's dry run (`make -n`): NONCELLS, MIXED, CP_FEATURES and the t-SNE settings, and what it runs
without them (each such step reports itself as not run instead of failing)."""

import os
import re
import subprocess

from _data_helpers import REPO_ROOT


def _dry_run(tmp_path, *extra):
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    run = os.path.relpath(tmp_path / "run", REPO_ROOT)
    proc = subprocess.run(["make", "-n", "--no-print-directory", "reproduce", f"REPRO_RUN={run}",
                           f"ARCHIVE_SRC={archive}", "REPRO_GPU=", *extra], cwd=REPO_ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


def _commands(out):
    """The step commands of a dry run: each step line logs its command as `echo '<command>' >> commands.txt`."""
    cmds = []
    for line in out.splitlines():
        if "commands.txt" in line and "echo '" in line:
            cmds.append(line.split("echo '", 1)[1].split("' >>", 1)[0])
    return cmds


def _lines(out, script):
    return [c for c in _commands(out) if script in c]


def test_without_archive_extras_the_filter_and_mixed_check_are_not_run(tmp_path):
    out = _dry_run(tmp_path)
    (quality,) = _lines(out, "analysis/quality_filter.py")
    assert "--noncells" not in quality and "--quality" not in quality and "--train" not in quality
    assert not _lines(out, "--mixed")
    (proteins, rf_proteins) = _lines(out, "analysis/protein_level.py")
    assert "--mixed" not in proteins
    assert all("--from" not in line for line in _lines(out, "analysis/cp_features.py"))
    assert all("--tsne paper" in line for line in _lines(out, "analysis/interpret.py") + _lines(out, "analysis/transfer.py"))
    # the paper's t-SNE input: the whole maps (every neuron's output) of 1,000 random test cells
    (whole,) = [c for c in _lines(out, "analysis/predict.py") if "--features-reduce full" in c]
    assert all("--precision fp32" in c for c in _lines(out, "analysis/predict.py"))  # Caffe's arithmetic
    assert "--sample 1000" in whole and "HOwt_test.txt" in whole and "--features-out" in whole
    tsne_dir = whole.split("--features-out ", 1)[1].split()[0]
    (interpret,) = _lines(out, "analysis/interpret.py")
    assert f"--tsne-features {tsne_dir}" in interpret and "--weights" in interpret  # and Figure S4's filters
    # the generator's truth tables sit beside the crops (data/main/...): no step reads them from an archive
    # (the run's own outputs, e.g. RUN/proteins/proteins.csv of the protein-level step, may share a name)
    for truth in ("cell_quality.csv", "proteins.csv", "noncells"):
        assert not re.search(r"data/main/" + re.escape(truth), out), truth
    assert "noncells" not in out


def test_noncells_mixed_and_external_features_reach_their_steps(tmp_path):
    noncells = tmp_path / "noncells.txt"
    noncells.write_text("plate01/1-1-1-1.png\n")
    mixed = tmp_path / "mine" / "mixed_proteins.csv"
    mixed.parent.mkdir()
    mixed.write_text("protein,compartment_a,compartment_b\nplate01/1,nucleus,cytoplasm\n")
    cp = tmp_path / "chong"
    cp.mkdir()
    for name in ("train", "val", "test", "transfer"):
        (cp / f"{name}.csv").write_text("path,f1\n")
    out = _dry_run(tmp_path, f"NONCELLS={noncells}", f"MIXED={mixed}", f"CP_FEATURES={cp}", "REPRO_TSNE=fast")
    (quality,) = _lines(out, "analysis/quality_filter.py")
    assert f"--noncells {noncells}" in quality and "--rf-predictions" in quality
    (predict_mixed,) = _lines(out, "--mixed " + str(mixed))[:1]
    assert "analysis/predict.py" in predict_mixed and "--not-in" in predict_mixed and "HOwt_test.txt" in predict_mixed
    (proteins, _rf) = _lines(out, "analysis/protein_level.py")
    assert f"--mixed {mixed} --mixed-predictions" in proteins
    imports = _lines(out, "analysis/cp_features.py")
    assert len(imports) == 6 and all("--from" in line for line in imports)
    assert sum(f"--from {cp}/transfer.csv" in line for line in imports) == 3  # one table serves every transfer split
    (transfer,) = _lines(out, "analysis/transfer.py")
    assert "--cellprofiler" in transfer and "--tsne fast" in transfer
    (interpret,) = _lines(out, "analysis/interpret.py")  # the faster setting: pooled maps, no whole-map step
    assert "--tsne fast" in interpret and "--tsne-features" not in interpret
    assert not [c for c in _lines(out, "analysis/predict.py") if "--features-reduce full" in c]


def test_a_step_that_fails_after_writing_its_target_leaves_no_target(tmp_path):
    """`.DELETE_ON_ERROR`: the archive step copies the archive (here only a screen.json) into the run and
    then fails on the missing split lists; its target, changed by the failed recipe, must not remain for a
    rerun to take as done.  Real make, real Makefile."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "screen.json").write_text("{}\n")
    run = tmp_path / "run"
    proc = subprocess.run(["make", "--no-print-directory", "reproduce", f"REPRO_RUN={os.path.relpath(run, REPO_ROOT)}",
                           f"ARCHIVE_SRC={archive}", "REPRO_GPU="], cwd=REPO_ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "HOwt_doc.txt" in proc.stdout  # it failed where the lists are copied, after the archive copy
    assert (run / "data").is_dir() and not (run / "data" / "screen.json").exists(), proc.stdout[-2000:]
    assert (archive / "screen.json").read_text() == "{}\n"  # the user's archive is untouched
