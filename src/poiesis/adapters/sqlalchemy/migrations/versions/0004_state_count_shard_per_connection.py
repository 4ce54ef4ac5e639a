"""task state counts: one shard per connection

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A write picked a random shard of its state's count for every task row it changed, so a transaction
# creating several tasks (the store's group commit) took several shards in random order, and two
# such transactions deadlocked until PostgreSQL's detector broke one (a second later). The shard
# now follows the connection: one transaction takes one shard per state, in the order of the
# states' names, and concurrent connections still spread over the 16 shards.
_ADD = """
CREATE OR REPLACE FUNCTION task_state_count_add(p_state text, p_delta integer) RETURNS void LANGUAGE sql AS $$
  INSERT INTO task_state_count (state, shard, n) VALUES (p_state, {shard}, p_delta)
  ON CONFLICT (state, shard) DO UPDATE SET n = task_state_count.n + excluded.n
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ADD.format(shard="(pg_backend_pid() % 16)::smallint"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ADD.format(shard="floor(random() * 16)::smallint"))
