"""Telemetry contract: what reaches stdout in each environment."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.json_lines import (
    JsonFormatter,
    JsonLinesHandler,
    _utc_timestamp,
)
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging
from {{ cookiecutter.package_name }}.telemetry.redaction import redact_text

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
    configure_logging(make_settings())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stdout(capsys: pytest.CaptureFixture[str]) -> str:
    """What reached stdout, once the JSON lines handler has written what it buffered."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return capsys.readouterr().out


def test_production_writes_one_json_object_per_line(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(
        make_settings(environment="production", logfire_trace_sample_rate=1.0),
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
        make_settings(environment="production"),
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
        make_settings(environment="production", logfire_trace_sample_rate=0.0),
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
    # Unsampled requests build no baggage: their lines take the tenant ids from the request's
    # context variable, which threads, `to_thread` and background tasks inherit.
    app = create_app(make_settings(environment="production", logfire_trace_sample_rate=0.0))
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
        make_settings(environment="production"),
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
        make_settings(environment="production", log_level="warning"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    logging.getLogger("tests").info("info.hidden")
    logging.getLogger("tests").warning("warning.shown")

    lines = json_lines(stdout(capsys))
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

    out = stdout(capsys)
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

    [line] = [e for e in json_lines(stdout(capsys)) if e["message"] == "login.attempted"]
    assert line["user"] == "ann"
    assert line["password"] == line["api_key"] == line["user_token"] == "[redacted]"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("/items/1", False),
        ("/reset-password/abc123", True),
        ("/Reset-PASSWORD/abc123", True),
        ("/v1/Api_Key/k-1", True),
        ("/authors/7", False),
        ("password", False),  # nothing but the word, as Logfire keeps it
        ("PassWord", False),
        ("/to\u212aen/abc", True),  # the Kelvin sign: a case-insensitive match for "k"
        ("/café/Session/9", True),
    ],
)
def test_redaction_matches_credential_words_in_any_case(text: str, redacted: bool) -> None:
    # ASCII text is lower-cased and searched case-sensitively (faster): same result as the
    # case-insensitive search that non-ASCII text gets.
    assert (redact_text(text) == "[redacted]") is redacted


class _Unserialisable:
    def __str__(self) -> str:
        return "custom"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"item_id": 3, "label": 'ünïcode "quoted"\n', "big": 10**30, "negative": -1},
        {"flag": True, "ratio": 0.5, "missing": None, "nested": {"a": [1, "b"]}},
        {"obj": _Unserialisable(), "password": "hunter2", "timestamp": "not mine"},
    ],
)
def test_json_line_is_exactly_what_json_dumps_writes(extra: dict[str, Any]) -> None:
    # The formatter writes the fixed fields itself: the line must still be json.dumps's.
    record = logging.getLogger("tests").makeRecord(
        "tests", logging.WARNING, __file__, 1, "event.%s", ("named",), None, extra=extra
    )
    line = JsonFormatter().format(record)

    decoded = json.loads(line)
    assert line == json.dumps(decoded, default=str)
    assert list(decoded)[:4] == ["timestamp", "level", "logger", "message"]
    assert decoded["message"] == "event.named"
    assert decoded["timestamp"] != "not mine"
    for key, value in extra.items():
        if key == "password":
            assert decoded[key] == "[redacted]"
        elif key != "timestamp":
            assert decoded[key] == json.loads(json.dumps(value, default=str))


def _record(message: str) -> logging.LogRecord:
    return logging.getLogger("tests").makeRecord(
        "tests", logging.INFO, __file__, 1, message, (), None
    )


def test_json_lines_reach_the_stream_on_their_own() -> None:
    stream = io.StringIO()
    handler = JsonLinesHandler(stream, flush_interval=0.01)
    handler.setFormatter(JsonFormatter())
    handler.handle(_record("buffered.line"))

    deadline = time.monotonic() + 10
    while "buffered.line" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    handler.close()
    assert [e["message"] for e in json_lines(stream.getvalue())] == ["buffered.line"]
    flusher = handler._flusher
    assert flusher is not None
    flusher.join(timeout=10)
    assert not flusher.is_alive(), "closing the handler stops its flusher thread"


def test_closing_the_json_lines_handler_writes_everything() -> None:
    stream = io.StringIO()
    handler = JsonLinesHandler(stream, flush_interval=3600, max_pending=10**6)
    handler.setFormatter(JsonFormatter())
    for n in range(5):
        handler.handle(_record(f"line.{n}"))
    handler.close()

    assert stream.getvalue().endswith("\n")
    assert [e["message"] for e in json_lines(stream.getvalue())] == [f"line.{n}" for n in range(5)]


def test_json_lines_from_many_threads_stay_whole_and_none_is_lost() -> None:
    stream = io.StringIO()
    handler = JsonLinesHandler(stream, flush_interval=0.001, max_pending=7)
    handler.setFormatter(JsonFormatter())

    def log_some(thread: int) -> None:
        for n in range(500):
            handler.handle(_record(f"thread.{thread}.{n}"))

    threads = [threading.Thread(target=log_some, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 500
    messages = [json.loads(line)["message"] for line in lines]
    assert sorted(messages) == sorted(f"thread.{t}.{n}" for t in range(8) for n in range(500))
    for t in range(8):  # each thread's lines keep their order
        mine = [m for m in messages if m.startswith(f"thread.{t}.")]
        assert mine == [f"thread.{t}.{n}" for n in range(500)]


def test_buffered_lines_survive_sigterms_default_action() -> None:
    # uvicorn ends a graceful SIGTERM shutdown by raising SIGTERM again with the default action,
    # which skips atexit: the lines logged just before must still reach stdout.
    script = (
        "import logging, signal\n"
        "from {{ cookiecutter.package_name }}.settings import Settings\n"
        "from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging\n"
        "configure_logging(Settings(environment='production'))\n"
        "logging.getLogger('tests').info('last.words')\n"
        "signal.raise_signal(signal.SIGTERM)\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == -15, done.stderr
    assert [e["message"] for e in json_lines(done.stdout)] == ["last.words"]


def test_timestamps_are_what_datetime_writes() -> None:
    """The cached formatter against `datetime`, across seconds, days and rounding edges."""
    starts = (1_767_225_599.9985, 1_700_000_000.0, 0.0004, 951_782_399.9999996)
    for start in starts:
        for step in range(3000):
            created = start + step * 0.000_137
            expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
            assert _utc_timestamp(created) == expected, created
