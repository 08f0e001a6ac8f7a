"""Telemetry contract: what reaches stdout in each environment."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import TENANT_ATTRIBUTES, TENANT_HEADERS, make_settings, server_spans
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    # The stdout handler installed by a test points at pytest's capture, which is closed after it.
    configure_logging(make_settings())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_production_writes_one_json_object_per_line(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(environment="production", logfire_trace_sample_rate=1.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/3", headers=TENANT_HEADERS)

    out = capsys.readouterr().out
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
        make_settings(environment="production"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    loguru_logger.bind(order_id=7).warning("order.delayed")

    [line] = [e for e in json_lines(capsys.readouterr().out) if e["message"] == "order.delayed"]
    assert line["level"] == "warning"
    assert line["order_id"] == 7


{% endif -%}
def test_production_logs_unsampled_requests_too(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(environment="production", logfire_trace_sample_rate=0.0),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1", headers=TENANT_HEADERS)

    [event] = [e for e in json_lines(capsys.readouterr().out) if e["message"] == "item.fetched"]
    assert len(event["trace_id"]) == 32
    assert event["account_id"] == "acct-42"
    assert server_spans(capfire) == []


def test_production_level_defaults_to_info(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(
        make_settings(environment="production"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").debug("debug.hidden")
    logging.getLogger("tests").info("info.shown")

    messages = [e["message"] for e in json_lines(capsys.readouterr().out)]
    assert "info.shown" in messages
    assert "debug.hidden" not in messages


def test_log_level_setting_applies(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(
        make_settings(environment="production", log_level="warning"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").info("info.hidden")
    logging.getLogger("tests").warning("warning.shown")

    lines = json_lines(capsys.readouterr().out)
    assert [e["message"] for e in lines if e["logger"] == "tests"] == ["warning.shown"]


def test_development_console_is_readable(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(environment="development"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1")

    out = capsys.readouterr().out
    assert "item.fetched" in out
    assert "GET /items/1" in out
    assert json_lines(out) == []


def test_json_lines_redact_credential_extras(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(
        make_settings(environment="production"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").info(
        "login.attempted",
        extra={"password": "hunter2", "api_key": "k-123", "user_token": "t-1", "user": "ann"},
    )

    [line] = [e for e in json_lines(capsys.readouterr().out) if e["message"] == "login.attempted"]
    assert line["user"] == "ann"
    assert line["password"] == line["api_key"] == line["user_token"] == "[redacted]"
