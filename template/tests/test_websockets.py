"""Telemetry contract: a WebSocket connection is one SERVER span, with the tenant ids, and counted.

A connection lasts as long as the client stays: it is counted in `websocket_server_*`, never in
the request duration histogram, whose latency SLO it would break.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from starlette.websockets import WebSocketDisconnect

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    logs_named,
    make_settings,
    requests_with_status,
    server_spans,
)

logger = logging.getLogger("tests.websockets")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    # The stdout handler installed by a test points at pytest's capture, which is closed after it.
    configure_logging("debug", json_lines=False)


def socket_app(capfire: CaptureLogfire) -> FastAPI:
    """Built inside the test, so that its JSON lines go to the stdout capsys captures."""
    app = create_app(
        make_settings(run_mode="production", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        logger.info("chat.message", extra={"length": len(text)})
        await websocket.send_text(text)
        await websocket.close()

    async def crash(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("socket handler failed")

    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    app.add_api_websocket_route("/ws/echo/{room}", echo)
    app.add_api_websocket_route("/ws/crash", crash)
    app.add_api_websocket_route("/ws/refuse", refuse)
    return app


def connections(route: str, outcome: str) -> float:
    labels = {"http_route": route, "outcome": outcome}
    return REGISTRY.get_sample_value("websocket_server_connections_total", labels) or 0.0


def open_connections() -> float:
    return REGISTRY.get_sample_value("websocket_server_active_connections") or 0.0


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_connection_is_one_span_with_the_tenant_ids(capfire: CaptureLogfire) -> None:
    app = socket_app(capfire)
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws/echo/lobby", headers=TENANT_HEADERS) as websocket,
    ):
        websocket.send_text("hello")
        assert websocket.receive_text() == "hello"
        accepted_with: list[tuple[bytes, bytes]] = websocket.extra_headers or []

    [span] = server_spans(capfire)
    assert span.name == "WS /ws/echo/{room}"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/ws/echo/{room}"
    assert attributes["url.path"] == "/ws/echo/lobby"
    assert attributes["network.protocol.name"] == "websocket"
    assert {k: attributes[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert span.status.status_code is StatusCode.UNSET
    assert (b"x-trace-id", format(span.context.trace_id, "032x").encode()) in accepted_with
    [record] = logs_named(capfire, "chat.message")
    assert record.context is not None
    assert record.context.trace_id == span.context.trace_id
    assert {k: (record.attributes or {})[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_connections_are_counted_apart_from_requests(capfire: CaptureLogfire) -> None:
    app = socket_app(capfire)
    closed = connections("/ws/echo/{room}", "closed")
    with TestClient(app) as client, client.websocket_connect("/ws/echo/lobby") as websocket:
        assert open_connections() == 1
        websocket.send_text("hello")
        websocket.receive_text()

    assert connections("/ws/echo/{room}", "closed") == closed + 1
    assert open_connections() == 0
    assert requests_with_status("GET", "/ws/echo/{room}", 200) == 0


def test_a_refused_connection_is_counted_as_rejected(capfire: CaptureLogfire) -> None:
    app = socket_app(capfire)
    rejected = connections("/ws/refuse", "rejected")
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/ws/refuse"),
    ):
        pass

    assert connections("/ws/refuse", "rejected") == rejected + 1


def test_a_failing_handler_is_one_error_line_and_an_error_span(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = socket_app(capfire)
    failed = connections("/ws/crash", "error")
    with (
        TestClient(app) as client,
        pytest.raises(RuntimeError),
        client.websocket_connect("/ws/crash", headers=TENANT_HEADERS) as websocket,
    ):
        websocket.receive_text()

    assert connections("/ws/crash", "error") == failed + 1
    [span] = server_spans(capfire)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    [line] = [line for line in json_lines(capsys) if line["level"] == "error"]
    assert str(line["message"]).startswith("WS /ws/crash failed in ")
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    assert {k: line[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
