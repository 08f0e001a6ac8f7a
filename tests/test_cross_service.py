"""Two generated services, one trace, one tenant: the tenant context crosses a service call.

Service A is the copier output with every feature (the httpx client and its /upstream example
route); service B is the cookiecutter output of the default service. Both run as real processes
(production settings, every trace kept) exporting to one OTLP receiver. One request with the four
tenant headers goes to A, whose /upstream route calls B: the spans of both services, the CLIENT
span between them and every log record carry the same ids, and B counts the call under the
account. A second instance of A, whose upstream is a recording server on another loopback address
that is not a trusted host, shows that a call leaving the trusted hosts carries no tenant header.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from helpers.otlp_receiver import OtlpReceiver, Span
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

HEADER_NAMES = {
    "account_id": "X-Account-Id",
    "agent_instance_id": "X-Agent-Instance-Id",
    "session_id": "X-Session-Id",
    "llm_request_id": "X-LLM-Request-Id",
}
TENANT = {
    "account_id": "acct-cross",
    "agent_instance_id": "agent-cross",
    "session_id": "sess-cross",
    "llm_request_id": "llm-cross",
}
# The request that A' sends to the untrusted host.
OTHER_TENANT = {name: value.replace("cross", "other") for name, value in TENANT.items()}
# Not in TENANT_FORWARD_HOSTS below: stands for a third party on the open internet.
UNTRUSTED_ADDRESS = "127.0.0.2"


def as_headers(ids: dict[str, str]) -> dict[str, str]:
    return {HEADER_NAMES[name]: value for name, value in ids.items()}


class Recorder:
    """An HTTP server that answers any GET with an item and keeps each request's headers."""

    def __init__(self, host: str) -> None:
        self.received: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.received.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps({"id": 2, "name": "from a third party"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def tenant_requests(url: str) -> dict[str, float]:
    """tenant_requests_total by account_id (successful requests)."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.labels["account_id"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "tenant_requests_total" and sample.labels["outcome"] == "success"
    }


@dataclass
class CrossRun:
    spans: list[Span]
    pids: dict[str, int]  # "A", "A'", "B" -> process id (the `process.pid` resource attribute)
    responses: dict[str, httpx.Response]
    b_counts_before: dict[str, float]
    b_counts_after: dict[str, float]
    recorded: list[dict[str, str]]
    outputs: str

    def of(self, service: str) -> list[Span]:
        return [s for s in self.spans if s.resource.get("process.pid") == self.pids[service]]

    def trace(self) -> list[Span]:
        """Every span and log of the trace the tenant's request to A started."""
        (root,) = [s for s in self.of("A") if s.kind == "SERVER"]
        return [s for s in self.spans if s.trace_id == root.trace_id]


@pytest.fixture(scope="module")
def run(project_env: Callable[[str, str], ProjectEnv], redis_url: str) -> Iterator[CrossRun]:
    service_a = project_env("copier", "all_features")
    service_b = project_env("cookiecutter", "default")
    with OtlpReceiver() as receiver, Recorder(UNTRUSTED_ADDRESS) as recorder:
        ports = {name: free_port() for name in ("A", "A'", "B")}
        common = {"ACCESS_LOG": "true", "TENANT_FORWARD_HOSTS": "127.0.0.1"}

        def boot(project: ProjectEnv, name: str, **extra: str) -> ServiceProcess:
            port = ports[name]
            env = service_env(project.env(), port=port, otlp_endpoint=receiver.endpoint, **common, **extra)
            return ServiceProcess([str(project.console_script)], cwd=project.root, env=env, port=port)

        b_url = f"http://127.0.0.1:{ports['B']}"
        # A (all features) serves /metrics on its own port: each instance needs a free one.
        processes = {
            # B counts its accounts by id only when they are listed.
            "B": boot(service_b, "B", TENANT_METRICS_ACCOUNTS=TENANT["account_id"]),
            "A": boot(service_a, "A", UPSTREAM_URL=b_url, METRICS_PORT=str(free_port()), REDIS_URL=redis_url),
            "A'": boot(
                service_a, "A'", UPSTREAM_URL=recorder.url, METRICS_PORT=str(free_port()), REDIS_URL=redis_url
            ),
        }
        try:
            for process in processes.values():
                process.start()
            for process in processes.values():
                process.wait_ready()
            before = tenant_requests(b_url + "/metrics")
            path = "/upstream/items/2"
            responses = {
                name: httpx.get(processes[name].url + path, headers=as_headers(ids), timeout=10)
                for name, ids in (("A", TENANT), ("A'", OTHER_TENANT))
            }
            after = tenant_requests(b_url + "/metrics")
            # SIGTERM: each service flushes its spans and logs before it exits.
            outputs = "".join(str(process.stop()) for process in processes.values())
            pids = {name: process.pid for name, process in processes.items()}
        finally:
            for process in processes.values():
                process.kill()
        yield CrossRun(receiver.spans, pids, responses, before, after, list(recorder.received), outputs)


def test_both_calls_were_answered(run: CrossRun) -> None:
    assert run.responses["A"].status_code == 200, run.outputs
    assert run.responses["A"].json() == {"id": 2, "name": "screwdriver"}, "B's item, through A"
    assert run.responses["A'"].status_code == 200, run.outputs
    assert run.responses["A'"].json() == {"id": 2, "name": "from a third party"}


def test_one_trace_spans_both_services(run: CrossRun) -> None:
    trace = run.trace()
    (server_a,) = [s for s in trace if s.kind == "SERVER" and s in run.of("A")]
    (server_b,) = [s for s in trace if s.kind == "SERVER" and s in run.of("B")]
    (client,) = [s for s in trace if s.kind == "CLIENT"]
    assert server_a.name == "GET /upstream/items/{item_id}" and server_a.parent is None
    assert client in run.of("A") and client.parent == server_a.span_id
    assert server_b.name == "GET /items/{item_id}" and server_b.parent == client.span_id
    # Nothing of the request ended up in another trace.
    assert {s.trace_id for s in run.spans if s.attributes.get("llm_request_id") == "llm-cross"} == {
        server_a.trace_id
    }


def test_every_span_and_log_of_the_trace_carries_the_tenant(run: CrossRun) -> None:
    trace = run.trace()
    logs = [s for s in trace if s.is_log]
    # At least the route's event and the access line in A, the item event and access line in B.
    assert {s.name for s in logs if s in run.of("A")} >= {"upstream_item.fetched"}
    assert {s.name for s in logs if s in run.of("B")} >= {"item.fetched"}
    assert len([s for s in logs if s in run.of("A")]) >= 2 and len([s for s in logs if s in run.of("B")]) >= 2
    for span in trace:
        assert {name: span.attributes.get(name) for name in TENANT} == TENANT, (span.kind, span.name)


def test_the_called_service_counts_the_call_under_the_account(run: CrossRun) -> None:
    moved = {
        account: run.b_counts_after.get(account, 0.0) - run.b_counts_before.get(account, 0.0)
        for account in set(run.b_counts_after) | set(run.b_counts_before)
    }
    assert {account: n for account, n in moved.items() if n} == {"acct-cross": 1.0}


def test_a_call_to_an_untrusted_host_carries_no_tenant_header(run: CrossRun) -> None:
    (headers,) = run.recorded
    sent = {name for name in headers if name in {h.lower() for h in HEADER_NAMES.values()}}
    assert sent == set(), headers
    assert "baggage" not in headers
    assert "traceparent" in headers, "the trace id still goes out, as before"
    # A' itself still recorded its own request with the caller's tenant.
    (server,) = [s for s in run.of("A'") if s.kind == "SERVER"]
    assert {name: server.attributes.get(name) for name in TENANT} == OTHER_TENANT
