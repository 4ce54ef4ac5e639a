"""PostgreSQL's task documents (`postgres.documents`) as SQLAlchemy elements."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from poiesis.adapters.postgres import documents
from poiesis.domain.tes import View


@functools.cache
def document(view: View) -> sa.ColumnElement[Any]:
    """The document of the `task` row in the enclosing statement, in `view`, as text."""
    return sa.literal_column(documents.read(view), sa.Text).label("document")


REFRESH = sa.text(documents.refresh(":task_id"))
