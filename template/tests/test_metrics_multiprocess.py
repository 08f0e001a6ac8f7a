"""Multiprocess metrics (gunicorn workers), simulated in one process with real files.

prometheus-client keeps each process's values in files named after its pid inside
PROMETHEUS_MULTIPROC_DIR. Two "workers" are two apps whose values are written under two fake pids;
every scrape must merge both, and gunicorn.conf.py's hooks must clean up after a dead worker.
"""

from __future__ import annotations

import os
import runpy
{%- if cookiecutter.metrics_separate_port %}
import socket
{%- endif %}
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead
{%- if cookiecutter.metrics_separate_port %}
from prometheus_client.openmetrics.exposition import generate_latest
{%- endif %}
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.metrics import HttpMetrics{% if cookiecutter.metrics_separate_port %}, multiprocess_registry{% endif %}

from conftest import make_settings

COUNT = "http_server_request_duration_seconds_count"
ROUTE = "/items/{item_id}"
GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    yield tmp_path
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]


def as_worker(pid: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, new metric values are written to this pid's files (as after a fork)."""
    value_class = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]
    monkeypatch.setattr(values, "ValueClass", value_class)


def worker_app() -> FastAPI:
    return create_app(make_settings())


def merged(client: TestClient, multiproc_dir: Path) -> list[Sample]:
    """One scrape, as Prometheus would get it (OpenMetrics)."""
{%- if cookiecutter.metrics_separate_port %}
    # With METRICS_PORT, gunicorn's master serves this registry (gunicorn.conf.py, when_ready).
    del client
    registry = multiprocess_registry(str(multiproc_dir))
    text = generate_latest(registry).decode()  # type: ignore[no-untyped-call]
{%- else %}
    del multiproc_dir
    response = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    text = response.text
{%- endif %}
    return [
        sample
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    ]


def value(scrape: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in scrape if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def items_count(scrape: list[Sample], status: int) -> float | None:
    return value(
        scrape,
        COUNT,
        http_request_method="GET",
        http_route=ROUTE,
        http_response_status_code=str(status),
    )


@pytest.mark.usefixtures("capfire")
def test_totals_are_summed_over_workers_whichever_answers(
    multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_worker(1001, monkeypatch)
    with TestClient(worker_app()) as first:
        for _ in range(3):
            first.get("/items/1")
        first.get("/items/999")
        as_worker(1002, monkeypatch)
        with TestClient(worker_app()) as second:
            for _ in range(2):
                second.get("/items/1", headers={"X-Account-Id": "acct-a"})

            scrapes = [merged(first, multiproc_dir), merged(second, multiproc_dir)]

    assert sorted(path.name for path in multiproc_dir.iterdir()) == [
        f"{kind}_{pid}.db"
        for kind in ("counter", "gauge_livesum", "histogram")
        for pid in (1001, 1002)
    ]
    for scrape in scrapes:
        assert items_count(scrape, 200) == 5
        assert items_count(scrape, 404) == 1
        assert value(scrape, "tenant_requests_total", account_id="none", outcome="success") == 4
        assert value(scrape, "tenant_requests_total", account_id="acct-a", outcome="success") == 2
        assert value(scrape, "http_server_active_requests", http_request_method="GET") == 0
        # Documented trade-offs of multiprocess mode: no exemplars, no per-process metrics.
        assert not any(s.exemplar for s in scrape)
        assert not any(s.name.startswith("process_") for s in scrape)


@pytest.mark.usefixtures("capfire")
def test_a_dead_workers_in_progress_requests_are_dropped(
    multiproc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_worker(2001, monkeypatch)
    with TestClient(worker_app()) as doomed:
        doomed.get("/items/1")
        metrics: HttpMetrics = doomed.app.state.metrics  # type: ignore[attr-defined]
        for _ in range(2):  # two requests in flight when the worker is killed
            metrics.request_started("GET")
        as_worker(2002, monkeypatch)
        with TestClient(worker_app()) as survivor:
            survivor.get("/items/1")
            before = merged(survivor, multiproc_dir)
            # What gunicorn does when it reaps the worker (gunicorn.conf.py, child_exit).
            mark_process_dead(2001)  # type: ignore[no-untyped-call]
            after = merged(survivor, multiproc_dir)

    assert value(before, "http_server_active_requests", http_request_method="GET") == 2
    assert value(after, "http_server_active_requests", http_request_method="GET") == 0
    assert items_count(after, 200) == 2, "the dead worker's requests still count"


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
    app = worker_app()
    port = app.state.settings.metrics_port
    with TestClient(app) as client, socket.socket() as probe:
        assert client.get("/readyz").status_code == 200
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "a worker bound METRICS_PORT"
{%- endif %}
