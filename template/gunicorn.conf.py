"""gunicorn with uvicorn workers: several processes of the service behind one port.

    WEB_CONCURRENCY=4 uv run gunicorn -c gunicorn.conf.py      # or: make run-prod

For hosts where one process per container is not an option (a VM, a large machine). In containers
keep the image's default, one uvicorn process scaled by replicas: it keeps the duration
histogram's exemplars and per-process metrics, which multiprocess metrics give up (README,
"Running in production").

Prometheus across workers: each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and
/metrics merges them all, so totals are the same whichever worker answers the scrape.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from {{ cookiecutter.package_name }}.settings import Settings

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

# prometheus-client picks its mode when a worker first imports it, so the variable must be in the
# environment before any worker starts. Without it each worker would count on its own and every
# scrape would show one worker's share.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")

settings = Settings()

wsgi_app = "{{ cookiecutter.package_name }}.app:create_app()"
worker_class = "uvicorn_worker.UvicornWorker"
bind = [f"{settings.host}:{settings.port}"]
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
# After SIGTERM, seconds the workers get to finish in-flight requests and flush telemetry.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
# A worker whose event loop is blocked this long is killed and replaced.
timeout = 30
# Same idle keep-alive as uvicorn on its own (gunicorn's default is 2 s).
keepalive = 5
# Each worker imports and builds the app after the fork: Logfire's export threads and the
# Prometheus value files belong to one process and must not be inherited from the master.
preload_app = False
# No access log: the SERVER span and the duration histogram record every request already.
accesslog = None
# In production every line on stdout is a JSON object: gunicorn's own lines too, and those of the
# uvicorn workers, which log through gunicorn's handlers. Same formatter as the service's records.
JSON_LINES: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "{{ cookiecutter.package_name }}.telemetry.logs.JsonLines"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        },
    },
    # gunicorn.access stays without a handler (accesslog = None): the service writes its own
    # request lines (ACCESS_LOG). Each worker's app configures the root logger (telemetry/logs.py).
    "loggers": {"gunicorn.error": {"handlers": ["stdout"], "propagate": False}},
    "root": {"handlers": []},
}
logconfig_dict = JSON_LINES if settings.run_mode == "production" else {}
# gunicorn 25.1+ opens a control socket under $HOME by default: not wanted in a read-only container,
# and a second instance on the same host would collide with it. (Older versions ignore this.)
control_socket_disable = True


def on_starting(server: Arbiter) -> None:
    """Start from an empty directory: files left by an earlier run would be counted again."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink()
{%- if cookiecutter.metrics_separate_port %}


def when_ready(server: Arbiter) -> None:
    """Serve the merged metrics on METRICS_PORT from the master: workers cannot share the port."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
{%- endif %}


def child_exit(server: Arbiter, worker: Worker) -> None:
    """A worker ended, cleanly or killed: drop its live gauges (its in-progress requests).

    Its counters and histograms stay: they are part of the totals.
    """
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(worker.pid)
