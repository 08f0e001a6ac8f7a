"""Telemetry contract: what reaches stdout in each run mode."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging

from conftest import (
    TENANT_ATTRIBUTES,
    TENANT_HEADERS,
    add_probe_routes,
    make_settings,
    server_spans,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    # The stdout handler installed by a test points at pytest's capture, which is closed after it.
    configure_logging("debug", json_lines=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stdout(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_production_writes_one_json_object_per_line(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(run_mode="production", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/3", headers=TENANT_HEADERS)

    out = stdout(capsys)
    assert all(line.startswith("{") for line in out.splitlines())
    [event] = [line for line in json_lines(out) if line["message"] == "item.fetched"]
    [span] = server_spans(capfire)
    assert event["level"] == "info"
    assert event["logger"] == "{{ cookiecutter.package_name }}.api.items"
    assert event["item_id"] == 3
    assert event["trace_id"] == format(span.context.trace_id, "032x")
    assert len(event["span_id"]) == 16
    assert {k: event[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert "timestamp" in event


{% if cookiecutter.with_loguru -%}
def test_production_json_includes_loguru_records(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    from loguru import logger as loguru_logger

    create_app(
        make_settings(run_mode="production"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    loguru_logger.bind(order_id=7).warning("order.delayed")

    [line] = [e for e in json_lines(stdout(capsys)) if e["message"] == "order.delayed"]
    assert line["level"] == "warning"
    assert line["order_id"] == 7


{% endif -%}
def test_production_logs_unsampled_requests_too(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(run_mode="production", logfire_trace_sample_rate=0.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1", headers=TENANT_HEADERS)

    [event] = [e for e in json_lines(stdout(capsys)) if e["message"] == "item.fetched"]
    assert len(event["trace_id"]) == 32
    assert {k: event[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    assert server_spans(capfire) == []


def test_unsampled_json_lines_carry_tenant_ids_wherever_code_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The ids travel as baggage in the context, which threads, `to_thread` and background tasks
    # inherit, whether the trace is exported or not.
    app = create_app(make_settings(run_mode="production", logfire_trace_sample_rate=0.0))
    add_probe_routes(app)
    with TestClient(app) as client:
        for path in ("/probe/threadpool", "/probe/to-thread", "/probe/background"):
            assert client.get(path, headers=TENANT_HEADERS).status_code == 200
        client.get("/items/2")

    lines = {e["message"]: e for e in json_lines(stdout(capsys))}
    for message in ("probe.threadpool", "probe.to_thread", "probe.background"):
        assert {k: lines[message].get(k) for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES
    # The next request on the same client has no tenant headers: nothing carried over.
    assert not set(TENANT_ATTRIBUTES) & set(lines["item.fetched"])


def test_production_level_defaults_to_info(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(
        make_settings(run_mode="production"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").debug("debug.hidden")
    logging.getLogger("tests").info("info.shown")

    messages = [e["message"] for e in json_lines(stdout(capsys))]
    assert "info.shown" in messages
    assert "debug.hidden" not in messages


def test_log_level_setting_applies(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(
        make_settings(run_mode="production", log_level="warning"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").info("info.hidden")
    logging.getLogger("tests").warning("warning.shown")

    lines = json_lines(stdout(capsys))
    assert [e["message"] for e in lines if e["logger"] == "tests"] == ["warning.shown"]


def test_development_console_shows_each_request_and_rejected_headers(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(run_mode="development"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1", headers=TENANT_HEADERS)
        client.get("/items/42", headers={"X-Account-Id": "acct-42", "X-Session-Id": "bad id"})

    out = stdout(capsys)
    assert json_lines(out) == []
    assert "item.fetched" in out
    assert "GET /items/1" in out  # the request, as it starts
    lines = out.splitlines()
    [done] = [line for line in lines if "GET /items/{item_id} 200 in " in line]
    assert done.endswith(
        " ms account_id=acct-42 agent_instance_id=agent-7 session_id=sess-123"
        " llm_request_id=llmreq-9"
    )
    [missing] = [line for line in lines if "GET /items/{item_id} 404 in " in line]
    assert missing.endswith(" ms account_id=acct-42")
    assert any("Dropped an invalid session_id header value" in line for line in lines)


def lines_for(app_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> list[Any]:
    app = create_app(make_settings(run_mode="production", **app_settings))

    def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/crash", crash)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/items/1", headers=TENANT_HEADERS)
        client.get("/items/999")
        client.get("/crash", headers=TENANT_HEADERS)
    return [e for e in json_lines(stdout(capsys)) if "http.response.status_code" in e]


def test_every_server_error_writes_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    [line] = lines_for({}, capsys)

    assert line["level"] == "error"
    assert line["message"].startswith("GET /crash 500 in ")
    assert line["http.route"] == "/crash"
    assert line["error.type"] == "RuntimeError"
    assert "RuntimeError: boom" in line["exc_info"]
    assert len(line["trace_id"]) == 32
    assert {k: line[k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_access_log_setting_writes_a_line_per_request(capsys: pytest.CaptureFixture[str]) -> None:
    lines = lines_for({"access_log": True}, capsys)

    assert [(e["level"], e["http.response.status_code"]) for e in lines] == [
        ("info", 200),
        ("info", 404),
        ("error", 500),
    ]
    assert lines[0]["http.route"] == "/items/{item_id}"


def test_library_warnings_are_json_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    # pytest restores `warnings.showwarning` after each test; logging must hook it again.
    logging.captureWarnings(False)
    create_app(make_settings(run_mode="production"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    logging.getLogger("opentelemetry.exporter.otlp").warning("Failed to export batch")

    captured = capsys.readouterr()
    assert captured.err == ""
    lines = json_lines(captured.out)
    assert len(lines) == len(captured.out.splitlines())
    assert any("DeprecationWarning: old API" in e["message"] for e in lines)
    assert any(e["message"] == "Failed to export batch" for e in lines)


def test_a_failure_is_logged_once_the_servers_copy_is_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(make_settings(run_mode="production"))

    def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/crash", crash)
    with TestClient(app) as client, pytest.raises(RuntimeError) as raised:
        client.get("/crash", headers=TENANT_HEADERS)
    # What uvicorn does with an exception that leaves the app, outside any span.
    server = logging.getLogger("uvicorn.error")
    server.error("Exception in ASGI application\n", exc_info=raised.value)
    # An exception no request accounted for is still the server's to log.
    server.error("Exception in ASGI lifespan", exc_info=ValueError("not from a request"))

    errors = [e for e in json_lines(stdout(capsys)) if e["level"] == "error"]
    assert [e["message"].split(" in ")[0] for e in errors] == [
        "GET /crash 500",
        "Exception",
    ]
    assert "RuntimeError: boom" in errors[0]["exc_info"]
    assert len(errors[0]["trace_id"]) == 32
    assert {k: errors[0][k] for k in TENANT_ATTRIBUTES} == TENANT_ATTRIBUTES


def test_the_servers_copy_is_dropped_under_gunicorn_too(capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(make_settings(run_mode="production"))

    def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/crash", crash)
    with TestClient(app) as client, pytest.raises(RuntimeError) as raised:
        client.get("/crash")
    # gunicorn's uvicorn worker gives uvicorn's logger gunicorn's own handlers, not the root's.
    server = logging.getLogger("uvicorn.error")
    gunicorn_stderr = io.StringIO()
    handler = logging.StreamHandler(gunicorn_stderr)
    server.addHandler(handler)
    server.propagate = False
    try:
        server.error("Exception in ASGI application\n", exc_info=raised.value)
    finally:
        server.removeHandler(handler)
        server.propagate = True

    assert gunicorn_stderr.getvalue() == ""
    errors = [e for e in json_lines(stdout(capsys)) if e["level"] == "error"]
    assert len(errors) == 1
