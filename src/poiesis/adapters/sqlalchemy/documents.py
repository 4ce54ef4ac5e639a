"""Read a page of tasks in one query: each child table arrives as a JSON array per task.

`json_rows(...)` is a correlated scalar subquery that aggregates a child table's rows for one task,
in order, into a JSON array of objects; msgspec decodes the arrays straight into domain structs. One
round trip serves a page of 256 tasks in any view. The two databases spell the JSON functions
differently; the `@compiles` rules below hide that.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from poiesis.adapters.sqlalchemy import schema as t


class json_array_agg(FunctionElement[Any]):
    inherit_cache = True
    name = "json_array_agg"


class json_object(FunctionElement[Any]):
    inherit_cache = True
    name = "json_object"


class json_embed(FunctionElement[Any]):
    """A JSON column embedded as JSON, not as a string holding JSON."""

    inherit_cache = True
    name = "json_embed"


@compiles(json_array_agg, "postgresql")
def _agg_pg(element: json_array_agg, compiler: Any, **kw: Any) -> str:
    # As text: msgspec decodes it faster than the driver's JSON codec would.
    return f"CAST(json_agg({compiler.process(element.clauses, **kw)}) AS TEXT)"


@compiles(json_array_agg, "sqlite")
def _agg_sqlite(element: json_array_agg, compiler: Any, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


@compiles(json_object, "postgresql")
def _obj_pg(element: json_object, compiler: Any, **kw: Any) -> str:
    return f"json_build_object({compiler.process(element.clauses, **kw)})"


@compiles(json_object, "sqlite")
def _obj_sqlite(element: json_object, compiler: Any, **kw: Any) -> str:
    return f"json_object({compiler.process(element.clauses, **kw)})"


@compiles(json_embed, "postgresql")
def _embed_pg(element: json_embed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(json_embed, "sqlite")
def _embed_sqlite(element: json_embed, compiler: Any, **kw: Any) -> str:
    return f"json({compiler.process(element.clauses, **kw)})"


JSON_COLUMNS = {"command", "env", "metadata"}


def json_rows(table: sa.Table, columns: list[str], page: sa.Subquery, order: str) -> sa.ScalarSelect[Any]:
    """The rows of `table` for the task of the enclosing `page` row, ordered by `order`, as a JSON
    array of {column: value}."""
    inner = (
        sa.select(*(table.c[c] for c in columns))
        .where(table.c.task_id == page.c.id)
        .order_by(table.c[order])
        # A derived table is not correlated by default: without this, `page` would join the
        # subquery's FROM and every task would receive the rows of the whole page.
        .correlate(page)
        .subquery()
    )
    pairs: list[Any] = []
    for c in columns:
        value: Any = inner.c[c]
        if c in JSON_COLUMNS:
            value = json_embed(value)
        pairs.extend([sa.literal_column(f"'{c}'"), value])
    return sa.select(json_array_agg(json_object(*pairs))).select_from(inner).scalar_subquery()


class LogRow(msgspec.Struct, kw_only=True):
    attempt: int
    start_time: str | None = None
    end_time: str | None = None
    metadata: dict[str, str] | None = None


class ExecutorLogRow(msgspec.Struct, kw_only=True):
    attempt: int
    idx: int
    exit_code: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None


class OutputFileRow(msgspec.Struct, kw_only=True):
    attempt: int
    url: str
    path: str
    size_bytes: int


class SystemLogRow(msgspec.Struct, kw_only=True):
    attempt: int
    line: str


def decode_rows(raw: str | bytes | None, kind: Any) -> list[Any]:
    """Decode one aggregated JSON array (NULL when PostgreSQL aggregated no rows)."""
    if raw is None:
        return []
    # Non-strict: SQLite has no boolean type and reports 0/1.
    return msgspec.json.decode(raw, type=list[kind], strict=False)


__all__ = ["json_rows", "t"]
