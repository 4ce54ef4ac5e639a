"""PostgreSQL's page walks: the indexes walked hold the name's first 256 characters, as do the name's
index and the tag keys' index, so any name or tag key can be stored

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A page walks an index newest first and tests each task against its filters. PostgreSQL tests a
# condition on a column of the index (any column, not only the first) on the index's entry, and
# reads the row only for the entries that pass: with the name in the walked indexes, the tasks a
# name prefix rejects cost no visit of the table (at 100,000 tasks, 30,000 newer ones of another
# name: the prefix page 5.5 -> 1.2 ms in the database, the tag with a prefix 8.4 -> 2.1 ms, four
# filters 21.8 -> 4.2 ms). The name is indexed by its first 256 characters: an index entry holds at
# most 2,704 bytes, and a task's name (or a tag key) may be longer, which failed the create. The
# page's statement tests the whole name as well when a prefix is longer than that. In the "C"
# collation, whatever the database's, a prefix is a range of the index, and the page's order (by id,
# then this) is the walked indexes' own, so the planner walks one of them and not the primary key.
_KEY = 'left(name, 256) COLLATE "C"'
_WALKS = {
    "ix_task_state_id": ("state, id", "ix_task_state_id_name", f"state, id, {_KEY}"),
    "ix_task_owner_id": ("owner, id", "ix_task_owner_id_name", f"owner, id, {_KEY}"),
    "ix_task_owner_state_id": (
        "owner, state, id",
        "ix_task_owner_state_id_name",
        f"owner, state, id, {_KEY}",
    ),
    "ix_task_name_prefix": ("name text_pattern_ops, id", "ix_task_name_prefix", f"{_KEY}, id"),
}
_BY_ID = ("ix_task_id_name", f"id, {_KEY}")

# A bare tag key's filter: the task's keys, each cut to 256 characters (the page's statement tests
# the whole key in the task's document when a key filtered on is longer).
_TAG_KEYS = """\
CREATE OR REPLACE FUNCTION task_tag_keys(tags jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ARRAY(SELECT {key} FROM jsonb_object_keys(tags) AS k)
$$"""


def _tag_keys(key: str) -> None:
    # The function's results change, so its index is made again from the rows.
    op.execute(_TAG_KEYS.format(key=key))
    op.execute("REINDEX INDEX ix_task_tag_keys")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for old, (_, new, columns) in _WALKS.items():
        op.execute(f"DROP INDEX {old}")
        op.execute(f"CREATE INDEX {new} ON task ({columns})")
    op.execute(f"CREATE INDEX {_BY_ID[0]} ON task ({_BY_ID[1]})")
    _tag_keys("left(k, 256)")


def downgrade() -> None:
    # Fails, changing nothing, while a task's name or a tag key is longer than 0010's indexes hold.
    if op.get_bind().dialect.name != "postgresql":
        return
    _tag_keys("k")
    op.execute(f"DROP INDEX {_BY_ID[0]}")
    for old, (columns, new, _) in _WALKS.items():
        op.execute(f"DROP INDEX {new}")
        op.execute(f"CREATE INDEX {old} ON task ({columns})")
