"""The default service, booted as a real uvicorn process, emits the telemetry it promises.

One boot of the copier output (console script from its own uv environment, 127.0.0.1, free port,
RUN_MODE=production labelled ENVIRONMENT=e2e, every trace kept, OTLP/HTTP export to a receiver in
this process): a known set of requests is sent, /metrics is scraped before and after, then the process gets a
real SIGTERM. The span batch delay is set far beyond the test's length, so every span that
arrives was delivered by the shutdown flush (uvicorn re-raises SIGTERM, atexit never runs).
The tests below each check one promise on that recorded run.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from helpers import variants
from helpers.otlp_receiver import OtlpReceiver, Span
from helpers.process import ServiceProcess, Stopped, free_port, service_env
from helpers.project_env import ProjectEnv
from helpers.prometheus import MetricKey, scrape

pytestmark = pytest.mark.slow
# One recorded boot per variant; its tests share the worker that builds (and keeps) that env.
BOOTED = [
    pytest.param(name, marks=pytest.mark.xdist_group(f"env-copier-{name}"), id=name)
    for name in ("default", "all_features")
]

ROUTE = "/items/{item_id}"
TENANT_HEADERS = {
    "account_id": "X-Account-Id",
    "agent_instance_id": "X-Agent-Instance-Id",
    "session_id": "X-Session-Id",
    "llm_request_id": "X-LLM-Request-Id",
}
SECRET = "hunter2-secret-value"
# Longer than any run of this module: nothing is exported by the timer, only by the shutdown flush.
NEVER_MS = "600000"


def tenant(number: int, account: str = "acct-a") -> dict[str, str]:
    """Distinct tenant ids per request, so each span can be matched to the request that made it."""
    return {
        "account_id": account,
        "agent_instance_id": f"agent-{number}",
        "session_id": f"sess-{number}",
        "llm_request_id": f"llm-{number}",
    }


def as_headers(ids: dict[str, str]) -> dict[str, str]:
    return {TENANT_HEADERS[name]: value for name, value in ids.items()}


# (path, request headers, expected status, expected route template or None, tenant ids on its spans)
PLAN: list[tuple[str, dict[str, str], int, str | None, dict[str, str]]] = [
    *[(f"/items/{n % 3 + 1}", as_headers(tenant(n)), 200, ROUTE, tenant(n)) for n in range(1, 4)],
    ("/items/999", as_headers(tenant(4)), 404, ROUTE, tenant(4)),
    ("/no/such/path", {}, 404, None, {}),
    # Hostile request: secrets in the query, Authorization and Cookie; an invalid session id
    # (dropped and counted); a `baggage` header trying to set tenant attributes.
    (
        f"/items/2?api_key={SECRET}",
        {
            "X-Account-Id": "acct-b",
            "X-Session-Id": "not a valid id!",
            "Authorization": f"Bearer {SECRET}",
            "Cookie": f"session={SECRET}",
            "baggage": "account_id=evil,session_id=evil",
        },
        200,
        ROUTE,
        {"account_id": "acct-b"},
    ),
]


@dataclass
class BootRun:
    project: ProjectEnv
    spans_before_stop: list[Span]
    spans: list[Span]  # everything received, after the process exited
    statuses: list[int]
    metrics_before: dict[MetricKey, float]
    metrics_after: dict[MetricKey, float]
    stopped: Stopped
    receiver: OtlpReceiver

    def request_spans(self) -> list[Span]:
        return [s for s in self.spans if s.kind == "SERVER"]


@pytest.fixture(scope="module", params=BOOTED)
def run(
    request: pytest.FixtureRequest,
    project_env: Callable[[str, str], ProjectEnv],
    redis_url: str,
) -> BootRun:
    variant: str = request.param
    project = project_env("copier", variant)
    separate_metrics = bool(variants.answers(variant).get("metrics_separate_port"))
    with OtlpReceiver() as receiver:
        port, metrics_port = free_port(), free_port()
        env = service_env(
            project.env(),
            port=port,
            otlp_endpoint=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY=NEVER_MS,
            REDIS_URL=redis_url,  # all_features is ready once its Redis answers
        )
        if separate_metrics:
            env["METRICS_PORT"] = str(metrics_port)
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            metrics_url = (
                f"http://127.0.0.1:{metrics_port}/metrics" if separate_metrics else service.url + "/metrics"
            )
            metrics_before = scrape(metrics_url)
            statuses = [
                httpx.get(service.url + path, headers=headers, timeout=10).status_code
                for path, headers, *_ in PLAN
            ]
            # Probes and scrapes in between: neither traced nor counted.
            assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
            if separate_metrics:
                # Kept off the public port.
                assert httpx.get(service.url + "/metrics", timeout=10).status_code == 404
            metrics_after = scrape(metrics_url)
            spans_before_stop = receiver.spans
            stopped = service.stop()
    spans = receiver.spans
    return BootRun(
        project, spans_before_stop, spans, statuses, metrics_before, metrics_after, stopped, receiver
    )


def test_requests_were_answered(run: BootRun) -> None:
    assert run.statuses == [expected for _, _, expected, *_ in PLAN]


def test_sigterm_shuts_down_gracefully(run: BootRun) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is "killed by SIGTERM".
    assert run.stopped.returncode in (0, -signal.SIGTERM), str(run.stopped)
    output = run.stopped.stdout + run.stopped.stderr
    assert "Application shutdown complete" in output, str(run.stopped)
    assert "Traceback" not in output, str(run.stopped)


def test_spans_are_delivered_by_the_shutdown_flush(run: BootRun) -> None:
    assert run.receiver.errors == []
    assert [s for s in run.spans_before_stop if s.kind == "SERVER"] == [], (
        "the batch timer should not have fired"
    )
    assert len(run.request_spans()) == len(PLAN), "every request span must arrive before the process exits"


def test_exactly_one_server_span_per_request(run: BootRun) -> None:
    spans = run.request_spans()
    by_path = Counter(s.attributes.get("url.path") for s in spans)
    expected_paths = Counter(path.split("?", 1)[0] for path, *_ in PLAN)
    assert by_path == expected_paths
    assert len({s.trace_id for s in spans}) == len(PLAN), "each request is its own trace"
    assert all(s.parent is None for s in spans), "no incoming traceparent: request spans are roots"


def test_server_span_names_attributes_and_status(run: BootRun) -> None:
    spans = run.request_spans()
    for path, _headers, status, route, ids in PLAN:
        url_path = path.split("?", 1)[0]
        (span,) = [
            s
            for s in spans
            if s.attributes.get("url.path") == url_path
            and all(s.attributes.get(name) == ids.get(name) for name in TENANT_HEADERS)
        ]
        assert span.name == (f"GET {route}" if route else "GET")
        assert span.attributes.get("http.route") == route
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == status
        assert span.attributes["url.scheme"] == "http"
        assert span.attributes["network.protocol.version"] == "1.1"
        assert "error.type" not in span.attributes, "no request of the plan fails the server"
        assert span.status_code != "ERROR"
        for name in TENANT_HEADERS:
            assert span.attributes.get(name) == ids.get(name), (path, name)


def test_session_id_survives_scrubbing(run: BootRun) -> None:
    sessions = {s.attributes.get("session_id") for s in run.spans}
    assert {"sess-1", "sess-2", "sess-3", "sess-4"} <= sessions
    assert not any("Scrubbed" in str(v) for s in run.spans for v in s.attributes.values())


def test_item_fetched_log_carries_the_tenant_ids(run: BootRun) -> None:
    request_by_span_id = {s.span_id: s for s in run.request_spans()}
    logs = [s for s in run.spans if s.name == "item.fetched"]
    found = [path for path, _, status, *_ in PLAN if status == 200]
    assert len(logs) == len(found), "one item.fetched event per item found"
    for log in logs:
        assert log.is_log
        parent = request_by_span_id[log.parent]  # logged inside the request's span
        assert log.trace_id == parent.trace_id
        for name in TENANT_HEADERS:
            assert log.attributes.get(name) == parent.attributes.get(name), name


def test_resource_identifies_the_service(run: BootRun) -> None:
    identities = {
        tuple(sorted((k, str(v)) for k, v in s.resource.items() if k.startswith(("service.", "deployment."))))
        for s in run.spans
    }
    (identity,) = identities
    attributes = dict(identity)
    assert attributes["service.name"] == "my-service"
    assert attributes["service.version"] == "0.1.0"
    # The label the deployment gave, not the run mode's name.
    assert attributes["deployment.environment.name"] == "e2e"


def test_no_secret_and_no_forged_baggage_leaves_the_process(run: BootRun) -> None:
    for span in run.spans:
        text = repr(span.attributes) + span.name + repr(span.events)
        assert SECRET not in text, span
        assert "evil" not in text, span
        assert not any(key.startswith("http.request.header") for key in span.attributes), span
    assert SECRET not in run.stopped.stdout + run.stopped.stderr


def test_probes_and_scrapes_are_not_traced(run: BootRun) -> None:
    paths = {s.attributes.get("url.path") for s in run.request_spans()}
    assert not paths & {"/healthz", "/readyz", "/metrics"}


def _delta(run: BootRun, prefixes: tuple[str, ...]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    keys = set(run.metrics_before) | set(run.metrics_after)
    delta = {}
    for name, labels in keys:
        if name.startswith(prefixes):
            moved = run.metrics_after.get((name, labels), 0.0) - run.metrics_before.get((name, labels), 0.0)
            if moved:
                delta[(name, tuple(sorted(labels)))] = moved
    return delta


def test_request_counts_moved_by_exactly_the_requests_sent(run: BootRun) -> None:
    expected: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for _path, _headers, status, route, _ids in PLAN:
        labels = {
            "http_request_method": "GET",
            "http_route": route or "unmatched",
            "http_response_status_code": str(status),
        }
        expected[("http_server_request_duration_seconds_count", tuple(sorted(labels.items())))] += 1
    assert _delta(run, ("http_server_request_duration_seconds_count",)) == dict(expected)


def test_duration_histogram_buckets_agree_with_counts(run: BootRun) -> None:
    for (name, labels), value in run.metrics_after.items():
        if name == "http_server_request_duration_seconds_count":
            infinite = run.metrics_after[
                ("http_server_request_duration_seconds_bucket", labels | {("le", "+Inf")})
            ]
            assert infinite == value


def test_tenant_counters_moved_by_exactly_the_requests_sent(run: BootRun) -> None:
    expected: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for _path, _headers, status, _route, ids in PLAN:
        labels = {
            # No TENANT_METRICS_ACCOUNTS: by default no account id is on /metrics.
            "account_id": "~other" if "account_id" in ids else "~none",
            "outcome": "error" if status >= 500 else "success",
        }
        expected[("tenant_requests_total", tuple(sorted(labels.items())))] += 1
    expected[("tenant_header_rejections_total", (("header", "session_id"),))] += 1
    assert _delta(run, ("tenant_requests_total", "tenant_header_rejections_total")) == dict(expected)


def test_nothing_in_progress_after_the_requests(run: BootRun) -> None:
    active = {
        labels: v for (name, labels), v in run.metrics_after.items() if name == "http_server_active_requests"
    }
    assert active and all(value == 0 for value in active.values()), active
    assert any(name == "process_resident_memory_bytes" for name, _ in run.metrics_after)


@pytest.mark.xdist_group("env-cookiecutter-default")
def test_cookiecutter_output_boots_too(project_env: Callable[[str, str], ProjectEnv]) -> None:
    project = project_env("cookiecutter", "default")
    with OtlpReceiver() as receiver:
        port = free_port()
        # Hosting platforms set WEB_CONCURRENCY; the console script must still start one process.
        env = service_env(project.env(), port=port, otlp_endpoint=receiver.endpoint, WEB_CONCURRENCY="4")
        with ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port) as service:
            service.wait_ready()
            response = httpx.get(service.url + "/items/1", headers=as_headers(tenant(1)), timeout=10)
            assert response.status_code == 200 and response.json()["id"] == 1
            spans = receiver.wait_for(lambda spans: any(s.kind == "SERVER" for s in spans), timeout=30)
            stopped = service.stop()
    assert stopped.returncode in (0, -signal.SIGTERM), str(stopped)
    (span,) = [s for s in spans if s.kind == "SERVER"]
    assert span.name == f"GET {ROUTE}" and span.attributes["session_id"] == "sess-1"
