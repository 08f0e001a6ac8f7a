"""Serve the app with uvicorn.

Runs as the console script `{{ cookiecutter.project_slug }}`
and as `python -m {{ cookiecutter.package_name }}`.
"""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # One process per container (scale with replicas, or use gunicorn.conf.py for workers).
        # Explicit, because uvicorn otherwise reads WEB_CONCURRENCY, which platforms set, and
        # refuses to start several workers from an app object.
        workers=1,
        # Logging is configured by the app (console in development, JSON lines in production).
        log_config=None,
        # The SERVER span and the duration histogram already record every request.
        access_log=False,
    )


if __name__ == "__main__":
    main()
