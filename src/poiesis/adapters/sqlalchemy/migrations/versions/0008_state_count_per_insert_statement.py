"""task state counts: one upsert per insert statement, not per task row

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Concurrent creates are inserted together, several tasks in one statement: the inserted tasks are
# counted once per statement, from its transition table, one upsert per state among them (in the
# order of names, into the connection's shard, as the row trigger of 0007 does). A row trigger made
# one upsert per task. Updates and deletes keep the row trigger (a state change is one task's).
# A transition table belongs to a trigger of one event, so deletes get a trigger of their own.
_POSTGRES = [
    """
CREATE FUNCTION task_state_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_state_count (state, shard, n)
  SELECT state::text, (pg_backend_pid() % 16)::smallint, count(*) FROM inserted GROUP BY 1 ORDER BY 1
  ON CONFLICT (state, shard) DO UPDATE SET n = task_state_count.n + excluded.n;
  RETURN NULL;
END
$$""",
    "DROP TRIGGER task_state_count_insert ON task",
    "CREATE TRIGGER task_state_count_delete AFTER DELETE ON task "
    "FOR EACH ROW EXECUTE FUNCTION task_state_count_keep()",
    "CREATE TRIGGER task_state_count_insert AFTER INSERT ON task REFERENCING NEW TABLE AS inserted "
    "FOR EACH STATEMENT EXECUTE FUNCTION task_state_count_inserted()",
]
_BACK = [
    "DROP TRIGGER task_state_count_insert ON task",
    "DROP TRIGGER task_state_count_delete ON task",
    "DROP FUNCTION task_state_count_inserted()",
    "CREATE TRIGGER task_state_count_insert AFTER INSERT OR DELETE ON task "
    "FOR EACH ROW EXECUTE FUNCTION task_state_count_keep()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _BACK:
            op.execute(statement)
