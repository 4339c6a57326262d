"""The predictions table: round trip and every bad-input error naming its row or column."""

import csv

import numpy as np
import pytest

from _prediction_tables import simulated_table, write_table
from deepyeast.constants import CLASS_NAMES, TRANSFER_CLASS_NAMES
from deepyeast.utils.io import InputError
from deepyeast.analysis.prediction_table import BASE_COLUMNS, prob_columns, read_predictions, select_split


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(path)


@pytest.fixture
def table_csv(tmp_path):
    return write_table(tmp_path / "cells.csv", simulated_table(n_proteins=24, cells_range=(2, 5), seed=3))


def test_round_trip(tmp_path):
    table = simulated_table(n_proteins=24, cells_range=(2, 5), seed=3)
    path = write_table(tmp_path / "cells.csv", table)
    back = read_predictions(path)
    assert _rows(path)[0] == list(BASE_COLUMNS) + prob_columns(12)
    assert back.class_names == CLASS_NAMES
    assert back.n_cells == table.n_cells
    assert list(back.path) == list(table.path)
    assert list(back.protein) == list(table.protein)
    np.testing.assert_array_equal(back.label, table.label)
    np.testing.assert_array_equal(back.pred, table.pred)
    np.testing.assert_allclose(back.probs, table.probs, atol=1e-8)


def test_written_atomically_no_temp_left(tmp_path):
    write_table(tmp_path / "cells.csv", simulated_table(n_proteins=12, cells_range=(2, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv"]


@pytest.mark.parametrize("column", ["pred", "protein", "prob_3"])
def test_missing_column(table_csv, tmp_path, column):
    rows = _rows(table_csv)
    j = rows[0].index(column)
    path = _write_rows(tmp_path / "bad.csv", [r[:j] + r[j + 1:] for r in rows])
    with pytest.raises(InputError, match=rf"bad.csv: missing column '{column}'"):
        read_predictions(path)


def test_label_outside_class_table(table_csv, tmp_path):
    rows = _rows(table_csv)
    rows[5][rows[0].index("label")] = "12"
    path = _write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(InputError, match=r"row 5 \(line 6\), column 'label': class 12 is outside the class table"):
        read_predictions(path)


def test_negative_pred(table_csv, tmp_path):
    rows = _rows(table_csv)
    rows[2][rows[0].index("pred")] = "-1"
    with pytest.raises(InputError, match=r"row 2 \(line 3\), column 'pred'"):
        read_predictions(_write_rows(tmp_path / "bad.csv", rows))


def test_probabilities_not_summing_to_one(table_csv, tmp_path):
    rows = _rows(table_csv)
    j = rows[0].index("prob_0")
    rows[7][j] = str(float(rows[7][j]) + 0.01)
    with pytest.raises(InputError, match=r"row 7 \(line 8\), columns prob_0..prob_11: probabilities sum to 1.01"):
        read_predictions(_write_rows(tmp_path / "bad.csv", rows))


def test_probability_sum_within_tolerance_accepted(table_csv, tmp_path):
    rows = _rows(table_csv)
    j = rows[0].index("prob_0")
    rows[7][j] = str(float(rows[7][j]) + 5e-4)
    assert read_predictions(_write_rows(tmp_path / "ok.csv", rows)).n_cells == len(rows) - 1


def test_probability_not_a_number(table_csv, tmp_path):
    rows = _rows(table_csv)
    rows[3][rows[0].index("prob_4")] = "abc"
    with pytest.raises(InputError, match=r"row 3 \(line 4\), column 'prob_4': 'abc' is not a number"):
        read_predictions(_write_rows(tmp_path / "bad.csv", rows))


def test_empty_class(tmp_path):
    table = simulated_table(n_proteins=24, cells_range=(2, 4), seed=1)
    keep = table.label != CLASS_NAMES.index("Golgi")
    path = write_table(tmp_path / "cells.csv", table.subset(keep))
    with pytest.raises(InputError, match=r"column 'label': empty class\(es\) with no cells: 4 'Golgi'"):
        read_predictions(path)
    assert read_predictions(path, require_all_classes=False).n_cells == int(keep.sum())


def test_cell_without_protein(table_csv, tmp_path):
    rows = _rows(table_csv)
    rows[4][rows[0].index("protein")] = ""
    with pytest.raises(InputError, match=r"row 4 \(line 5\), column 'protein': a protein with no cells"):
        read_predictions(_write_rows(tmp_path / "bad.csv", rows))


def test_ragged_row_and_duplicate_path(table_csv, tmp_path):
    rows = _rows(table_csv)
    short = [r[:] for r in rows]
    short[6] = short[6][:-1]
    with pytest.raises(InputError, match=r"row 6 \(line 7\) has 16 fields, the header has 17"):
        read_predictions(_write_rows(tmp_path / "short.csv", short))
    dup = [r[:] for r in rows]
    dup[9][0] = dup[2][0]
    with pytest.raises(InputError, match=r"row 9 \(line 10\), column 'path': .* repeats row 2"):
        read_predictions(_write_rows(tmp_path / "dup.csv", dup))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty.csv: empty file"):
        read_predictions(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(",".join(list(BASE_COLUMNS) + prob_columns(12)) + "\n")
    with pytest.raises(InputError, match="header.csv: the table has a header but no rows"):
        read_predictions(tmp_path / "header.csv")
    with pytest.raises(InputError, match="nope.csv: cannot open"):
        read_predictions(tmp_path / "nope.csv")


def test_transfer_table_and_unknown_class_count(tmp_path):
    table = simulated_table(n_proteins=8, cells_range=(2, 4), n_classes=4)
    back = read_predictions(write_table(tmp_path / "t.csv", table))
    assert back.class_names == TRANSFER_CLASS_NAMES
    rows = _rows(tmp_path / "t.csv")
    rows[0].append("prob_4")
    for r in rows[1:]:
        r.append("0")
    with pytest.raises(InputError, match="5 prob_ columns: no class table has 5 classes"):
        read_predictions(_write_rows(tmp_path / "five.csv", rows))


def test_split_selection(tmp_path):
    a = simulated_table(n_proteins=12, cells_range=(2, 3), seed=1, split="val")
    b = simulated_table(n_proteins=12, cells_range=(2, 3), seed=2, split="test")
    rows = _rows(write_table(tmp_path / "a.csv", a)) + _rows(write_table(tmp_path / "b.csv", b))[1:]
    for r in rows[len(_rows(tmp_path / "a.csv")):]:
        r[0] = "b/" + r[0]
    path = _write_rows(tmp_path / "both.csv", rows)
    assert read_predictions(path).n_cells == a.n_cells + b.n_cells
    assert read_predictions(path, split="auto").n_cells == b.n_cells
    assert read_predictions(path, split="val").n_cells == a.n_cells
    with pytest.raises(InputError, match=r"no rows of split 'train' \(present: \['test', 'val'\]\)"):
        read_predictions(path, split="train")
    only_val = read_predictions(path, split="val")
    assert select_split(only_val, "auto").n_cells == a.n_cells
