"""task state counts: the upsert written in the trigger itself

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The trigger called the SQL function task_state_count_add for each change, and PostgreSQL plans a
# SQL function's statement on every call: planning that upsert was most of the trigger's cost, a
# third of PostgreSQL's time per create. A PL/pgSQL function keeps the plans of its own statements
# for the session. Same rows as before: the connection's shard, two states in the order of names.
_UPSERT = """INSERT INTO task_state_count (state, shard, n) VALUES ({state}, p_shard, {delta})
    ON CONFLICT (state, shard) DO UPDATE SET n = task_state_count.n + excluded.n;"""
_KEEP = f"""
CREATE OR REPLACE FUNCTION task_state_count_keep() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  p_shard smallint := (pg_backend_pid() % 16)::smallint;
  first_state text;
  first_delta integer;
  second_state text;
  second_delta integer;
BEGIN
  IF TG_OP = 'INSERT' THEN
    first_state := NEW.state::text; first_delta := 1;
  ELSIF TG_OP = 'DELETE' THEN
    first_state := OLD.state::text; first_delta := -1;
  ELSIF OLD.state::text < NEW.state::text THEN
    first_state := OLD.state::text; first_delta := -1; second_state := NEW.state::text; second_delta := 1;
  ELSE
    first_state := NEW.state::text; first_delta := 1; second_state := OLD.state::text; second_delta := -1;
  END IF;
  {_UPSERT.format(state="first_state", delta="first_delta")}
  IF second_state IS NOT NULL THEN
    {_UPSERT.format(state="second_state", delta="second_delta")}
  END IF;
  RETURN NULL;
END
$$"""
# Revision 0002's trigger function, calling task_state_count_add (which 0004 left in place).
_CALLING = """
CREATE OR REPLACE FUNCTION task_state_count_keep() RETURNS trigger LANGUAGE plpgsql AS $$
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
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_KEEP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CALLING)
