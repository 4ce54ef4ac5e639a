"""SQLite's page walks: the indexes walked hold the task's name, the tags are stored by task

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A page walks an index newest first (the id's, or the state's, the owner's) and checks each task
# against its filters. SQLite reads a column the index lacks from the table, one more search of a
# B-tree per task walked: with the name in the index, the tasks a name prefix rejects cost no
# search of the table. A tag filter searches the task's tags for each task walked; stored as a
# table without rowid the tags are a B-tree ordered by (task, key) holding the value, one search
# instead of the primary key's index and then the table. Figures in docs/benchmarks.md (2026-12-02,
# "SQLite's page walks"). PostgreSQL visits the row for each index entry either way (unless its
# page is all-visible) and reads tags from the task's own document, so it is left as it was.
_WALKS = {
    "ix_task_state_id": (["state", "id"], "ix_task_state_id_name", ["state", "id", "name"]),
    "ix_task_owner_id": (["owner", "id"], "ix_task_owner_id_name", ["owner", "id", "name"]),
    "ix_task_owner_state_id": (
        ["owner", "state", "id"],
        "ix_task_owner_state_id_name",
        ["owner", "state", "id", "name"],
    ),
}
_BY_ID = ("ix_task_id_name", ["id", "name"])


def _tags(without_rowid: bool) -> None:
    """Make the tag table again, with or without a rowid, keeping its rows."""
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        'CREATE TABLE tag_new (task_id VARCHAR(26) NOT NULL, "key" TEXT NOT NULL, value TEXT NOT NULL,'
        ' CONSTRAINT pk_tag PRIMARY KEY (task_id, "key"),'
        " CONSTRAINT fk_tag_task_id_task FOREIGN KEY(task_id) REFERENCES task (id) ON DELETE CASCADE)"
        f"{suffix}"
    )
    op.execute('INSERT INTO tag_new (task_id, "key", value) SELECT task_id, "key", value FROM tag')
    op.execute("DROP TABLE tag")
    op.execute("ALTER TABLE tag_new RENAME TO tag")
    op.create_index("ix_tag_key_value_task_id", "tag", ["key", "value", "task_id"])


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for old, (_, new, columns) in _WALKS.items():
        op.create_index(new, "task", columns)
        op.drop_index(old, table_name="task")
    op.create_index(_BY_ID[0], "task", _BY_ID[1])
    _tags(without_rowid=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _tags(without_rowid=False)
    op.drop_index(_BY_ID[0], table_name="task")
    for old, (columns, new, _) in _WALKS.items():
        op.create_index(old, "task", columns)
        op.drop_index(new, table_name="task")
