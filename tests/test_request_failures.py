"""A failing request and a client that goes away, seen from outside a booted service.

The all-features service runs as its console script, in production (JSON lines on stdout), with
LOGFIRE_TRACE_SAMPLE_RATE=0 (no ordinary request is recorded: a failure's span is recorded after
the fact) and OTLP export to a receiver in this process. Its SQLite database loses the `notes`
table while it runs, so `GET /notes/1` raises an unhandled OperationalError, the way a migration
gone wrong would. A raw socket sends half a `POST /notes` body and hangs up. After a real SIGTERM
(the shutdown flush delivers the spans), the tests check what a team would look at: one error
line for the failure, with the trace and tenant ids, no "Exception in ASGI application" copy of
it from uvicorn, a response header naming the trace the receiver got, and the vanished client
counted as 499 without any error.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.otlp_receiver import OtlpReceiver, Span
from helpers.process import ServiceProcess, Stopped, free_port, service_env
from helpers.project_env import ProjectEnv
from helpers.prometheus import MetricKey, scrape

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

TENANT = {"X-Account-Id": "acct-fail", "X-Session-Id": "sess-fail"}
TENANT_IDS = {"account_id": "acct-fail", "session_id": "sess-fail"}
ROUTE = "/notes/{note_id}"


Metrics = dict[MetricKey, float]


@dataclass
class FailureRun:
    failed: httpx.Response
    stopped: Stopped
    spans: list[Span]
    metrics: Metrics

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stopped.stdout.splitlines() if line.startswith("{")]


def hang_up_mid_body(port: int) -> None:
    """A client that sends half its request body and goes away."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(
            b"POST /notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\nX-Account-Id: acct-gone\r\n\r\n{"text": "half'
        )


def requests_counted(metrics: Metrics, **labels: str) -> float:
    key = ("http_server_request_duration_seconds_count", frozenset(labels.items()))
    return metrics.get(key, 0.0)


@pytest.fixture(scope="module")
def run(
    project_env: Callable[[str, str], ProjectEnv],
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
) -> FailureRun:
    project = project_env("copier", "all_features")
    database = tmp_path_factory.mktemp("failures") / "notes.db"
    with OtlpReceiver() as receiver:
        port, metrics_port = free_port(), free_port()
        env = service_env(
            project.env(),
            port=port,
            otlp_endpoint=receiver.endpoint,
            LOGFIRE_TRACE_SAMPLE_RATE="0.0",
            DATABASE_URL=f"sqlite+aiosqlite:///{database}",
            METRICS_PORT=str(metrics_port),
            REDIS_URL=redis_url,  # all_features is ready with its Redis
        )
        # Nothing creates tables at startup: the schema is the migration step's job.
        project.run(str(project.console_script), "migrate", env=env)
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            created = httpx.post(service.url + "/notes", json={"text": "kept"}, timeout=10)
            assert created.status_code == 201, service.describe()
            drop_notes_table(database)
            failed = httpx.get(service.url + "/notes/1", headers=TENANT, timeout=10)
            hang_up_mid_body(port)
            metrics = wait_for_499(f"http://127.0.0.1:{metrics_port}/metrics")
            stopped = service.stop()
        spans = receiver.spans
    return FailureRun(failed, stopped, spans, metrics)


def drop_notes_table(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE notes")


def wait_for_499(metrics_url: str) -> Metrics:
    """The server notices the vanished client on its own time: the metrics once it counted it (or
    after 15 s, for the test to say what it saw instead)."""
    labels = {"http_request_method": "POST", "http_route": "/notes", "http_response_status_code": "499"}
    deadline = time.monotonic() + 15
    metrics = scrape(metrics_url)
    while not requests_counted(metrics, **labels) and time.monotonic() < deadline:
        time.sleep(0.1)
        metrics = scrape(metrics_url)
    return metrics


def test_a_failure_is_one_error_line_with_its_trace_and_tenant_ids(run: FailureRun) -> None:
    assert run.failed.status_code == 500
    errors = [line for line in run.json_lines() if line["level"] == "error"]
    assert len(errors) == 1, errors
    [line] = errors
    assert line["message"].startswith(f"GET {ROUTE} 500 in ")
    assert "OperationalError" in line["error.type"]
    assert "no such table: notes" in line["exc_info"]
    assert line["trace_id"] == run.failed.headers["X-Trace-Id"]
    assert {name: line[name] for name in TENANT_IDS} == TENANT_IDS


def test_the_server_does_not_log_it_again(run: FailureRun) -> None:
    output = run.stopped.stdout + run.stopped.stderr
    assert "Exception in ASGI application" not in output, str(run.stopped)
    assert "Traceback" not in run.stopped.stderr, str(run.stopped)
    assert not [span for span in run.spans if "Exception in ASGI application" in span.name]


def test_the_response_names_the_trace_that_was_kept(run: FailureRun) -> None:
    trace_id = run.failed.headers["X-Trace-Id"]
    [server] = [span for span in run.spans if span.kind == "SERVER" and span.trace_id == trace_id]
    assert server.name == f"GET {ROUTE}"
    assert server.status_code == "ERROR"
    assert server.attributes["sampling.kept_because"] == "error"
    assert {name: server.attributes[name] for name in TENANT_IDS} == TENANT_IDS
    [record] = [span for span in run.spans if span.is_log and span.parent == server.span_id]
    assert record.attributes["logfire.msg"].startswith(f"GET {ROUTE} 500 in ")


def test_a_client_that_hung_up_is_499_not_an_error(run: FailureRun) -> None:
    gone = {"http_request_method": "POST", "http_route": "/notes"}
    assert requests_counted(run.metrics, **gone, http_response_status_code="499") == 1
    assert requests_counted(run.metrics, **gone, http_response_status_code="400") == 0
    assert requests_counted(run.metrics, **gone, http_response_status_code="500") == 0
    client_closed = sum(
        value
        for (name, labels), value in run.metrics.items()
        if name == "tenant_requests_total" and ("outcome", "client_closed") in labels
    )
    assert client_closed == 1
    lines = [line for line in run.json_lines() if line.get("http.route") == "/notes"]
    assert all(line["level"] != "error" for line in lines), lines
