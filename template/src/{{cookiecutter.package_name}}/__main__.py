"""Serve the app with uvicorn.

Runs as the console script `{{ cookiecutter.project_slug }}`
and as `python -m {{ cookiecutter.package_name }}`.
"""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app
from .settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the service with uvicorn.")
    parser.add_argument("--reload", action="store_true", help="restart when the code changes")
    reload: bool = parser.parse_args().reload
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
