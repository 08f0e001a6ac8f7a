"""Telemetry contract: background work is not request time, and its failure is not a 5xx.

Starlette runs a response's background tasks inside the request's ASGI call, after the body is
sent: the request is over by then, so its duration, metrics and SERVER span end at the response,
and the work after it is a `request.background` child span with the tenant ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from starlette.types import Message

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    empty_body,
    finished_spans,
    http_scope,
    logs_named,
    make_settings,
    outcomes,
    requests_with_status,
    server_spans,
)

BACKGROUND_SECONDS = 0.5
logger = logging.getLogger("tests.background")


def app_with_background_work(capfire: CaptureLogfire, **settings: Any) -> FastAPI:
    app = create_app(
        make_settings(**settings),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    app.state.background_started_ns = []

    def send_report() -> None:
        app.state.background_started_ns.append(time.time_ns())
        time.sleep(BACKGROUND_SECONDS)
        logger.info("report.sent")

    def fail() -> None:
        logger.info("report.started")
        raise RuntimeError("report failed")

    async def later(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(send_report)
        return {"status": "accepted"}

    async def later_failing(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(fail)
        return {"status": "accepted"}

    app.add_api_route("/later", later)
    app.add_api_route("/later-failing", later_failing)
    return app


def request_metrics(route: str) -> tuple[float, float]:
    """The duration histogram's count and sum for a GET route that answered 200."""
    labels = {"http_request_method": "GET", "http_route": route, "http_response_status_code": "200"}
    return (
        REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0,
        REGISTRY.get_sample_value("http_server_request_duration_seconds_sum", labels) or 0.0,
    )


def background_spans(capfire: CaptureLogfire) -> list[ReadableSpan]:
    return [span for span in finished_spans(capfire) if span.name == "request.background"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("debug", json_lines=False)


def test_request_time_ends_when_the_response_is_sent(capfire: CaptureLogfire) -> None:
    app = app_with_background_work(capfire)
    count, total = request_metrics("/later")
    with TestClient(app) as client:
        assert client.get("/later", headers=TENANT_HEADERS).status_code == 200

    new_count, new_total = request_metrics("/later")
    assert new_count == count + 1
    assert new_total - total < BACKGROUND_SECONDS, "the background task counted as request time"
    [server] = server_spans(capfire)
    [started_ns] = app.state.background_started_ns
    assert server.end_time is not None
    assert server.end_time <= started_ns, "the request span outlasted its response"


async def test_the_request_is_counted_before_its_response_goes_out(
    capfire: CaptureLogfire,
) -> None:
    # A client holding its response (a test, a probe, a caller reading /metrics next) finds the
    # request in the metrics and its span ended: both are written before the last chunk is sent.
    app = app_with_background_work(capfire)

    async def now() -> dict[str, str]:
        return {"status": "done"}

    app.add_api_route("/now", now)
    count, _ = request_metrics("/now")
    seen_at_last_chunk: list[tuple[float, int]] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_last_chunk.append((request_metrics("/now")[0], len(server_spans(capfire))))

    await app(http_scope("GET", "/now"), empty_body, send)

    assert seen_at_last_chunk == [(count + 1, 1)]


def test_background_work_is_a_child_span_with_the_tenant_ids(capfire: CaptureLogfire) -> None:
    with TestClient(app_with_background_work(capfire)) as client:
        client.get("/later", headers=TENANT_HEADERS)

    [server] = server_spans(capfire)
    [background] = background_spans(capfire)
    assert background.parent is not None
    assert background.parent.span_id == server.context.span_id
    assert background.start_time is not None
    assert background.end_time is not None
    assert (background.end_time - background.start_time) / 1e9 >= BACKGROUND_SECONDS
    attributes = dict(background.attributes or {})
    assert attributes["http.route"] == "/later"
    assert {k: attributes[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert background.status.status_code is StatusCode.UNSET
    [record] = logs_named(capfire, "report.sent")
    assert {k: (record.attributes or {})[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_a_request_without_background_work_has_no_background_span(
    client: TestClient, capfire: CaptureLogfire
) -> None:
    client.get("/items/1")

    assert len(server_spans(capfire)) == 1
    assert background_spans(capfire) == []


@pytest.mark.usefixtures("restore_logging")
def test_failing_background_work_is_an_error_line_and_span_not_a_5xx(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_with_background_work(capfire, run_mode="production", logfire_trace_sample_rate=1.0)
    ok, failed = (requests_with_status("GET", "/later-failing", s) for s in (200, 500))
    counted = outcomes()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/later-failing", headers=TENANT_HEADERS).status_code == 200

    assert requests_with_status("GET", "/later-failing", 200) == ok + 1
    assert requests_with_status("GET", "/later-failing", 500) == failed
    assert outcomes() == {**counted, "success": counted["success"] + 1}

    [server] = server_spans(capfire)
    assert server.status.status_code is StatusCode.UNSET
    assert (server.attributes or {})["http.response.status_code"] == 200
    assert "error.type" not in (server.attributes or {})
    [background] = background_spans(capfire)
    assert background.status.status_code is StatusCode.ERROR
    assert (background.attributes or {})["error.type"] == "RuntimeError"
    [event] = [e for e in background.events if e.name == "exception"]
    assert (event.attributes or {})["exception.message"] == "report failed"

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [error] = [line for line in lines if line["level"] == "error"]
    assert error["message"].startswith("GET /later-failing background work failed")
    assert "RuntimeError: report failed" in error["exc_info"]
    assert error["trace_id"] == format(server.context.trace_id, "032x")
    assert {k: error[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
