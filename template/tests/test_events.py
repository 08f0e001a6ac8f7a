"""Telemetry contract: an event (telemetry/events.py) is what the same std-logging record is."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.events import EventLog
from {{ cookiecutter.package_name }}.telemetry.json_lines import JsonLinesHandler
from {{ cookiecutter.package_name }}.telemetry.logs import (
    SampledLogfireHandler,
    configure_logging,
)

from conftest import TENANT_HEADERS, logs_named, make_settings

NAME = "tests.events"
events = EventLog(NAME)
logger = logging.getLogger(NAME)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logger.setLevel(logging.NOTSET)
    # The stdout handler installed by a test points at pytest's capture, which is closed after it.
    configure_logging(make_settings())


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Messages of the LogRecords made during the test: tells which way an event went."""
    made: list[str] = []
    make_record = logging.Logger.makeRecord

    def spy(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(self, *args, **kwargs)
        made.append(record.msg)
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", spy)
    return made


@contextmanager
def service_handlers_only() -> Iterator[None]:
    """The root logger with the service's handlers alone, as in the running service.

    pytest adds its capture handler to the root logger, and with another handler listening an
    event goes through standard logging like any record.
    """
    root = logging.getLogger()
    saved = root.handlers
    root.handlers = [h for h in saved if isinstance(h, (SampledLogfireHandler, JsonLinesHandler))]
    try:
        yield
    finally:
        root.handlers = saved


def app_with_probes(capfire: CaptureLogfire, **settings: Any) -> FastAPI:
    app = create_app(
        make_settings(**settings),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def both() -> dict[str, str]:
        events.info("probe.both", count=2, label="x", ratio=0.5, ok=True, password="hunter2")
        logger.info(
            "probe.both",
            extra={"count": 2, "label": "x", "ratio": 0.5, "ok": True, "password": "hunter2"},
        )
        return {}

    async def one() -> dict[str, str]:
        events.info("probe.one", count=1)
        return {}

    async def nested() -> dict[str, str]:
        events.warning("probe.nested", payload={"a": [1, 2]})
        return {}

    async def changing() -> dict[str, str]:
        tags = ["a"]
        events.info("probe.changing", tags=tags, count=1)
        tags.append("added after the event")
        return {}

    async def shadowing() -> dict[str, str]:
        events.info("probe.shadowing", **{"code.function": "not the caller", "count": 1})
        return {}

    app.add_api_route("/probe/both", both)
    app.add_api_route("/probe/shadowing", shadowing)
    app.add_api_route("/probe/changing", changing)
    app.add_api_route("/probe/one", one)
    app.add_api_route("/probe/nested", nested)
    return app


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_an_events_json_line_is_the_records(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str], records: list[str], rate: float
) -> None:
    app = app_with_probes(capfire, environment="production", logfire_trace_sample_rate=rate)
    with TestClient(app) as client, service_handlers_only():
        client.get("/probe/both", headers=TENANT_HEADERS)

    assert records.count("probe.both") == 1, "the event wrote its line without a record"
    event, record = [line for line in json_lines(capsys) if line["message"] == "probe.both"]
    assert without(event, "timestamp") == without(record, "timestamp")
    assert event["password"] == "[redacted]"
    assert event["logger"] == NAME
    assert event["account_id"] == TENANT_HEADERS["X-Account-Id"]


def test_a_json_line_shows_the_fields_as_they_were_when_the_event_happened(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    # Lines are written (and most are formatted) in batches; a field that can still change is
    # formatted at once.
    app = app_with_probes(capfire, environment="production", logfire_trace_sample_rate=0.0)
    with TestClient(app) as client, service_handlers_only():
        client.get("/probe/changing", headers=TENANT_HEADERS)

    [line] = [line for line in json_lines(capsys) if line["message"] == "probe.changing"]
    assert line["tags"] == ["a"]
    assert line["count"] == 1
    assert line["account_id"] == TENANT_HEADERS["X-Account-Id"]


def shape(span: ReadableSpan) -> dict[str, Any]:
    attributes = without(dict(span.attributes or {}), "code.lineno")
    status = span.status.status_code
    return {"name": span.name, "parent": span.parent, "status": status, **attributes}


def test_an_events_log_span_is_the_records(capfire: CaptureLogfire, records: list[str]) -> None:
    with TestClient(app_with_probes(capfire)) as client, service_handlers_only():
        client.get("/probe/both", headers=TENANT_HEADERS)

    assert records.count("probe.both") == 1, "the event made its span without a record"
    event, record = logs_named(capfire, "probe.both")
    assert shape(event) == shape(record)
    assert (event.attributes or {})["code.function"] == "both"
    assert (event.attributes or {})["password"] == "[redacted]"


def test_a_field_logfire_must_serialise_goes_through_its_handler_once(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str], records: list[str]
) -> None:
    app = app_with_probes(capfire, environment="production", logfire_trace_sample_rate=1.0)
    with TestClient(app) as client, service_handlers_only():
        client.get("/probe/nested")

    assert records.count("probe.nested") == 1

    [line] = [line for line in json_lines(capsys) if line["message"] == "probe.nested"]
    assert line["payload"] == {"a": [1, 2]}
    [span] = logs_named(capfire, "probe.nested")
    assert json.loads(str((span.attributes or {})["payload"])) == {"a": [1, 2]}
    assert (span.attributes or {})["code.function"] == "nested"


def test_a_field_named_like_logfires_own_log_attributes_goes_through_its_handler(
    capfire: CaptureLogfire, records: list[str]
) -> None:
    # The direct path encodes a log's own attributes once per call site; a field that would
    # shadow one of them is left to Logfire's handler, which keeps the real call site.
    app = app_with_probes(capfire, environment="production", logfire_trace_sample_rate=1.0)
    with TestClient(app) as client, service_handlers_only():
        client.get("/probe/shadowing")

    assert records.count("probe.shadowing") == 1
    [span] = logs_named(capfire, "probe.shadowing")
    assert (span.attributes or {})["code.function"] == "shadowing"
    assert (span.attributes or {})["count"] == 1


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_handler_someone_added_still_receives_events(capfire: CaptureLogfire) -> None:
    app = app_with_probes(capfire)
    kept = Keep()
    logging.getLogger().addHandler(kept)
    try:
        with TestClient(app) as client:
            client.get("/probe/one")
    finally:
        logging.getLogger().removeHandler(kept)

    [record] = [r for r in kept.records if r.msg == "probe.one"]
    assert record.count == 1  # type: ignore[attr-defined]
    assert record.funcName == "one"
    assert record.pathname == __file__
    assert len(logs_named(capfire, "probe.one")) == 1


def test_events_follow_the_loggers_level(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_with_probes(capfire, environment="production", logfire_trace_sample_rate=1.0)
    logger.setLevel(logging.WARNING)
    with TestClient(app) as client, service_handlers_only():
        client.get("/probe/one")

    assert [line for line in json_lines(capsys) if line["message"] == "probe.one"] == []
    assert logs_named(capfire, "probe.one") == []


def test_outside_a_request_an_event_is_an_ordinary_record(
    capfire: CaptureLogfire, caplog: pytest.LogCaptureFixture
) -> None:
    app_with_probes(capfire)
    with caplog.at_level(logging.INFO, logger=NAME):
        events.info("probe.outside", count=3)

    [record] = [r for r in caplog.records if r.msg == "probe.outside"]
    assert record.count == 3  # type: ignore[attr-defined]
    [span] = logs_named(capfire, "probe.outside")
    assert (span.attributes or {})["count"] == 3


def test_a_field_named_like_a_record_attribute_is_refused(capfire: CaptureLogfire) -> None:
    app_with_probes(capfire)
    with pytest.raises(KeyError, match="message"):
        events.info("probe.clash", message="no")
