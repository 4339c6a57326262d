"""bench/bench_rf.py --against REF: this tree's and an older commit's feature extraction on the same cells,
each in a fresh process, with the values compared."""

import numpy as np

from bench import bench_rf

from _cell_crops import write_archive


def test_against_a_commit_times_both_and_counts_differing_values(tmp_path):
    root = tmp_path / "archive"
    paths = [rel for rel, _ in write_archive(root, {"test": 3}, seed=4)["test"]]
    rows, note = bench_rf.against_rows("HEAD", paths, str(root), str(tmp_path))
    (ours_name, ours_wall, ours_ms), (ref_name, ref_wall, ref_ms) = rows
    assert f"{len(paths)} cells" in ours_name and "this tree" in ours_name and "HEAD" not in ref_name
    assert ours_wall > 0 and ref_wall > 0 and ours_ms > 0 and ref_ms > 0
    ours = np.load(tmp_path / "values_ours.npy")
    assert ours.shape == (len(paths), 430)
    assert np.array_equal(ours, np.load(tmp_path / "values_ref.npy"), equal_nan=True)
    assert f"values differing: 0 of {ours.size:,}" in note  # HEAD's package measures what this tree's does
