"""The scan-row schema is the one declaration: rows, the summary table and the HDF5 names."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.beamtime import schema
from cdiflow.beamtime.results import summary_table

ITEM = {"scan": "s", "key": "s", "number": 7, "source": "x.h5", "input_fingerprint": "f"}


def test_empty_row_has_exactly_the_row_columns_with_their_types():
    row = schema.empty_row(ITEM, iterations=12)
    assert list(row) == [c.name for c in schema.COLUMNS if c.in_row]
    for column in schema.COLUMNS:
        if not column.in_row:
            continue
        value = row[column.name]
        if column.kind == "array":
            assert value.dtype == np.dtype(column.dtype), column.name
        else:
            kind = {"str": str, "json": str, "int": int, "float": float, "bool": bool}
            assert type(value) is kind[column.kind], column.name
    assert row["chi2_curve"].shape == (12,) and np.isnan(row["chi2_curve"]).all()
    assert row["amplitude"].shape == (schema.RESULT_SIZE,) * 2
    assert row["start_chi2_curves"].shape == (1, 12)  # one start unless told
    assert np.isnan(row["start_chi2_curves"]).all()
    assert (row["number"], row["status"], row["input_fingerprint"]) == (7, "ok", "f")


def test_summary_columns_follow_the_schema_in_order_and_type():
    import pyarrow as pa

    names = schema.SUMMARY_COLUMNS
    assert len(set(names)) == len(names)
    assert set(schema.VERDICT_COLUMNS) <= set(names)
    assert set(schema.PROVENANCE_COLUMNS) <= set(names)
    assert not any(schema.BY_NAME[n].kind in ("array", "json") for n in names)
    row = dict(schema.empty_row(ITEM, 3), cnn_chi2=np.float32(0.5), starts=np.int64(3))
    table = summary_table([row, {}])
    assert table.column_names == list(names)
    types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
    for name in ("number", "cnn_chi2", "chi2_converged", "scan"):
        assert table.schema.field(name).type == types[schema.BY_NAME[name].kind]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["cnn_chi2"] == 0.5 and first["starts"] == 3
    assert first["refined_chi2"] is None  # NaN -> null
    assert all(v is None for v in table.slice(1, 1).to_pylist()[0].values())


@pytest.mark.parametrize("column", [c for c in schema.COLUMNS if c.hdf5])
def test_every_stored_array_is_a_row_array(column):
    assert column.kind == "array" and column.in_row
    assert schema.HDF5_ARRAYS[column.hdf5] is column


def test_start_curves_are_one_row_per_start_stored_as_chi2_starts():
    row = schema.empty_row(ITEM, iterations=7, starts=4)
    curves = row["start_chi2_curves"]
    assert curves.shape == (4, 7) and curves.dtype == np.float32 and np.isnan(curves).all()
    assert row["chi2_curve"].shape == (7,)
    column = schema.HDF5_ARRAYS["chi2_starts"]
    assert column.name == "start_chi2_curves" and column.shape in schema.SHAPES
    assert "start_chi2_curves" not in schema.SUMMARY_COLUMNS
