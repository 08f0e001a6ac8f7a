"""Multiprocess metrics (gunicorn workers): real worker processes writing real files.

prometheus_client keeps each process's values in files named after its pid inside
PROMETHEUS_MULTIPROC_DIR. Two worker processes serve requests (and bump a team's own counter);
every scrape must merge both, and gunicorn.conf.py's hooks must clean up after a dead worker.
"""

from __future__ import annotations

import os
import runpy
{%- if cookiecutter.metrics_separate_port %}
import socket
{%- endif %}
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
{%- if cookiecutter.metrics_separate_port %}
from fastapi.testclient import TestClient
{%- endif %}
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

{% if cookiecutter.metrics_separate_port -%}
from {{ cookiecutter.package_name }}.app import create_app
{% endif -%}
from {{ cookiecutter.package_name }}.telemetry.metrics import registry_to_serve

{%- if cookiecutter.metrics_separate_port %}

from conftest import make_settings
{%- endif %}

COUNT = "http_server_request_duration_seconds_count"
GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"
# One worker's life: serve requests, count an order (a team's own metric, defined at module
# level), and die with requests still in progress. Prints its pid.
WORKER = """
import os, sys
from fastapi.testclient import TestClient
from prometheus_client import Counter
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.telemetry.metrics import ACTIVE_REQUESTS

ORDERS_CREATED = Counter("test_orders_created", "Orders created.")
requests, in_flight = int(sys.argv[1]), int(sys.argv[2])
settings = Settings(_env_file=None, run_mode="test", tenant_metrics_accounts=("acct-a",))
with TestClient(create_app(settings)) as client:
    for _ in range(requests):
        client.get("/items/1", headers={"X-Account-Id": "acct-a"})
    client.get("/items/999")
ORDERS_CREATED.inc()
for _ in range(in_flight):
    ACTIVE_REQUESTS.labels("GET").inc()
print(os.getpid())
"""


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    yield tmp_path
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


def run_worker(requests: int, in_flight: int = 0) -> int:
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", WORKER, str(requests), str(in_flight)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RUN_MODE": "test"},
    )
    return int(done.stdout.split()[-1])


def scrape() -> list[Sample]:
    """What /metrics serves in multiprocess mode (one merge of every worker's files)."""
    text = generate_latest(registry_to_serve()).decode()  # type: ignore[no-untyped-call]
    return [
        sample
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def items_count(samples: list[Sample], status: int) -> float | None:
    return value(
        samples,
        COUNT,
        http_request_method="GET",
        http_route="/items/{item_id}",
        http_response_status_code=str(status),
    )


@pytest.mark.usefixtures("multiproc_dir")
def test_totals_are_summed_over_workers_and_a_dead_workers_gauge_is_dropped() -> None:
    run_worker(requests=3)
    doomed = run_worker(requests=2, in_flight=2)

    before = scrape()
    assert items_count(before, 200) == 5
    assert items_count(before, 404) == 2
    assert value(before, "tenant_requests_total", account_id="acct-a", outcome="success") == 5
    assert value(before, "test_orders_created_total") == 2
    assert value(before, "http_server_active_requests", http_request_method="GET") == 2
    # Documented trade-offs of multiprocess mode: no exemplars, no per-process metrics.
    assert not any(s.exemplar for s in before)
    assert not any(s.name.startswith("process_") for s in before)

    # What gunicorn does when it reaps the worker (gunicorn.conf.py, child_exit).
    mark_process_dead(doomed)  # type: ignore[no-untyped-call]
    after = scrape()
    assert value(after, "http_server_active_requests", http_request_method="GET") == 0
    assert items_count(after, 200) == 5, "the dead worker's requests still count"


def load_gunicorn_conf() -> dict[str, Any]:
    return runpy.run_path(str(GUNICORN_CONF))


def test_gunicorn_conf_reads_the_environment(
    multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")

    conf = load_gunicorn_conf()

    assert conf["bind"] == ["0.0.0.0:9001"]
    assert conf["workers"] == 3
    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert conf["wsgi_app"] == "{{ cookiecutter.package_name }}.app:create_app()"
    assert conf["preload_app"] is False


def test_gunicorn_hooks_wipe_old_files_and_reap_dead_workers(multiproc_dir: Path) -> None:
    for name in ("counter_1.db", "gauge_livesum_1.db", "histogram_7.db"):
        (multiproc_dir / name).write_bytes(b"left over from an earlier run")
    conf = load_gunicorn_conf()

    conf["on_starting"](SimpleNamespace())
    assert list(multiproc_dir.iterdir()) == []

    for name in ("counter_41.db", "gauge_livesum_41.db", "gauge_livesum_42.db"):
        (multiproc_dir / name).write_bytes(b"")
    conf["child_exit"](SimpleNamespace(), SimpleNamespace(pid=41))
    assert sorted(path.name for path in multiproc_dir.iterdir()) == [
        "counter_41.db",
        "gauge_livesum_42.db",
    ]


def test_gunicorn_conf_provides_a_multiproc_dir_when_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Empty counts as unset; monkeypatch puts the original value back afterwards.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")

    load_gunicorn_conf()

    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert path.is_dir()
    path.rmdir()
{%- if cookiecutter.metrics_separate_port %}


@pytest.mark.usefixtures("capfire", "multiproc_dir")
def test_workers_leave_the_metrics_port_to_the_master() -> None:
    app = create_app(make_settings())
    port = app.state.settings.metrics_port
    with TestClient(app) as client, socket.socket() as probe:
        assert client.get("/healthz").status_code == 200
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "a worker bound METRICS_PORT"
{%- endif %}
