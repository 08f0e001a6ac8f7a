"""Telemetry contract: shutdown delivers what is buffered; trace continuation is a setting."""

from __future__ import annotations

from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire, TestExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app

from conftest import make_settings, server_spans


def test_lifespan_shutdown_flushes_buffered_spans() -> None:
    exporter = TestExporter()
    # A batch that would wait a minute: only the flush in the lifespan shutdown can deliver it
    # (uvicorn re-raises SIGTERM after shutdown, so atexit hooks never run).
    batch = BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    app = create_app(make_settings(), additional_span_processors=[batch])
    with TestClient(app) as client:
        client.get("/items/1")
        assert [s.name for s in exporter.exported_spans] == []

    assert "GET /items/{item_id}" in [s.name for s in exporter.exported_spans]


def test_traceparent_is_ignored_when_distributed_tracing_is_off(capfire: CaptureLogfire) -> None:
    app = create_app(
        make_settings(distributed_tracing=False),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(app) as client:
        client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})

    [span] = server_spans(capfire)
    assert format(span.context.trace_id, "032x") != trace_id
    assert span.parent is None
