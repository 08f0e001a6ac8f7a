"""Head sampling is decided per request by the middleware (telemetry/sampling.py): same outcome."""

from __future__ import annotations

import logfire
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app

from conftest import logs_named, make_settings, server_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def client_for(capfire: CaptureLogfire, rate: float) -> TestClient:
    app = create_app(
        make_settings(logfire_trace_sample_rate=rate),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    return TestClient(app)


def test_rate_zero_records_no_request_and_no_log(capfire: CaptureLogfire) -> None:
    with client_for(capfire, 0.0) as client:
        assert client.get("/items/1").status_code == 200

    assert server_spans(capfire) == []
    assert logs_named(capfire, "item.fetched") == []


def test_rate_one_records_every_request(capfire: CaptureLogfire) -> None:
    with client_for(capfire, 1.0) as client:
        for _ in range(5):
            client.get("/items/1")

    assert len(server_spans(capfire)) == 5
    assert len(logs_named(capfire, "item.fetched")) == 5


def test_a_sampled_caller_is_followed_whatever_the_rate(capfire: CaptureLogfire) -> None:
    with client_for(capfire, 0.0) as client:
        client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})

    [span] = server_spans(capfire)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    [log] = logs_named(capfire, "item.fetched")
    assert log.context is not None
    assert log.context.trace_id == span.context.trace_id


def test_an_unsampled_caller_is_followed_whatever_the_rate(capfire: CaptureLogfire) -> None:
    with client_for(capfire, 1.0) as client:
        client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"})

    assert server_spans(capfire) == []
    assert logs_named(capfire, "item.fetched") == []


def test_spans_outside_requests_keep_the_configured_rate(capfire: CaptureLogfire) -> None:
    with client_for(capfire, 0.0), logfire.span("background.job"):
        logfire.info("job.step")
    names = [span.name for span in capfire.exporter.exported_spans]
    assert "background.job" not in names
    assert "job.step" not in names
