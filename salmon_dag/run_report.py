"""What ``salmon run`` shows at its end: rows per table and the headline numbers of each stage,
read back from the warehouse through the same DuckDB views a user queries."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq

from salmon_dag.warehouse import Warehouse, WarehouseError

# (title, derived view of sql/views.sql): left out while the view's tables are not built
SECTIONS = (
    ("Reward model: held-out accuracy, negation flips, verifiable probes", "rm_probes"),
    ("RL: first vs last quarter of the rollout steps", "rl_gain"),
    ("Policies' answers on the benchmark prompts (where RL moved them)", "policy_answers"),
    ("Benchmarks", "benchmark_table"),
)


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[tuple]


def table_rows(warehouse: Warehouse) -> Section:
    """Every table of the warehouse with its row count (from the Parquet footer: no scan)."""
    rows = [(t, pq.ParquetFile(warehouse.table_path(t)).metadata.num_rows) for t in warehouse.tables()]
    return Section("Tables", ["table", "rows"], rows)


def report(warehouse: Warehouse) -> list[Section]:
    sections = [table_rows(warehouse)]
    for title, view in SECTIONS:
        try:
            columns, rows = warehouse.query(f"select * from {view}")
        except WarehouseError:  # not built yet
            continue
        if rows:
            sections.append(Section(title, columns, rows))
    return sections
