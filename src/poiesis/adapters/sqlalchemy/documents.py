"""Task details in one query: each child table arrives as a JSON array per task.

`json_rows(...)` is a correlated scalar subquery that aggregates a child table's rows for one task,
in order, into a JSON array of objects; msgspec decodes the arrays straight into domain structs, so
the details of a whole page of tasks take one round trip in any view. The two databases spell the
JSON functions differently; `_SPELLINGS` hides that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


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


# How each database spells the three functions; `{}` is the arguments. PostgreSQL's aggregate is cast
# to text so that msgspec, not the driver's JSON codec, decodes it.
_SPELLINGS = {
    (json_array_agg, "postgresql"): "CAST(json_agg({}) AS TEXT)",
    (json_array_agg, "sqlite"): "json_group_array({})",
    (json_object, "postgresql"): "json_build_object({})",
    (json_object, "sqlite"): "json_object({})",
    (json_embed, "postgresql"): "{}",
    (json_embed, "sqlite"): "json({})",
}


def _spell(template: str) -> Callable[..., str]:
    def render(element: FunctionElement[Any], compiler: Any, **kw: Any) -> str:
        return template.format(compiler.process(element.clauses, **kw))

    return render


for (_function, _dialect), _template in _SPELLINGS.items():
    compiles(_function, _dialect)(_spell(_template))


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
