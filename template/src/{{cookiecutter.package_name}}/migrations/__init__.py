"""Alembic migrations: the database schema's history (`versions/`), applied as a step of its own.

`{{ cookiecutter.project_slug }} migrate` (`make migrate`, the local stack's `migrate` service, the
Kubernetes init container) brings DATABASE_URL's schema to the newest revision; the `alembic`
command reads the same script location from pyproject.toml (`[tool.alembic]`).
"""

from __future__ import annotations

import zlib

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

SCRIPT_LOCATION = "{{ cookiecutter.package_name }}:migrations"
# Pods that start together (a rollout, the autoscaler) all run `migrate`: on PostgreSQL they take
# turns on this advisory lock (env.py), so the first migrates and the others find the schema new.
MIGRATION_LOCK = zlib.crc32(b"{{ cookiecutter.package_name }} migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def upgrade(connection: Connection | None = None) -> None:
    """Apply every migration the schema does not have yet: DATABASE_URL's (env.py connects), or
    the database of an open `connection`."""
    config = alembic_config()
    if connection is not None:
        config.attributes["connection"] = connection
    command.upgrade(config, "head")
