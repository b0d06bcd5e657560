"""The warehouse: Parquet tables (one folder each), model checkpoints and a DuckDB catalogue.

Layout under the root (``./warehouse`` by default)::

    <table>/data.parquet      one folder per table ("principles/rl" nests)
    models/<asset>/           Hugging Face checkpoints
    salmon.duckdb             one view per table + the derived views of ``sql/views.sql``
    .dagster/                 the Dagster instance (DAGSTER_HOME) shared by the CLI and the UI

Every write goes to a temporary sibling first and is renamed into place, so readers (downstream
assets, DuckDB) never see a half-written file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq

from salmon_dag.errors import DiskFullError, disk_full, first_line, is_no_space

TABLE_FILE = "data.parquet"
DB_FILE = "salmon.duckdb"
DERIVED_VIEWS = Path(__file__).parent / "sql" / "views.sql"
LINEAGE_KEY = b"salmon.lineage"


# the SQL of every view that reads a table's file
_TABLE_VIEWS = "select sql from duckdb_views() where not internal and sql like '%read_parquet(%'"


class WarehouseError(RuntimeError):
    """A warehouse read or query failed (message is one line)."""


def read_table_file(path: str | Path, table: str) -> pl.DataFrame:
    """A warehouse table's Parquet file (a launched job reads its inputs by path); a truncated or
    corrupt file is one line naming it and how to rebuild it."""
    try:
        return pl.read_parquet(path)
    except Exception as exc:
        raise WarehouseError(f"table '{table}' cannot be read ({path}: {first_line(exc)}); rebuild it with "
                             f"salmon run --select {table}") from None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it over ``target`` (file or directory).

    On error the temporary path is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir():
            # Directories cannot be replaced in one rename: move the old one aside first.
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            _remove(old)
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    except Exception as exc:
        # a full disk is said as such, naming the target (judged before the partial write goes)
        if not isinstance(exc, DiskFullError) and is_no_space(exc, target.parent):
            _remove(tmp)
            raise disk_full(target) from exc
        raise
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def view_name(table: str) -> str:
    return table.replace("/", "_")


class Warehouse:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def dagster_home(self) -> Path:
        return self.root / ".dagster"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def table_path(self, table: str) -> Path:
        return self.root / table / TABLE_FILE

    def partial(self, asset: str):
        """The :class:`~salmon_dag.resume.ChunkStore` of ``asset``'s unfinished run (removed when its
        table is written)."""
        from salmon_dag.resume import PARTIAL_DIR, ChunkStore

        return ChunkStore(self.root / PARTIAL_DIR / asset)

    def tables(self) -> list[str]:
        found = self.root.glob(f"**/{TABLE_FILE}") if self.root.is_dir() else []
        return sorted(
            p.parent.relative_to(self.root).as_posix()
            for p in found
            if not any(part.startswith(".") for part in p.relative_to(self.root).parts)
            and p.relative_to(self.root).parts[0] != "models"
        )

    # ------------------------------------------------------------------ tables
    def write_table(self, table: str, df: pl.DataFrame, lineage: dict[str, Any] | None = None) -> Path:
        """Write ``df`` atomically as ``<table>/data.parquet`` and refresh the DuckDB views.

        ``lineage`` is also stored in the Parquet footer (key ``salmon.lineage``).
        """
        path = self.table_path(table)
        arrow = df.to_arrow()
        if lineage:
            meta = dict(arrow.schema.metadata or {})
            meta[LINEAGE_KEY] = json.dumps(lineage, sort_keys=True).encode()
            arrow = arrow.replace_schema_metadata(meta)
        with atomic_path(path) as tmp:
            pq.write_table(arrow, tmp, compression="zstd")
        self.partial(table).clear()  # the finished chunks of the run that made it
        self.refresh_views()
        return path

    def read_table(self, table: str) -> pl.DataFrame:
        path = self.table_path(table)
        if not path.is_file():
            raise WarehouseError(f"table '{table}' is not in the warehouse ({path} missing); materialize it first")
        return read_table_file(path, table)

    def read_lineage(self, table: str) -> dict[str, Any]:
        meta = pq.read_schema(self.table_path(table)).metadata or {}
        return json.loads(meta.get(LINEAGE_KEY, b"{}"))

    # ------------------------------------------------------------------ duckdb
    @contextmanager
    def _lock(self) -> Iterator[None]:
        # One DuckDB writer at a time, across processes (dagster dev runs steps in subprocesses).
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".duckdb.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def refresh_views(self) -> list[str]:
        """(Re)create one view per table plus every derived view whose inputs exist."""
        tables = self.tables()
        with self._lock():
            con = duckdb.connect(str(self.db_path))
            try:
                existing = {
                    r[0] for r in con.execute(
                        "select view_name from duckdb_views() where not internal"
                    ).fetchall()
                }
                wanted = {view_name(t) for t in tables}
                for stale in existing - wanted:
                    con.execute(f'drop view if exists "{stale}"')
                for t in tables:
                    path = str(self.table_path(t)).replace("'", "''")
                    try:
                        con.execute(
                            f"create or replace view \"{view_name(t)}\" as select * from read_parquet('{path}')"
                        )
                    except duckdb.Error:  # a damaged file: no view (salmon status reports it corrupt)
                        con.execute(f'drop view if exists "{view_name(t)}"')
                for name, sql in _derived_views():
                    try:
                        con.execute(f'create or replace view "{name}" as {sql}')
                    except duckdb.Error:
                        con.execute(f'drop view if exists "{name}"')  # its inputs are not built yet
            finally:
                con.close()
        return tables

    def _views_point_elsewhere(self) -> bool:
        """True when a table view reads a file outside this warehouse's root (it was copied or moved)."""
        try:
            con = duckdb.connect(str(self.db_path), read_only=True)
        except duckdb.Error:
            return False
        try:
            root = str(self.root).replace("'", "''")
            return any(f"'{root}/" not in sql for (sql,) in con.execute(_TABLE_VIEWS).fetchall())
        finally:
            con.close()

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run ``sql`` read-only; returns (column names, rows).

        Read-only in fact, not just for the database file: only SELECT statements run (DESCRIBE,
        SHOW, SUMMARIZE and FROM-first queries are SELECTs; COPY, ATTACH, INSTALL/LOAD, SET and
        EXPLAIN ANALYZE, which executes what it explains, are refused), and the connection may
        touch no file but the warehouse's own tables (DuckDB's ``enable_external_access=false``
        with ``allowed_paths``, then ``lock_configuration``), so no statement can write a file
        or read one outside the warehouse.
        """
        if not self.db_path.is_file():
            raise WarehouseError(f"no warehouse database at {self.db_path}; run `salmon run` first")
        if self._views_point_elsewhere():  # a copied or moved warehouse: its views name the old place
            self.refresh_views()
        try:
            con = duckdb.connect(str(self.db_path), read_only=True, config={
                "autoinstall_known_extensions": False, "autoload_known_extensions": False})
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open {self.db_path}: {str(exc).splitlines()[0]}") from None
        try:
            # allowed_paths must be set on a running database, before external access is switched off
            con.execute("set allowed_paths = $paths", {"paths": [str(self.table_path(t)) for t in self.tables()]})
            con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")
            for statement in con.extract_statements(sql):
                if statement.type != duckdb.StatementType.SELECT:
                    kind = statement.type.name.replace("_", " ")
                    raise WarehouseError(f"salmon sql is read-only: {kind} statements are not allowed, only queries "
                                         "(SELECT, FROM, DESCRIBE, SHOW, SUMMARIZE)")
            cur = con.execute(sql)
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall() if cols else []
        except duckdb.Error as exc:
            raise WarehouseError(" ".join(str(exc).split())) from None
        finally:
            con.close()


def _derived_views() -> list[tuple[str, str]]:
    """``-- view: NAME`` headed SELECT statements from ``sql/views.sql``."""
    views: list[tuple[str, str]] = []
    name, body = None, []
    for line in DERIVED_VIEWS.read_text(encoding="utf-8").splitlines():
        if line.startswith("-- view:"):
            if name:
                views.append((name, "\n".join(body).strip().rstrip(";")))
            name, body = line.split(":", 1)[1].strip(), []
        elif name and not line.startswith("--"):
            body.append(line)
    if name:
        views.append((name, "\n".join(body).strip().rstrip(";")))
    return views
