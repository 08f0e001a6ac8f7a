"""Which traces are exported: the same ordinary ones in every service, and every failure.

Requests here come "from a caller" (a `traceparent` header, as an internal service sees them) or
start a trace (as at the edge). The oracle for ordinary traffic is OpenTelemetry's own
TraceIdRatioBased sampler: every service of a fleet applies it to the same trace id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator

import logfire
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, WebSocket
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.logs import configure_logging
from {{ cookiecutter.package_name }}.telemetry.sampling import KEPT_BECAUSE

from conftest import finished_spans, logs_named, make_settings, scrape, server_spans

# Far above what an ordinary request takes on a loaded CI machine, so only /slow is slow.
SLOW_SECONDS = 1.0
CALLER_SPAN_ID = "00f067aa0ba902b7"
logger = logging.getLogger("tests.sampling")


def traceparent(trace_id: int, *, sampled: bool) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id:032x}-{CALLER_SPAN_ID}-{'01' if sampled else '00'}"}


def random_trace_id() -> int:
    return random.getrandbits(128) or 1


def ordinary_trace_kept(trace_id: int, rate: float) -> bool:
    """OpenTelemetry's own decision for a trace id at `rate`: the rule every service applies."""
    decision = TraceIdRatioBased(rate).should_sample(None, trace_id, "request").decision
    return decision is Decision.RECORD_AND_SAMPLE


def app_for(capfire: CaptureLogfire, rate: float, **settings: object) -> FastAPI:
    app = create_app(
        make_settings(
            logfire_trace_sample_rate=rate, slow_request_seconds=SLOW_SECONDS, **settings
        ),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )

    async def unavailable() -> None:
        logger.info("probe.before_failing")
        raise HTTPException(503, "try later")

    async def crash() -> None:
        logger.info("probe.before_crashing")
        raise RuntimeError("boom")

    async def logs_an_error() -> dict[str, str]:
        logger.info("probe.working")
        logger.error("probe.went_wrong")
        return {}

    async def slow() -> dict[str, str]:
        logger.info("probe.slow")
        await asyncio.sleep(SLOW_SECONDS * 1.2)
        return {}

    async def deep() -> dict[str, str]:
        with logfire.span("probe.child"):
            logger.info("probe.in_child")
        return {}

    def report() -> None:
        logger.info("probe.reporting")
        raise RuntimeError("report failed")

    async def later_failing(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(report)
        return {}

    async def later_slow(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(asyncio.sleep, SLOW_SECONDS * 1.2)
        return {}

    async def socket_crash(websocket: WebSocket) -> None:
        await websocket.accept()
        logger.info("probe.socket_open")
        raise RuntimeError("socket failed")

    app.add_api_route("/later-failing", later_failing)
    app.add_api_route("/later-slow", later_slow)
    app.add_api_websocket_route("/socket-crash", socket_crash)
    app.add_api_route("/unavailable", unavailable)
    app.add_api_route("/crash", crash)
    app.add_api_route("/logs-an-error", logs_an_error)
    app.add_api_route("/slow", slow)
    app.add_api_route("/deep", deep)
    return app


@pytest.fixture
def client_at_zero(capfire: CaptureLogfire) -> Iterator[TestClient]:
    with TestClient(app_for(capfire, 0.0), raise_server_exceptions=False) as client:
        yield client


def only_server_span(capfire: CaptureLogfire) -> ReadableSpan:
    [span] = server_spans(capfire)
    return span


def children_of(capfire: CaptureLogfire, span: ReadableSpan) -> list[ReadableSpan]:
    return [
        s
        for s in finished_spans(capfire)
        if s.parent is not None and s.parent.span_id == span.context.span_id
    ]


def test_rate_zero_exports_no_ordinary_request_and_no_log(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    assert client_at_zero.get("/items/1").status_code == 200
    assert client_at_zero.get("/deep").status_code == 200

    assert server_spans(capfire) == []
    assert logs_named(capfire, "item.fetched") == []
    assert logs_named(capfire, "probe.in_child") == []


@pytest.mark.parametrize("caller", ["edge", "unsampled caller", "sampled caller"])
@pytest.mark.parametrize(
    ("path", "status", "log"),
    [
        ("/unavailable", 503, "probe.before_failing"),
        ("/crash", 500, "probe.before_crashing"),
        ("/logs-an-error", 200, "probe.went_wrong"),
    ],
)
def test_failures_are_exported_with_their_logs_whatever_the_caller_decided(
    client_at_zero: TestClient,
    capfire: CaptureLogfire,
    caller: str,
    path: str,
    status: int,
    log: str,
) -> None:
    trace_id = random_trace_id()
    headers = {} if caller == "edge" else traceparent(trace_id, sampled=caller == "sampled caller")

    assert client_at_zero.get(path, headers=headers).status_code == status

    span = only_server_span(capfire)
    assert span.name == f"GET {path}"
    assert span.attributes is not None
    assert span.attributes[KEPT_BECAUSE] == "error"
    assert span.attributes["http.response.status_code"] == status
    if caller == "edge":
        assert span.parent is None
    else:
        assert span.context.trace_id == trace_id
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == CALLER_SPAN_ID
    [record] = logs_named(capfire, log)
    assert record in children_of(capfire, span)
    # Logged while the request ran: stamped then, not when the span was recorded.
    assert span.start_time is not None
    assert span.end_time is not None
    assert record.start_time is not None
    assert span.start_time <= record.start_time <= span.end_time


def test_an_error_record_has_the_level_number_the_collector_policy_reads(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    """deploy/collector/tail-sampling.yaml keeps traces with `logfire.level_num` >= 17."""
    client_at_zero.get("/logs-an-error")

    [record] = logs_named(capfire, "probe.went_wrong")
    assert record.attributes is not None
    assert record.attributes["logfire.level_num"] == 17


def test_an_exception_is_recorded_on_the_late_span(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    client_at_zero.get("/crash")

    span = only_server_span(capfire)
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert span.status.status_code.name == "ERROR"


def test_failing_background_work_keeps_its_request_which_still_answered_200(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    trace_id = random_trace_id()
    response = client_at_zero.get("/later-failing", headers=traceparent(trace_id, sampled=False))

    assert response.status_code == 200
    span = only_server_span(capfire)
    assert span.context.trace_id == trace_id
    assert span.attributes is not None
    assert span.attributes[KEPT_BECAUSE] == "error"
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code.name == "UNSET"
    [background] = [s for s in children_of(capfire, span) if s.name == "request.background"]
    assert background.status.status_code.name == "ERROR"
    [record] = logs_named(capfire, "probe.reporting")
    assert record in children_of(capfire, span)
    [failure] = [s for s in children_of(capfire, span) if "background work failed" in s.name]
    assert (failure.attributes or {})["logfire.level_num"] == 17  # error


def test_slow_background_work_does_not_make_its_request_slow(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    client_at_zero.get("/later-slow")

    assert server_spans(capfire) == []


def test_a_failing_websocket_connection_is_kept(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    with pytest.raises(RuntimeError), client_at_zero.websocket_connect("/socket-crash") as socket:
        socket.receive_text()

    span = only_server_span(capfire)
    assert span.name == "WS /socket-crash"
    assert span.attributes is not None
    assert span.attributes[KEPT_BECAUSE] == "error"
    [record] = logs_named(capfire, "probe.socket_open")
    assert record in children_of(capfire, span)


def test_slow_requests_are_exported_with_their_real_duration(
    client_at_zero: TestClient, capfire: CaptureLogfire
) -> None:
    trace_id = random_trace_id()
    client_at_zero.get("/slow", headers=traceparent(trace_id, sampled=False))

    span = only_server_span(capfire)
    assert span.attributes is not None
    assert span.attributes[KEPT_BECAUSE] == "slow"
    assert span.context.trace_id == trace_id
    assert span.start_time is not None
    assert span.end_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= SLOW_SECONDS * 1.2
    # Logged before the sleep, and stamped then: not when the span was recorded, 1.2 s later.
    [record] = logs_named(capfire, "probe.slow")
    assert record.start_time is not None
    assert record.start_time - span.start_time < (span.end_time - span.start_time) / 2


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_ordinary_traces_follow_the_trace_id_not_the_callers_flag(
    capfire: CaptureLogfire, rate: float
) -> None:
    """Every service applies the same test to the same trace id: the traces kept are complete."""
    trace_ids = [random_trace_id() for _ in range(120)]
    with TestClient(app_for(capfire, rate)) as client:
        for index, trace_id in enumerate(trace_ids):
            # Half the callers say sampled, half say not: neither may move the decision.
            client.get("/items/1", headers=traceparent(trace_id, sampled=index % 2 == 0))

    exported = {span.context.trace_id for span in server_spans(capfire)}
    expected = {t for t in trace_ids if ordinary_trace_kept(t, rate)}
    assert exported == expected
    assert 0 < len(expected) < len(trace_ids)
    records = logs_named(capfire, "item.fetched")
    logged = {record.context.trace_id for record in records if record.context}
    assert logged == expected


def test_requests_that_start_a_trace_are_kept_at_the_rate(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 0.25)) as client:
        for _ in range(200):
            client.get("/items/1")

    spans = server_spans(capfire)
    assert all(ordinary_trace_kept(span.context.trace_id, 0.25) for span in spans)
    assert 20 < len(spans) < 80  # about a quarter of 200


def test_a_kept_request_exports_its_child_spans(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 1.0)) as client:
        client.get("/deep", headers=traceparent(random_trace_id(), sampled=False))

    span = only_server_span(capfire)
    [child] = [s for s in children_of(capfire, span) if s.name == "probe.child"]
    [record] = logs_named(capfire, "probe.in_child")
    assert record.parent is not None
    assert record.parent.span_id == child.context.span_id


def test_outgoing_trace_context_says_whether_the_trace_is_recorded(capfire: CaptureLogfire) -> None:
    """What a service behind this one (or any OpenTelemetry service) is told."""
    app = app_for(capfire, 0.0)
    seen: list[str] = []

    async def forward() -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        seen.append(carrier["traceparent"])
        return {}

    app.add_api_route("/forward", forward)
    with TestClient(app) as client:
        client.get("/forward", headers=traceparent(random_trace_id(), sampled=True))

    [header] = seen
    assert header.endswith("-00")


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def exemplar_trace_ids(client: TestClient) -> set[str]:
    """The trace ids the latency histogram's exemplars name (the registry is the process's)."""
    openmetrics = scrape(client, accept="application/openmetrics-text; version=1.0.0").text
    return {
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(openmetrics)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.exemplar is not None
    }


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("debug", json_lines=False)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_exemplar_and_span_name_the_same_trace(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str]
) -> None:
    app = app_for(capfire, 0.0, run_mode="production")
    with TestClient(app, raise_server_exceptions=False) as client:
        before = exemplar_trace_ids(client)
        client.get("/unavailable", headers=traceparent(random_trace_id(), sampled=False))
        exemplars = exemplar_trace_ids(client) - before

    span = only_server_span(capfire)
    trace_id = format(span.context.trace_id, "032x")
    lines = json_lines(capsys.readouterr().out)
    [line] = [e for e in lines if e["message"] == "probe.before_failing"]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == format(span.context.span_id, "016x")
    assert exemplars == {trace_id}


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("path", ["/items/1", "/unavailable"])
def test_the_trace_id_header_names_the_trace_of_the_lines_and_the_late_span(
    capfire: CaptureLogfire, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    app = app_for(capfire, 0.0, run_mode="production")
    with TestClient(app) as client:
        response = client.get(path, headers=traceparent(random_trace_id(), sampled=True))

    header = response.headers["X-Trace-Id"]
    lines = json_lines(capsys.readouterr().out)
    [line] = [e for e in lines if e["message"] in ("item.fetched", "probe.before_failing")]
    assert line["trace_id"] == header
    exported = {format(span.context.trace_id, "032x") for span in server_spans(capfire)}
    # An ordinary request at rate 0 is not exported; a failed one is, under the id it named.
    assert exported == ({header} if response.status_code >= 500 else set())


def test_exemplars_name_only_exported_traces(capfire: CaptureLogfire) -> None:
    with TestClient(app_for(capfire, 0.3), raise_server_exceptions=False) as client:
        before = exemplar_trace_ids(client)
        for _ in range(60):
            client.get("/items/1", headers=traceparent(random_trace_id(), sampled=True))
        for _ in range(5):
            client.get("/crash", headers=traceparent(random_trace_id(), sampled=False))
        exemplars = exemplar_trace_ids(client) - before

    exported = {format(span.context.trace_id, "032x") for span in server_spans(capfire)}
    assert exemplars
    assert exemplars <= exported


def test_collector_mode_exports_every_trace_whatever_the_caller_decided(
    capfire: CaptureLogfire,
) -> None:
    app = app_for(capfire, 0.0, trace_sampling="collector")
    with TestClient(app) as client:
        before = exemplar_trace_ids(client)
        client.get("/items/1", headers=traceparent(random_trace_id(), sampled=False))
        client.get("/deep")
        new_exemplars = exemplar_trace_ids(client) - before

    assert sorted(span.name for span in server_spans(capfire)) == [
        "GET /deep",
        "GET /items/{item_id}",
    ]
    assert len(logs_named(capfire, "item.fetched")) == 1
    assert len(logs_named(capfire, "probe.in_child")) == 1
    # The collector keeps an ordinary trace or not, by its own rule: no exemplar may promise it.
    assert new_exemplars == set()


def test_work_outside_requests_keeps_its_failures_and_its_loose_records(
    capfire: CaptureLogfire,
) -> None:
    app_for(capfire, 0.0)
    with logfire.span("job.quiet"):
        logger.info("job.step")
    with logfire.span("job.failing"):
        logger.error("job.failed")
    logger.info("service.lifecycle_event")

    names = {span.name for span in finished_spans(capfire)}
    assert "job.quiet" not in names
    assert "job.step" not in names
    assert {"job.failing", "job.failed", "service.lifecycle_event"} <= names
