"""the BASIC document of each task kept on SQLite too

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As on PostgreSQL (0003): the store renders `basic_document` last in each transaction that changes
# a task, and any other write clears it, so a reader never sees a stale one and renders a cleared
# one itself. A write to the task row clears it unless it sets the document itself (the store's);
# SQLite's trigger names the columns, so a column added to `task` later joins the list here.
_TASK_COLUMNS = (
    "state, name, description, cpu_cores, ram_gb, disk_gb, preemptible, zones, backend_parameters, "
    "backend_parameters_strict, volumes, tags, owner, created_at"
)
_CLEAR = "UPDATE task SET basic_document = NULL WHERE id = NEW.{key} AND basic_document IS NOT NULL;"
_SQLITE = {
    "task_basic_document_keep": (
        f"CREATE TRIGGER task_basic_document_keep AFTER UPDATE OF {_TASK_COLUMNS} ON task FOR EACH ROW "
        "WHEN NEW.basic_document IS OLD.basic_document AND OLD.basic_document IS NOT NULL "
        f"BEGIN {_CLEAR.format(key='id')} END"
    ),
    **{
        f"{table}_basic_document_{event.lower()}": (
            f"CREATE TRIGGER {table}_basic_document_{event.lower()} AFTER {event} ON {table} FOR EACH ROW "
            f"BEGIN {_CLEAR.format(key='task_id')} END"
        )
        for table in ("task_log", "executor_log", "output_file_log")
        for event in ("INSERT", "UPDATE")
    },
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE.values():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in _SQLITE:
            op.execute(f"DROP TRIGGER {trigger}")
