"""tag indexes: new entries go straight into the index, not into a pending list

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

# A GIN index gathers new entries in a pending list (up to 4 MB) until a vacuum or a full list merges
# them, and every search reads the whole list. After a burst of creates a tag filter matching one
# task of 100,000 took 10-12 ms instead of 1-2 ms (55,000 entries pending) until autovacuum came.
# With fastupdate off each create puts its entries in place: a page's time no longer depends on
# when the index was last vacuumed. The entries already pending are merged here.
_INDEXES = ("ix_task_tag_values", "ix_task_tag_keys")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in _INDEXES:
            op.execute(f"ALTER INDEX {index} SET (fastupdate = off)")
            op.execute(f"SELECT gin_clean_pending_list('{index}'::regclass)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in _INDEXES:
            op.execute(f"ALTER INDEX {index} RESET (fastupdate)")
