"""the BASIC document of each task, kept with its rows

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The store's writers render `basic_document` at the end of each transaction that changes a task
# (PostgreSQL). Any other write (a recorder of an older image during an upgrade, an operator's SQL)
# clears it through these triggers, and readers render a cleared document on the fly: the document
# is never stale. Existing tasks start cleared; their next change renders them.
_POSTGRES = [
    """
CREATE FUNCTION task_basic_document_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE task SET basic_document = NULL WHERE id = NEW.task_id AND basic_document IS NOT NULL;
  RETURN NULL;
END $$""",
    """
CREATE FUNCTION task_basic_document_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.basic_document := NULL;
  RETURN NEW;
END $$""",
    # A change to the task row itself (its state) that does not set the document clears it.
    """
CREATE TRIGGER task_basic_document_keep BEFORE UPDATE ON task FOR EACH ROW
  WHEN (OLD.basic_document IS NOT NULL AND NEW.basic_document IS NOT DISTINCT FROM OLD.basic_document
        AND OLD.* IS DISTINCT FROM NEW.*)
  EXECUTE FUNCTION task_basic_document_keep()""",
    *(
        f"""
CREATE TRIGGER {table}_basic_document AFTER INSERT OR UPDATE ON {table} FOR EACH ROW
  EXECUTE FUNCTION task_basic_document_clear()"""
        for table in ("task_log", "executor_log", "output_file_log")
    ),
]
_TRIGGERS = {
    "task": "task_basic_document_keep",
    **{table: f"{table}_basic_document" for table in ("task_log", "executor_log", "output_file_log")},
}


def upgrade() -> None:
    op.add_column("task", sa.Column("basic_document", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, trigger in _TRIGGERS.items():
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute("DROP FUNCTION task_basic_document_clear()")
        op.execute("DROP FUNCTION task_basic_document_keep()")
    op.drop_column("task", "basic_document")
