"""Sampling across a fleet: an edge service calling an internal one, at production's 10%.

Three processes of the all-features service export to one OTLP receiver, each with the
production sampling (TRACE_SAMPLING=service, LOGFIRE_TRACE_SAMPLE_RATE=0.1):

- B, the internal service: serves /items and, at /upstream/items, calls a port where nothing
  listens, so that route always fails (502);
- A, the edge: /upstream/items calls B's /items (ordinary traffic);
- A', an edge whose /upstream/items calls B's failing route (a failure in both services).

The oracle for ordinary traffic is OpenTelemetry's TraceIdRatioBased sampler: every service
applies it to the same trace id, whatever its caller's `sampled` flag says. What the receiver
gets proves it: ordinary traces complete across both services at the rate, every failure of the
internal service kept behind an unsampled caller, and no exemplar naming an unexported trace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from helpers.otlp_receiver import OtlpReceiver, Span
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from prometheus_client.openmetrics.parser import text_string_to_metric_families

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-all_features")]

RATE = 0.1
ORDINARY_FROM_CLIENTS = 150  # requests that start their trace at the edge
ORDINARY_FROM_A_CALLER = 150  # requests whose caller recorded everything (flag 01)
FAILURES_BEHIND_UNSAMPLED_CALLER = 50
FAILURES_THROUGH_THE_EDGE = 20
CALLER_SPAN_ID = "00f067aa0ba902b7"


def kept_at_rate(trace_id: str) -> bool:
    decision = TraceIdRatioBased(RATE).should_sample(None, int(trace_id, 16), "request").decision
    return decision is Decision.RECORD_AND_SAMPLE


def random_trace_id() -> str:
    return format(random.getrandbits(128) or 1, "032x")


def traceparent(trace_id: str, *, sampled: bool) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{CALLER_SPAN_ID}-{'01' if sampled else '00'}"}


def exemplar_trace_ids(metrics_url: str) -> set[str]:
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    response = httpx.get(metrics_url, headers=accept, timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.exemplar is not None
    }


@dataclass
class FleetRun:
    spans: list[Span]
    pids: dict[str, int]
    # Trace ids the test chose: ordinary requests from a recording caller, failures behind an
    # unsampled one.
    caller_traces: list[str]
    failure_traces: list[str]
    statuses: dict[str, list[int]]
    exemplars: dict[str, set[str]]
    stdout: dict[str, str]

    def servers(self, service: str, route: str) -> list[Span]:
        return [
            s
            for s in self.spans
            if s.kind == "SERVER"
            and s.resource.get("process.pid") == self.pids[service]
            and s.attributes.get("http.route") == route
        ]

    def exported_traces(self) -> set[str]:
        return {s.trace_id for s in self.spans}


@pytest.fixture(scope="module")
def fleet(project_env: Callable[[str, str], ProjectEnv], redis_url: str) -> Iterator[FleetRun]:
    project = project_env("copier", "all_features")
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    with OtlpReceiver() as receiver:
        ports = {name: free_port() for name in ("A", "A'", "B")}
        metrics_ports = {name: free_port() for name in ports}
        b_url = f"http://127.0.0.1:{ports['B']}"

        def boot(name: str, upstream: str) -> ServiceProcess:
            env = service_env(
                project.env(),
                port=ports[name],
                otlp_endpoint=receiver.endpoint,
                LOGFIRE_TRACE_SAMPLE_RATE=str(RATE),
                TRACE_SAMPLING="service",
                UPSTREAM_URL=upstream,
                TENANT_FORWARD_HOSTS="127.0.0.1",
                METRICS_PORT=str(metrics_ports[name]),
                REDIS_URL=redis_url,  # all_features is ready with its Redis
            )
            command = [str(project.console_script)]
            return ServiceProcess(command, cwd=project.root, env=env, port=ports[name])

        processes = {
            "B": boot("B", nothing_listens),
            "A": boot("A", b_url),
            "A'": boot("A'", f"{b_url}/upstream"),
        }
        statuses: dict[str, list[int]] = {"ordinary": [], "failing": [], "chain": []}
        caller_traces = [random_trace_id() for _ in range(ORDINARY_FROM_A_CALLER)]
        failure_traces = [random_trace_id() for _ in range(FAILURES_BEHIND_UNSAMPLED_CALLER)]
        try:
            for process in processes.values():
                process.start()
            for process in processes.values():
                process.wait_ready()
            edge, failing_edge = processes["A"].url, processes["A'"].url
            with httpx.Client(timeout=10) as client:
                for _ in range(ORDINARY_FROM_CLIENTS):
                    statuses["ordinary"].append(client.get(f"{edge}/upstream/items/2").status_code)
                for trace_id in caller_traces:
                    headers = traceparent(trace_id, sampled=True)
                    response = client.get(f"{edge}/upstream/items/2", headers=headers)
                    statuses["ordinary"].append(response.status_code)
            # One connection per failure: uvicorn closes the connection after a 5xx it raised.
            for trace_id in failure_traces:
                headers = traceparent(trace_id, sampled=False)
                response = httpx.get(f"{b_url}/upstream/items/1", headers=headers, timeout=10)
                statuses["failing"].append(response.status_code)
            for _ in range(FAILURES_THROUGH_THE_EDGE):
                response = httpx.get(f"{failing_edge}/upstream/items/1", timeout=10)
                statuses["chain"].append(response.status_code)
            exemplars = {
                name: exemplar_trace_ids(f"http://127.0.0.1:{metrics_ports[name]}/metrics")
                for name in processes
            }
            # SIGTERM: each service flushes what it exports before it exits.
            stdout = {name: process.stop().stdout for name, process in processes.items()}
            pids = {name: process.pid for name, process in processes.items()}
        finally:
            for process in processes.values():
                process.kill()
        yield FleetRun(receiver.spans, pids, caller_traces, failure_traces, statuses, exemplars, stdout)


def test_the_requests_were_answered_as_planned(fleet: FleetRun) -> None:
    assert set(fleet.statuses["ordinary"]) == {200}
    assert set(fleet.statuses["failing"]) == {502}
    assert set(fleet.statuses["chain"]) == {502}


def test_ordinary_traces_are_sampled_by_the_trace_id_in_both_services(fleet: FleetRun) -> None:
    edge = {s.trace_id for s in fleet.servers("A", "/upstream/items/{item_id}")}
    internal = {s.trace_id for s in fleet.servers("B", "/items/{item_id}")}
    # The same traces in both services: complete from edge to leaf, none in B alone.
    assert edge == internal
    assert all(kept_at_rate(trace_id) for trace_id in edge)
    # The caller that recorded everything did not make either service export everything.
    expected = {trace_id for trace_id in fleet.caller_traces if kept_at_rate(trace_id)}
    assert edge & set(fleet.caller_traces) == expected
    # Traces started at the edge: about RATE of them (binomial; bounds far outside 6 sigma).
    started_at_edge = edge - set(fleet.caller_traces)
    assert 1 <= len(started_at_edge) <= 45


def test_a_kept_trace_is_whole_across_services(fleet: FleetRun) -> None:
    for server_b in fleet.servers("B", "/items/{item_id}"):
        trace = [s for s in fleet.spans if s.trace_id == server_b.trace_id]
        (client,) = [s for s in trace if s.kind == "CLIENT"]
        (server_a,) = [s for s in trace if s.kind == "SERVER" and s is not server_b]
        assert server_b.parent == client.span_id
        assert client.parent == server_a.span_id
        assert {s.name for s in trace if s.is_log} >= {"item.fetched", "upstream_item.fetched"}


def test_every_failure_of_the_internal_service_is_kept_behind_an_unsampled_caller(
    fleet: FleetRun,
) -> None:
    failing = {s.trace_id: s for s in fleet.servers("B", "/upstream/items/{item_id}")}
    for trace_id in fleet.failure_traces:
        span = failing[trace_id]
        assert span.parent == CALLER_SPAN_ID
        assert span.attributes["http.response.status_code"] == 502
        # Recorded all along when the trace id is in the rate, else after the fact.
        kept_because = span.attributes.get("sampling.kept_because")
        assert kept_because == (None if kept_at_rate(trace_id) else "error")
        assert span.status_code == "ERROR"
        # Its records came with it: the route's 5xx line, as a child of the SERVER span.
        logs = [s for s in fleet.spans if s.is_log and s.parent == span.span_id]
        assert any(log.attributes["logfire.level_num"] >= 17 for log in logs)


def test_a_failure_through_the_edge_is_kept_in_both_services(fleet: FleetRun) -> None:
    edge = fleet.servers("A'", "/upstream/items/{item_id}")
    assert len(edge) == FAILURES_THROUGH_THE_EDGE
    internal = {s.trace_id for s in fleet.servers("B", "/upstream/items/{item_id}")}
    for span in edge:
        kept_because = span.attributes.get("sampling.kept_because")
        assert kept_because == (None if kept_at_rate(span.trace_id) else "error")
        assert span.trace_id in internal


def test_exemplars_name_only_exported_traces(fleet: FleetRun) -> None:
    exported = fleet.exported_traces()
    for service, trace_ids in fleet.exemplars.items():
        assert trace_ids, f"{service} attached no exemplar"
        assert trace_ids <= exported, service
    # The histogram keeps the latest exemplar per bucket: a failure's, direct or through the edge.
    failures = {s.trace_id for s in fleet.servers("B", "/upstream/items/{item_id}")}
    assert failures & fleet.exemplars["B"], "the failures' exemplars"


def test_json_lines_name_the_exported_span(fleet: FleetRun) -> None:
    lines = [json.loads(line) for line in fleet.stdout["B"].splitlines() if line.startswith("{")]
    errors = {(line["trace_id"], line["span_id"]) for line in lines if line["level"] == "error"}
    late = {(s.trace_id, s.span_id) for s in fleet.servers("B", "/upstream/items/{item_id}")}
    assert late
    assert late <= errors
