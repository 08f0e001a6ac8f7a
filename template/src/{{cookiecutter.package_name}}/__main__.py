"""Serve the app with uvicorn{% if cookiecutter.with_sqlalchemy %}, or migrate the database schema (`migrate`){% endif %}.

Runs as the console script `{{ cookiecutter.project_slug }}`
and as `python -m {{ cookiecutter.package_name }}`.
"""

from __future__ import annotations

import argparse
{%- if cookiecutter.with_sqlalchemy %}
import logging
{%- endif %}

import uvicorn

from .app import create_app
{%- if cookiecutter.with_sqlalchemy %}
from .migrations import upgrade
{%- endif %}
from .settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the service with uvicorn.")
{%- if cookiecutter.with_sqlalchemy %}
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "migrate"],
        default="serve",
        help="serve (the default), or migrate: bring DATABASE_URL's schema up to date and exit",
    )
{%- endif %}
    parser.add_argument("--reload", action="store_true", help="restart when the code changes")
{%- if cookiecutter.with_sqlalchemy %}
    arguments = parser.parse_args()
    if arguments.command == "migrate":
        # Alembic reports each migration it applies through std logging.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        upgrade()
        return
    reload: bool = arguments.reload
{%- else %}
    reload: bool = parser.parse_args().reload
{%- endif %}
    settings = Settings()
    uvicorn.run(
        # Reloading needs an import string: each restart builds the app anew.
        f"{__package__}.app:create_app" if reload else create_app(settings),
        factory=reload,
        reload=reload,
        reload_dirs=["src"] if reload else None,
        host=settings.host,
        port=settings.port,
        # One process per container (scale with replicas, or use gunicorn.conf.py for workers).
        # Explicit, because uvicorn otherwise reads WEB_CONCURRENCY, which platforms set, and
        # refuses to start several workers from an app object.
        workers=1,
        # Logging is configured by the app (console in development, JSON lines in production).
        log_config=None,
        # The service writes its own request lines (ACCESS_LOG), with the route and tenant ids.
        access_log=False,
    )


if __name__ == "__main__":
    main()
