"""Which traces are exported: every failed or slow request, and the sample rate of the others."""

from __future__ import annotations

import asyncio

import logfire
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from {{ cookiecutter.package_name }}.app import create_app

from conftest import logs_named, make_settings, server_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# Far above what an ordinary request takes on a loaded CI machine, so only /slow is slow.
SLOW_SECONDS = 1.0


def app_for(capfire: CaptureLogfire, rate: float) -> FastAPI:
    app = create_app(
        make_settings(logfire_trace_sample_rate=rate, slow_request_seconds=SLOW_SECONDS),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def unavailable() -> None:
        logfire.info("probe.before_failing")
        raise HTTPException(503, "try later")

    async def crash() -> None:
        raise RuntimeError("boom")

    async def slow() -> dict[str, str]:
        logfire.info("probe.slow")
        await asyncio.sleep(SLOW_SECONDS * 1.2)
        return {}

    app.add_api_route("/unavailable", unavailable)
    app.add_api_route("/crash", crash)
    app.add_api_route("/slow", slow)
    return app


def test_rate_zero_exports_no_ordinary_request_and_no_log(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 0.0)) as client:
        assert client.get("/items/1").status_code == 200

    assert server_spans(capfire) == []
    assert logs_named(capfire, "item.fetched") == []


def test_failed_requests_are_exported_with_their_logs_whatever_the_rate(
    capfire: CaptureLogfire,
) -> None:
    with TestClient(app_for(capfire, 0.0), raise_server_exceptions=False) as client:
        assert client.get("/unavailable").status_code == 503
        assert client.get("/crash").status_code == 500

    names = sorted(span.name for span in server_spans(capfire))
    assert names == ["GET /crash", "GET /unavailable"]
    [log] = logs_named(capfire, "probe.before_failing")
    [failed] = [s for s in server_spans(capfire) if s.name == "GET /unavailable"]
    assert log.context is not None
    assert log.context.trace_id == failed.context.trace_id


def test_slow_requests_are_exported_whatever_the_rate(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 0.0)) as client:
        assert client.get("/slow").status_code == 200

    assert [span.name for span in server_spans(capfire)] == ["GET /slow"]
    assert len(logs_named(capfire, "probe.slow")) == 1


def test_rate_one_exports_every_request(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 1.0)) as client:
        for _ in range(5):
            client.get("/items/1")

    assert len(server_spans(capfire)) == 5
    assert len(logs_named(capfire, "item.fetched")) == 5


def test_a_sampled_caller_is_followed_whatever_the_rate(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 0.0)) as client:
        client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})

    [span] = server_spans(capfire)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    [log] = logs_named(capfire, "item.fetched")
    assert log.context is not None
    assert log.context.trace_id == span.context.trace_id


def test_an_unsampled_caller_is_followed_whatever_the_rate(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 1.0)) as client:
        client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00"})

    assert server_spans(capfire) == []
    assert logs_named(capfire, "item.fetched") == []


def test_work_outside_requests_follows_the_same_policy(capfire: CaptureLogfire) -> None:
    app_for(capfire, 0.0)
    with logfire.span("job.quiet"):
        logfire.info("job.step")
    with logfire.span("job.failing"):
        logfire.error("job.failed")

    names = {span.name for span in capfire.exporter.exported_spans}
    assert "job.quiet" not in names
    assert "job.step" not in names
    assert {"job.failing", "job.failed"} <= names


def test_the_policy_predicts_which_traces_are_exported(capfire: CaptureLogfire) -> None:
    """The duration histogram links only to traces that exist: the same decision as Logfire's."""
    from {{ cookiecutter.package_name }}.telemetry import TracePolicy

    # Spans here are never slow enough to be kept for their duration: the rate alone decides.
    policy = TracePolicy(rate=0.25, slow_seconds=3600)
    create_app(
        make_settings(logfire_trace_sample_rate=0.25, slow_request_seconds=3600),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    predicted = set()
    for _ in range(200):
        with logfire.span("request") as span:
            trace_id = span.get_span_context().trace_id  # type: ignore[union-attr]
        if policy.keeps(trace_id, failed=False, duration=0.0):
            predicted.add(trace_id)

    exported = {
        s.context.trace_id
        for s in capfire.exporter.exported_spans
        if s.context and s.name == "request"
    }
    assert exported == predicted
    assert 20 < len(predicted) < 80  # about a quarter of 200
