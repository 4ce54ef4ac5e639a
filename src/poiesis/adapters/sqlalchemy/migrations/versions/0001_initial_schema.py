"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "UNKNOWN",
                "QUEUED",
                "INITIALIZING",
                "RUNNING",
                "PAUSED",
                "COMPLETE",
                "EXECUTOR_ERROR",
                "SYSTEM_ERROR",
                "CANCELED",
                "PREEMPTED",
                "CANCELING",
                name="task_state",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("cpu_cores", sa.Integer(), nullable=True),
        sa.Column("ram_gb", sa.Float(), nullable=True),
        sa.Column("disk_gb", sa.Float(), nullable=True),
        sa.Column("preemptible", sa.Boolean(), nullable=True),
        sa.Column("zones", JSON, nullable=True),
        sa.Column("backend_parameters", JSON, nullable=True),
        sa.Column("backend_parameters_strict", sa.Boolean(), nullable=True),
        sa.Column("volumes", JSON, nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
    )
    op.create_index(
        "ix_task_name_prefix",
        "task",
        ["name", "id"],
        unique=False,
        postgresql_ops={"name": "text_pattern_ops"},
    )
    op.create_index(op.f("ix_task_owner_id"), "task", ["owner", "id"], unique=False)
    op.create_index(op.f("ix_task_owner_state_id"), "task", ["owner", "state", "id"], unique=False)
    op.create_index(op.f("ix_task_state_id"), "task", ["state", "id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_task_tags", "task", ["tags"], unique=False, postgresql_using="gin")
    op.create_table(
        "executor",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("command", JSON, nullable=False),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.Column("stdin", sa.Text(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=True),
        sa.Column("stderr", sa.Text(), nullable=True),
        sa.Column("env", JSON, nullable=True),
        sa.Column("ignore_error", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_executor_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "idx", name=op.f("pk_executor")),
    )
    op.create_table(
        "input",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column(
            "type",
            sa.Enum("FILE", "DIRECTORY", name="file_type", create_constraint=True),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("streamable", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_input_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "idx", name=op.f("pk_input")),
    )
    op.create_table(
        "output",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column(
            "type",
            sa.Enum("FILE", "DIRECTORY", name="file_type", create_constraint=True),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("path_prefix", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_output_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "idx", name=op.f("pk_output")),
    )
    op.create_table(
        "state_transition",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "UNKNOWN",
                "QUEUED",
                "INITIALIZING",
                "RUNNING",
                "PAUSED",
                "COMPLETE",
                "EXECUTOR_ERROR",
                "SYSTEM_ERROR",
                "CANCELED",
                "PREEMPTED",
                "CANCELING",
                name="task_state",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "target",
            sa.Enum(
                "UNKNOWN",
                "QUEUED",
                "INITIALIZING",
                "RUNNING",
                "PAUSED",
                "COMPLETE",
                "EXECUTOR_ERROR",
                "SYSTEM_ERROR",
                "CANCELED",
                "PREEMPTED",
                "CANCELING",
                name="task_state",
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_state_transition_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_transition")),
    )
    op.create_index(
        op.f("ix_state_transition_task_id_id"),
        "state_transition",
        ["task_id", "id"],
        unique=False,
    )
    op.create_table(
        "tag",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_tag_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "key", name=op.f("pk_tag")),
    )
    op.create_index(
        op.f("ix_tag_key_value_task_id"),
        "tag",
        ["key", "value", "task_id"],
        unique=False,
    )
    op.create_table(
        "task_log",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name=op.f("fk_task_log_task_id_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_task_log")),
    )
    op.create_table(
        "executor_log",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=True),
        sa.Column("stderr", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id", "attempt"],
            ["task_log.task_id", "task_log.attempt"],
            name=op.f("fk_executor_log_task_id_task_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", "idx", name=op.f("pk_executor_log")),
    )
    op.create_table(
        "output_file_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "attempt"],
            ["task_log.task_id", "task_log.attempt"],
            name=op.f("fk_output_file_log_task_id_task_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_output_file_log")),
    )
    op.create_index(
        op.f("ix_output_file_log_task_id_attempt_id"),
        "output_file_log",
        ["task_id", "attempt", "id"],
        unique=False,
    )
    op.create_table(
        "system_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "attempt"],
            ["task_log.task_id", "task_log.attempt"],
            name=op.f("fk_system_log_task_id_task_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_log")),
    )
    op.create_index(
        op.f("ix_system_log_task_id_attempt_id"),
        "system_log",
        ["task_id", "attempt", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_system_log_task_id_attempt_id"), table_name="system_log")
    op.drop_table("system_log")
    op.drop_index(op.f("ix_output_file_log_task_id_attempt_id"), table_name="output_file_log")
    op.drop_table("output_file_log")
    op.drop_table("executor_log")
    op.drop_table("task_log")
    op.drop_index(op.f("ix_tag_key_value_task_id"), table_name="tag")
    op.drop_table("tag")
    op.drop_index(op.f("ix_state_transition_task_id_id"), table_name="state_transition")
    op.drop_table("state_transition")
    op.drop_table("output")
    op.drop_table("input")
    op.drop_table("executor")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_task_tags", table_name="task", postgresql_using="gin")
    op.drop_index(op.f("ix_task_state_id"), table_name="task")
    op.drop_index(op.f("ix_task_owner_state_id"), table_name="task")
    op.drop_index(op.f("ix_task_owner_id"), table_name="task")
    op.drop_index(
        "ix_task_name_prefix",
        table_name="task",
        postgresql_ops={"name": "text_pattern_ops"},
    )
    op.drop_table("task")
    sa.Enum(name="file_type").drop(op.get_bind(), checkfirst=True)
    sa.Enum(name="task_state").drop(op.get_bind(), checkfirst=True)
