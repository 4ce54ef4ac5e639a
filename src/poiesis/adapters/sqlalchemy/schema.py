"""The relational schema: one table per TES object, foreign keys to the task, enum types for states.

The keyset is the primary key (`id` grows with creation time), so a page walks an index by id (with
the state or the owner before it, if filtered on) backwards and stops after `page_size` matches;
selective filters have their own indexes (state, owner, name prefix, and a GIN index on the `tags`
document on PostgreSQL). The indexes a page walks also hold the name (PostgreSQL's its first 256
characters), so a prefix is tested on the index's entry and not on the table (migrations 0010 and
0011); on SQLite the tags are stored by task without a rowid. `docs/benchmarks.md` shows the plan of
each filter combination at 100,000 tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from poiesis.domain.states import State
from poiesis.domain.tes import FileType

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcTimestamp(sa.TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite an ISO string that always reads back as UTC-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _enum(enum: type[State] | type[FileType], name: str) -> sa.Enum:
    return sa.Enum(
        enum,
        name=name,
        values_callable=lambda e: [m.value for m in e],
        create_constraint=True,
        validate_strings=True,
    )


TaskState = _enum(State, "task_state")
FileKind = _enum(FileType, "file_type")

ID = sa.String(26)


def _task_fk() -> sa.ForeignKey:
    return sa.ForeignKey("task.id", ondelete="CASCADE")


task = sa.Table(
    "task",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("state", TaskState, nullable=False),
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("cpu_cores", sa.Integer),
    sa.Column("ram_gb", sa.Float),
    sa.Column("disk_gb", sa.Float),
    sa.Column("preemptible", sa.Boolean),
    sa.Column("zones", JSON),
    sa.Column("backend_parameters", JSON),
    sa.Column("backend_parameters_strict", sa.Boolean),
    sa.Column("volumes", JSON),
    sa.Column("tags", JSON, nullable=False),
    sa.Column("basic_document", sa.Text),
    # A name prefix is checked on the index a page walks, not the table (migrations 0010, 0011).
    sa.Index(None, "id", "name").ddl_if(dialect="sqlite"),
    sa.Index(None, "state", "id", "name").ddl_if(dialect="sqlite"),
    sa.Index(None, "owner", "id", "name").ddl_if(dialect="sqlite"),
    sa.Index(None, "owner", "state", "id", "name").ddl_if(dialect="sqlite"),
    sa.Index("ix_task_name_prefix", "name", "id").ddl_if(dialect="sqlite"),
    sa.Index(
        "ix_task_tag_values", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}
    ).ddl_if(dialect="postgresql"),
)
"""`tags` repeats the tag table as one document: GIN indexes answer tag filters (PostgreSQL): one on
the document (jsonb_path_ops: a key with its value) and, made by migration 0005, one on
`task_tag_keys(tags)` (a bare key); both with a pending list of at most 256 kB (migration 0009).
`basic_document` is the task's BASIC view as the API sends it, kept by the store's writers in the
transaction of each change and cleared by triggers on any other write (migrations 0003 and 0006)."""

NAME_KEY_CHARS = 256
"""How much of a task's name (and of a tag key) PostgreSQL's indexes hold: an index entry holds at
most 2,704 bytes, and a name may be longer. A filter on a longer prefix or key tests the whole value
on the row too."""

name_key = sa.func.left(task.c.name, sa.literal_column(str(NAME_KEY_CHARS))).collate("C")
"""The indexed part of the name (PostgreSQL), written as the indexes' expression is, for the planner
to match them. In the "C" collation (bytes), a prefix is a range of them."""

for _columns in ([], ["state"], ["owner"], ["owner", "state"]):
    sa.Index(
        "_".join(["ix_task", *_columns, "id_name"]),
        *(task.c[c] for c in _columns),
        task.c.id,
        name_key,
    ).ddl_if(dialect="postgresql")
sa.Index("ix_task_name_prefix", name_key, task.c.id).ddl_if(dialect="postgresql")

task_state_count = sa.Table(
    "task_state_count",
    metadata,
    sa.Column("state", sa.String(16), primary_key=True),
    sa.Column("shard", sa.SmallInteger, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
"""How many tasks are in each state: the sum over a state's shards, kept exact by triggers on
`task` (migration 0002) in the transaction of every write. Read by the metrics, which must not count
the whole task table on every scrape."""

executor = sa.Table(
    "executor",
    metadata,
    sa.Column("task_id", ID, _task_fk(), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("command", JSON, nullable=False),
    sa.Column("workdir", sa.Text),
    sa.Column("stdin", sa.Text),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    sa.Column("env", JSON),
    sa.Column("ignore_error", sa.Boolean),
)

input_ = sa.Table(
    "input",
    metadata,
    sa.Column("task_id", ID, _task_fk(), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("type", FileKind, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("content", sa.Text),
    sa.Column("streamable", sa.Boolean),
)

output = sa.Table(
    "output",
    metadata,
    sa.Column("task_id", ID, _task_fk(), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("type", FileKind, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("path_prefix", sa.Text),
)

tag = sa.Table(
    "tag",
    metadata,
    sa.Column("task_id", ID, _task_fk(), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index(None, "key", "value", "task_id"),
    sqlite_with_rowid=False,  # a B-tree ordered by (task_id, key) that holds the value (migration 0010)
)

task_log = sa.Table(
    "task_log",
    metadata,
    sa.Column("task_id", ID, _task_fk(), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("start_time", UtcTimestamp),
    sa.Column("end_time", UtcTimestamp),
    sa.Column("metadata", JSON),
)


def _log_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["task_id", "attempt"],
        ["task_log.task_id", "task_log.attempt"],
        ondelete="CASCADE",
    )


executor_log = sa.Table(
    "executor_log",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("start_time", UtcTimestamp),
    sa.Column("end_time", UtcTimestamp),
    sa.Column("exit_code", sa.Integer),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    _log_fk(),
)

system_log = sa.Table(
    "system_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
    _log_fk(),
    sa.Index(None, "task_id", "attempt", "id"),
)

output_file_log = sa.Table(
    "output_file_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    _log_fk(),
    sa.Index(None, "task_id", "attempt", "id"),
)

state_transition = sa.Table(
    "state_transition",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("task_id", ID, _task_fk(), nullable=False),
    sa.Column("source", TaskState, nullable=False),
    sa.Column("target", TaskState, nullable=False),
    sa.Column("at", UtcTimestamp, nullable=False),
    sa.Index(None, "task_id", "id"),
)
"""The history of each task's state: every guarded transition that took effect, in order."""

idempotency_key = sa.Table(
    "idempotency_key",
    metadata,
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("task_id", ID, _task_fk(), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("owner", "key"),
)
"""The `Idempotency-Key` of each create that came with one (`domain.idempotency`): the owner's key,
the task it made and its request's SHA-256. It goes with its task."""
