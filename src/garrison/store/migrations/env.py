"""Alembic environment: run with the connection handed in by ``garrison.store.db.migrate``."""

from __future__ import annotations

from alembic import context

from garrison.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise RuntimeError("run migrations through `garrison db upgrade` (garrison.store.revisions)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
