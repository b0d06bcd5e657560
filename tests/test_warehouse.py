"""Warehouse: atomic writes, DuckDB views, read-only queries."""

import os

import polars as pl
import pytest

from salmon_dag.warehouse import Warehouse, WarehouseError, atomic_path


def test_write_read_and_views(tmp_path):
    wh = Warehouse(tmp_path)
    df = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    wh.write_table("things", df, lineage={"run_id": "r1"})
    wh.write_table("nested/part", df.head(1))
    assert wh.read_table("things").equals(df)
    assert wh.read_lineage("things")["run_id"] == "r1"
    assert wh.tables() == ["nested/part", "things"]
    cols, rows = wh.query("select count(*) as n from things")
    assert cols == ["n"] and rows == [(3,)]
    assert wh.query("select * from nested_part")[1] == [(1, "x")]


def test_query_is_read_only_and_errors_are_one_line(tmp_path):
    wh = Warehouse(tmp_path)
    with pytest.raises(WarehouseError, match="salmon run"):
        wh.query("select 1")
    wh.write_table("t", pl.DataFrame({"a": [1]}))
    with pytest.raises(WarehouseError) as exc:
        wh.query("create table evil as select 1")
    assert "\n" not in str(exc.value)
    with pytest.raises(WarehouseError, match="missing_table"):
        wh.query("select * from missing_table")


def test_failed_write_leaves_old_table(tmp_path, monkeypatch):
    wh = Warehouse(tmp_path)
    wh.write_table("t", pl.DataFrame({"a": [1]}))
    import salmon_dag.warehouse as w

    def boom(table, path, **kw):
        open(path, "wb").write(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(w.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        wh.write_table("t", pl.DataFrame({"a": [9, 9]}))
    assert wh.read_table("t")["a"].to_list() == [1]
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["data.parquet"]  # no temp file left


def test_atomic_directory_swap(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "w.bin").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "w.bin").write_text("half")
            raise RuntimeError("crash mid-save")
    assert (target / "w.bin").read_text() == "v1"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "w.bin").write_text("v2")
    assert (target / "w.bin").read_text() == "v2"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
