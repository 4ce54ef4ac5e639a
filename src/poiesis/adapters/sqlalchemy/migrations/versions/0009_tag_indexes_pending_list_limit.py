"""tag indexes: a pending list of 256 kB, not 4 MB

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A GIN index gathers new entries in a pending list until a vacuum merges them or the list passes
# gin_pending_list_limit (4 MB by default), and every search reads the whole list. At 100,000 tasks
# with 55,000 entries pending (a burst of creates), the one-task tag page took 10-12 ms in the
# database instead of 1-2 ms. Capped at 256 kB the list holds a few thousand entries (under 1 ms
# more for a search when full) and is still merged in batches: PostgreSQL's CPU per create 0.178 ms
# against 0.169 ms with 4 MB (the merge counted in), 0.247 ms with no list at all (fastupdate off),
# `benchmarks/create_group.py`. The entries already pending are merged here.
_INDEXES = ("ix_task_tag_values", "ix_task_tag_keys")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in _INDEXES:
            op.execute(f"ALTER INDEX {index} SET (gin_pending_list_limit = 256)")
            op.execute(f"SELECT gin_clean_pending_list('{index}'::regclass)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in _INDEXES:
            op.execute(f"ALTER INDEX {index} RESET (gin_pending_list_limit)")
