"""task state counts, kept by triggers

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Triggers, not the application, keep the counts: every writer of any version (an API, a task's
# recorder started from an older image during an upgrade, tctl) is counted alike. A change of state
# takes the two rows in the order of their names, so two transactions never wait on each other in a
# cycle; PostgreSQL spreads concurrent writers over 16 shards of each state.
_POSTGRES = [
    """
CREATE FUNCTION task_state_count_add(p_state text, p_delta integer) RETURNS void LANGUAGE sql AS $$
  INSERT INTO task_state_count (state, shard, n) VALUES (p_state, floor(random() * 16)::smallint, p_delta)
  ON CONFLICT (state, shard) DO UPDATE SET n = task_state_count.n + excluded.n
$$""",
    """
CREATE FUNCTION task_state_count_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM task_state_count_add(NEW.state::text, 1);
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM task_state_count_add(OLD.state::text, -1);
  ELSIF OLD.state::text < NEW.state::text THEN
    PERFORM task_state_count_add(OLD.state::text, -1);
    PERFORM task_state_count_add(NEW.state::text, 1);
  ELSE
    PERFORM task_state_count_add(NEW.state::text, 1);
    PERFORM task_state_count_add(OLD.state::text, -1);
  END IF;
  RETURN NULL;
END
$$""",
    "CREATE TRIGGER task_state_count_insert AFTER INSERT OR DELETE ON task "
    "FOR EACH ROW EXECUTE FUNCTION task_state_count_keep()",
    "CREATE TRIGGER task_state_count_update AFTER UPDATE OF state ON task "
    "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION task_state_count_keep()",
]
_SQLITE_ADD = (
    "INSERT INTO task_state_count (state, shard, n) VALUES ({state}, 0, {delta}) "
    "ON CONFLICT (state, shard) DO UPDATE SET n = n + excluded.n;"
)
_SQLITE = [
    f"CREATE TRIGGER task_state_count_insert AFTER INSERT ON task BEGIN "
    f"{_SQLITE_ADD.format(state='NEW.state', delta=1)} END",
    f"CREATE TRIGGER task_state_count_delete AFTER DELETE ON task BEGIN "
    f"{_SQLITE_ADD.format(state='OLD.state', delta=-1)} END",
    f"CREATE TRIGGER task_state_count_update AFTER UPDATE OF state ON task "
    f"WHEN OLD.state IS NOT NEW.state BEGIN "
    f"{_SQLITE_ADD.format(state='OLD.state', delta=-1)} {_SQLITE_ADD.format(state='NEW.state', delta=1)} END",
]


def upgrade() -> None:
    op.create_table(
        "task_state_count",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("state", "shard"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # No task is written between the count below and the triggers taking over.
        op.execute("LOCK TABLE task IN SHARE ROW EXCLUSIVE MODE")
    for statement in _POSTGRES if postgres else _SQLITE:
        op.execute(statement)
    op.execute(
        "INSERT INTO task_state_count (state, shard, n) "
        "SELECT CAST(state AS VARCHAR(16)), 0, count(*) FROM task GROUP BY state"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER task_state_count_insert ON task")
        op.execute("DROP TRIGGER task_state_count_update ON task")
        op.execute("DROP FUNCTION task_state_count_keep()")
        op.execute("DROP FUNCTION task_state_count_add(text, integer)")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER task_state_count_{name}")
    op.drop_table("task_state_count")
