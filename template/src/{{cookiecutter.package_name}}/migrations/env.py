"""How Alembic reaches the database: DATABASE_URL from the service's settings, through the
service's async driver, or a connection the caller hands in (`config.attributes["connection"]`,
as the tests do). `alembic upgrade head --sql` prints the SQL instead of running it."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from {{ cookiecutter.package_name }}.db import Base
from {{ cookiecutter.package_name }}.migrations import MIGRATION_LOCK
from {{ cookiecutter.package_name }}.settings import Settings


def run_migrations(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things, so changes are written as table copies there
    # (and as plain ALTERs on PostgreSQL): one migration serves both.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Pods migrating at once take turns (MIGRATION_LOCK), held until this transaction
            # ends; Alembic reads the current revision after it.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def connect_and_run_migrations(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=Settings().database_url, target_metadata=Base.metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := context.config.attributes.get("connection")) is not None:
    run_migrations(connection)
else:
    asyncio.run(connect_and_run_migrations(Settings().database_url))
