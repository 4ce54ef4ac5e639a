"""Alembic environment: migrations run on a connection handed over by `engine.migrate`."""

from __future__ import annotations

from alembic import context

from poiesis.adapters.sqlalchemy.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `poiesis migrate`, which provides the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
context.run_migrations()
