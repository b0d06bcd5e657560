"""Warehouse: atomic writes, DuckDB views, read-only queries."""

import os
import subprocess
import sys

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


def _snapshot(root) -> dict:
    """Every file under ``root`` (the DuckDB lock file aside) with its bytes."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".duckdb.lock"}


@pytest.fixture
def hostile(tmp_path):
    """A warehouse with one table, a file outside it, and the queries that must all fail."""
    wh = Warehouse(tmp_path / "wh")
    wh.write_table("t", pl.DataFrame({"a": [1, 2]}))
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n42\n")
    table = wh.table_path("t")
    queries = {
        "copy to a file": f"copy (select 1) to '{tmp_path / 'out.csv'}'",
        "copy over a table file": f"copy (select 9 as a) to '{table}' (format parquet, use_tmp_file false)",
        "explain analyze runs what it explains": f"explain analyze copy (select 9 as a) to '{table}' (use_tmp_file false)",
        "attach": f"attach '{tmp_path / 'other.duckdb'}' as other",
        "read a file outside the warehouse": f"select * from read_csv('{secret}')",
        "read a file by path": f"select * from '{secret}'",
        "glob the file system": "select * from glob('/etc/*')",
        "install": "install httpfs",
        "load": "load httpfs",
        "re-enable external access": "set enable_external_access = true",
        "a second statement": f"select 1; copy (select 1) to '{tmp_path / 'out2.csv'}'",
    }
    return wh, tmp_path, queries


def test_sql_cannot_write_or_read_outside_the_warehouse(hostile):
    wh, root, queries = hostile
    before = _snapshot(root)
    for what, sql in queries.items():
        with pytest.raises(WarehouseError) as exc:
            wh.query(sql)
        assert "\n" not in str(exc.value), what
        assert _snapshot(root) == before, f"{what} changed files"
    # what remains allowed: queries over the views and the table files themselves
    assert wh.query("select sum(a) from t")[1] == [(3,)]
    assert wh.query(f"select count(*) from '{wh.table_path('t')}'")[1] == [(2,)]
    assert wh.query("describe t")[1][0][0] == "a"
    assert wh.query("summarize t")[0][0] == "column_name"


def test_salmon_sql_command_refuses_each_hostile_query(hostile):
    wh, root, queries = hostile
    before = _snapshot(root)
    for what, sql in queries.items():
        proc = subprocess.run([sys.executable, "-m", "assets_defs.cli", "sql", "--warehouse", str(wh.root), sql],
                              capture_output=True, text=True)
        assert proc.returncode != 0, what
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, proc.stderr)
        assert _snapshot(root) == before, f"{what} changed files"


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


def test_a_corrupt_table_is_one_line_naming_its_file_and_the_fix(tmp_path):
    wh = Warehouse(tmp_path / "wh")
    path = wh.write_table("pairs", pl.DataFrame({"a": list(range(1000))}))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(WarehouseError) as info:
        wh.read_table("pairs")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "salmon run --select pairs" in msg


def test_a_write_that_finds_the_disk_full_says_so_naming_the_target(tmp_path):
    """Libraries word ENOSPC differently (OSError, safetensors' Rust error, SQLite): each is one
    DiskFullError naming what was being written, and the partial file is gone."""
    import errno

    from salmon_dag.errors import DiskFullError, is_no_space

    target = tmp_path / "t" / "data.parquet"
    for raised in (OSError(errno.ENOSPC, "No space left on device"),
                   RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")):
        with pytest.raises(DiskFullError, match=f"^no space left on device writing {target}$"):
            with atomic_path(target) as tmp:
                tmp.write_text("partial")
                raise raised
        assert not list(target.parent.iterdir())
    with pytest.raises(ValueError):  # any other failure stays what it is
        with atomic_path(target) as tmp:
            raise ValueError("bad row")
    assert not is_no_space(ValueError("bad row"), tmp_path)
