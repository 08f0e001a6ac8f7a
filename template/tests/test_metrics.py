"""Telemetry contract: Prometheus metrics move by exactly the requests sent."""

from __future__ import annotations

import asyncio
import gzip
import random
import string
{% if cookiecutter.metrics_separate_port %}
import httpx
{%- endif %}
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from logfire.testing import CaptureLogfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.types import Message, Scope

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.metrics import (
    HttpMetrics,
    InMemoryHttpMetrics,
    MultiprocessHttpMetrics,
)

from conftest import make_settings, scrape, server_spans

DURATION = "http_server_request_duration_seconds"


def samples(client: TestClient) -> list[Sample]:
    response = scrape(client, accept="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    ]


def value(client: TestClient, name: str, **labels: str) -> float | None:
    for sample in samples(client):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None


def request_count(client: TestClient, method: str, route: str, status: int) -> float | None:
    return value(
        client,
        f"{DURATION}_count",
        http_request_method=method,
        http_route=route,
        http_response_status_code=str(status),
    )


def test_metrics_is_served_without_redirect(client: TestClient) -> None:
    response = scrape(client)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert "process_cpu_seconds_total" in response.text
    assert "process_resident_memory_bytes" in response.text


def test_openmetrics_when_asked(client: TestClient) -> None:
    response = scrape(client, accept="application/openmetrics-text; version=1.0.0")
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_counts_move_by_exactly_the_requests_sent(client: TestClient) -> None:
    for _ in range(3):
        client.get("/items/1")
    for _ in range(2):
        client.get("/items/999")
    client.get("/healthz")
    client.get("/readyz")
    scrape(client)

    assert request_count(client, "GET", "/items/{item_id}", 200) == 3
    assert request_count(client, "GET", "/items/{item_id}", 404) == 2
    routes = {s.labels.get("http_route") for s in samples(client) if s.name.startswith(DURATION)}
    assert routes == {"/items/{item_id}"}  # probes and scrapes are not counted
    assert value(client, "http_server_active_requests", http_request_method="GET") == 0
    assert value(client, "tenant_requests_total", account_id="none", outcome="success") == 5


def test_unmatched_paths_collapse_into_one_series(client: TestClient) -> None:
    for path in ("/wp-admin", "/.env", "/a/b/c", "/items", "/items/1/extra"):
        assert client.get(path).status_code == 404

    assert request_count(client, "GET", "unmatched", 404) == 5


def test_unknown_methods_become_other(client: TestClient) -> None:
    client.request("BREW", "/items/1")

    assert request_count(client, "_OTHER", "/items/{item_id}", 405) == 1


def test_exemplars_carry_the_trace_id(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/1")

    [span] = server_spans(capfire)
    exemplars = [
        s.exemplar
        for s in samples(client)
        if s.name == f"{DURATION}_bucket" and s.exemplar is not None
    ]
    assert [e.labels["trace_id"] for e in exemplars] == [format(span.context.trace_id, "032x")]


def test_tenant_account_label_is_bounded(capfire: CaptureLogfire) -> None:
    app = create_app(
        make_settings(tenant_metrics_max_accounts=2),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        for account in ("a", "b", "c", "a", "d"):
            client.get("/items/1", headers={"X-Account-Id": account})
        client.get("/items/1")

        assert value(client, "tenant_requests_total", account_id="a", outcome="success") == 2
        assert value(client, "tenant_requests_total", account_id="b", outcome="success") == 1
        assert value(client, "tenant_requests_total", account_id="other", outcome="success") == 2
        assert value(client, "tenant_requests_total", account_id="none", outcome="success") == 1


@pytest.mark.parametrize("rate", [0.0])
def test_unsampled_requests_are_still_counted(capfire: CaptureLogfire, rate: float) -> None:
    app = create_app(
        make_settings(logfire_trace_sample_rate=rate),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        client.get("/items/1")

        assert server_spans(capfire) == []
        assert request_count(client, "GET", "/items/{item_id}", 200) == 1
        assert not any(s.exemplar for s in samples(client))


def raw_scrape(client: TestClient, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """GET /metrics: response headers (lower-case names) and the body as sent (not decompressed).

    A plain dict: TestClient is built on httpx or, when a dependency pulls it in, on httpx2.
    """
{%- if cookiecutter.metrics_separate_port %}
    port = client.app.state.settings.metrics_port  # type: ignore[attr-defined]
    with httpx.stream("GET", f"http://127.0.0.1:{port}/metrics", headers=headers) as response:
        return dict(response.headers), b"".join(response.iter_raw())
{%- else %}
    with client.stream("GET", "/metrics", headers=headers, follow_redirects=False) as response:
        assert response.status_code == 200
        return dict(response.headers), b"".join(response.iter_raw())
{%- endif %}


def test_gzip_when_the_scraper_accepts_it(client: TestClient) -> None:
    client.get("/items/1")

    headers, body = raw_scrape(client, {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert "http_server_request_duration_seconds_count" in text

    headers, body = raw_scrape(client, {"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers
    assert body.decode().startswith("# HELP")


async def send_raw(app: FastAPI, requests: list[tuple[str, str]]) -> list[int]:
    """Send (method, path) requests straight to the ASGI app: far quicker than a test client."""
    statuses = []
    for method, path in requests:
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        statuses.append(status)
    return statuses


def series(client: TestClient) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for s in samples(client)}


def test_ten_thousand_junk_requests_add_no_series(capfire: CaptureLogfire) -> None:
    # What a scanner sends: random paths (any characters, any depth) and random methods. Unsampled,
    # to keep the test quick: metrics do not depend on sampling.
    rng = random.Random(20261123)  # noqa: S311 (reproducible test data, not a secret)
    alphabet = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@"
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

    def junk_path() -> str:
        depth = rng.randint(1, 6)
        return "/" + "/".join(
            "".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(depth)
        )

    def junk_method() -> str:
        if rng.random() < 0.2:  # never the same unknown method twice
            return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        return rng.choice(methods)

    app = create_app(make_settings(logfire_trace_sample_rate=0.0))
    with TestClient(app) as client:
        # One of each method label first: the series a scanner can ever reach.
        asyncio.run(send_raw(app, [(m, "/no/such/path") for m in [*methods, "BREW"]]))
        before = series(client)

        requests = [(junk_method(), junk_path()) for _ in range(10_000)]
        statuses = asyncio.run(send_raw(app, requests))
        after = series(client)
        unmatched = sum(
            s.value
            for s in samples(client)
            if s.name == f"{DURATION}_count" and s.labels["http_route"] == "unmatched"
        )

    assert set(statuses) <= {404, 405}, "a junk path matched a real route"
    assert after == before
    assert unmatched == 10_000 + len(methods) + 1


def _exposed(metrics: HttpMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()  # type: ignore[no-untyped-call]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
        # prometheus-client's own metrics add creation times; process_* differ per collector.
        if not sample.name.endswith("_created") and not sample.name.startswith("process_")
    }


def test_in_memory_metrics_expose_what_prometheus_client_would() -> None:
    """The one-process store against prometheus-client's own metrics, fed the same requests.

    Outside multiprocess mode (PROMETHEUS_MULTIPROC_DIR unset when prometheus-client was first
    imported) `MultiprocessHttpMetrics` keeps its values in memory: its metrics are plain
    prometheus-client metrics here, the reference for bucket bounds, counts, sums and names.
    """
    in_memory = InMemoryHttpMetrics(CollectorRegistry(), max_accounts=2)
    reference = MultiprocessHttpMetrics(CollectorRegistry(), max_accounts=2, path="unused")
    # Every bucket, its bounds exactly, and past the last one; more requests than one batch
    # (requests are counted in batches of 256 and at scrape time).
    durations = [0.005, 0.0051, 0.1, 10.0, 10.5, 0.0, *(step * 0.0175 for step in range(700))]
    for index, duration in enumerate(durations):
        method = ("GET", "POST")[index % 2]
        route = ("/items/{item_id}", "unmatched")[index % 3 == 0]
        status = (200, 404, 500)[index % 3]
        account = (None, "acct-a", "acct-b", "acct-c")[index % 4]
        for metrics in (in_memory, reference):
            metrics.request_started(method)
            if index % 5:
                metrics.request_finished(method, route, status, duration, account, "ab" * 16)
    for metrics in (in_memory, reference):
        metrics.header_rejections.labels("session_id").inc()
    exposed = _exposed(in_memory)
    assert exposed == _exposed(reference)
    assert exposed[("http_server_active_requests", (("http_request_method", "GET"),))] > 0
    assert exposed[("tenant_requests_total", (("account_id", "other"), ("outcome", "success")))]


def test_in_memory_metrics_keep_the_latest_exemplar_per_bucket() -> None:
    metrics = InMemoryHttpMetrics(CollectorRegistry(), max_accounts=1)
    for trace_id, duration in (
        ("a" * 32, 0.003),
        (None, 0.004),
        ("b" * 32, 0.2),
        ("c" * 32, 0.004),
    ):
        metrics.request_started("GET")
        metrics.request_finished("GET", "/items/{item_id}", 200, duration, None, trace_id)
    text = generate_latest(metrics.registry).decode()  # type: ignore[no-untyped-call]
    exemplars = {
        sample.labels["le"]: sample.exemplar
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for sample in family.samples
        if sample.name == f"{DURATION}_bucket" and sample.exemplar is not None
    }
    assert {le: (e.labels["trace_id"], e.value) for le, e in exemplars.items()} == {
        "0.005": ("c" * 32, 0.004),
        "0.25": ("b" * 32, 0.2),
    }
