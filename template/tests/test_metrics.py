"""Telemetry contract: Prometheus metrics move by exactly the requests sent.

The metrics live in prometheus_client's default registry, shared by every app a test builds in
this process: tests compare values before and after what they send.
"""

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
from prometheus_client import Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.types import Message

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.telemetry.metrics import OTHER_ACCOUNT, AccountLabels

from conftest import empty_body, http_scope, make_settings, scrape, server_spans

DURATION = "http_server_request_duration_seconds"


def samples(client: TestClient) -> list[Sample]:
    response = scrape(client, accept="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    return [
        sample
        for family in text_string_to_metric_families(response.text)  # type: ignore[no-untyped-call]
        for sample in family.samples
    ]


def value(client: TestClient, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series that does not exist (yet)."""
    for sample in samples(client):
        if sample.name == name and sample.labels == labels:
            return sample.value
    return 0.0


def request_count(client: TestClient, method: str, route: str, status: int) -> float:
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
    ok, missing = (request_count(client, "GET", "/items/{item_id}", s) for s in (200, 404))
    untracked = value(client, "tenant_requests_total", account_id="~none", outcome="success")
    for _ in range(3):
        client.get("/items/1")
    for _ in range(2):
        client.get("/items/999")
    client.get("/healthz")
    client.get("/readyz")
    scrape(client)

    assert request_count(client, "GET", "/items/{item_id}", 200) == ok + 3
    assert request_count(client, "GET", "/items/{item_id}", 404) == missing + 2
    routes = {s.labels.get("http_route") for s in samples(client) if s.name.startswith(DURATION)}
    assert not routes & {"/healthz", "/readyz", "/metrics"}  # probes and scrapes are not counted
    assert value(client, "http_server_active_requests", http_request_method="GET") == 0
    assert (
        value(client, "tenant_requests_total", account_id="~none", outcome="success")
        == untracked + 5
    )


def test_unmatched_paths_collapse_into_one_series(client: TestClient) -> None:
    before = request_count(client, "GET", "unmatched", 404)
    for path in ("/wp-admin", "/.env", "/a/b/c", "/items", "/items/1/extra"):
        assert client.get(path).status_code == 404

    assert request_count(client, "GET", "unmatched", 404) == before + 5


def test_fastapis_own_pages_are_labelled_by_their_path(client: TestClient) -> None:
    before = request_count(client, "GET", "/openapi.json", 200)
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200

    assert request_count(client, "GET", "/openapi.json", 200) == before + 1
    assert request_count(client, "GET", "/docs", 200) >= 1


def test_unknown_methods_become_other(client: TestClient) -> None:
    before = request_count(client, "_OTHER", "/items/{item_id}", 405)
    client.request("BREW", "/items/1")

    assert request_count(client, "_OTHER", "/items/{item_id}", 405) == before + 1


def test_exemplars_carry_the_trace_id(client: TestClient, capfire: CaptureLogfire) -> None:
    client.get("/items/1")

    [span] = server_spans(capfire)
    trace_ids = {
        s.exemplar.labels["trace_id"]
        for s in samples(client)
        if s.name == f"{DURATION}_bucket" and s.exemplar is not None
    }
    assert format(span.context.trace_id, "032x") in trace_ids


def test_account_labels_are_the_listed_accounts_and_labels_no_id_can_take(
    capfire: CaptureLogfire,
) -> None:
    app = create_app(
        make_settings(tenant_metrics_accounts="acct-listed,acct-idle"),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    labels = ("acct-listed", "acct-idle", "acct-unlisted", "~other", "~none", "other", "none")
    with TestClient(app) as client:

        def counts() -> dict[str, float]:
            return {
                label: value(client, "tenant_requests_total", account_id=label, outcome="success")
                for label in labels
            }

        before = counts()
        # `other` and `none` are valid account ids: they must not land in the sentinels' series
        # by name, nor can a client send `~other` (not an id: dropped, so the request has none).
        for account in ("acct-unlisted", "acct-listed", "other", "none", "acct-listed", "~other"):
            assert client.get("/items/1", headers={"X-Account-Id": account}).status_code == 200
        client.get("/items/1")
        after = counts()

    moved = {label: after[label] - before[label] for label in labels}
    assert moved == {
        "acct-listed": 2,
        "acct-idle": 0,
        "acct-unlisted": 0,
        "~other": 3,
        "~none": 2,
        "other": 0,
        "none": 0,
    }


def test_account_labels_do_not_depend_on_arrival_order() -> None:
    """Two pods (or one after a restart) with the same list label every account alike."""
    ids = [f"acct-{n}" for n in range(20)]
    listed = ids[::3]
    pod_a, pod_b = AccountLabels(listed), AccountLabels(listed)
    seen_by_a = {account: pod_a.label(account) for account in ids}
    seen_by_b = {account: pod_b.label(account) for account in reversed(ids)}
    assert seen_by_a == seen_by_b
    assert set(seen_by_a.values()) == {*listed, OTHER_ACCOUNT}


def test_by_default_no_account_id_is_on_metrics(client: TestClient) -> None:
    for account in ("acct-first", "acct-second"):
        assert client.get("/items/1", headers={"X-Account-Id": account}).status_code == 200
    exposition = scrape(client).text
    assert 'account_id="~other"' in exposition
    assert "acct-first" not in exposition
    assert "acct-second" not in exposition


@pytest.mark.parametrize("rate", [0.0])
def test_unsampled_requests_are_still_counted(capfire: CaptureLogfire, rate: float) -> None:
    app = create_app(
        make_settings(logfire_trace_sample_rate=rate),
        additional_span_processors=[SimpleSpanProcessor(capfire.exporter)],
    )
    with TestClient(app) as client:
        before = request_count(client, "GET", "/items/{item_id}", 200)
        exemplars = [s.exemplar for s in samples(client) if s.exemplar]
        client.get("/items/1")

        assert server_spans(capfire) == []
        assert request_count(client, "GET", "/items/{item_id}", 200) == before + 1
        # No link to a trace that was not exported.
        assert [s.exemplar for s in samples(client) if s.exemplar] == exemplars


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

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(http_scope(method, path), empty_body, send)
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

    assert set(statuses) <= {404, 405}, "a junk path matched a real route"
    assert after == before


# A team's own metric, defined at module level as prometheus_client's docs show.
ORDERS_CREATED = Counter("test_orders_created", "Orders created.", ["channel"])


def test_a_metric_defined_anywhere_is_served(client: TestClient) -> None:
    before = value(client, "test_orders_created_total", channel="web")
    ORDERS_CREATED.labels(channel="web").inc()

    assert value(client, "test_orders_created_total", channel="web") == before + 1


def test_every_rejection_series_exists_before_the_first_rejection(client: TestClient) -> None:
    names = {
        s.labels["header"] for s in samples(client) if s.name == "tenant_header_rejections_total"
    }
    assert names == {"account_id", "agent_instance_id", "session_id", "llm_request_id"}
