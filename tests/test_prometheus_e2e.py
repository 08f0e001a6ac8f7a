"""End to end: the default service booted with uvicorn, a real Prometheus scraping it every second
with the generated rules loaded, traffic with successes, 404s, 5xx, slow requests and tenants; then
every dashboard query returns data and every recording and alerting rule evaluates cleanly.

The service gets two test-only routes (a failing and a slow one) from a wrapper module written into
a temporary directory: the generated service itself has no debug routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from helpers import deploy, prometheus
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(prometheus.missing_binaries()), reason="needs prometheus (.ci/run installs it)"),
]

SLOW_SECONDS = 0.6  # above the default 0.5 s latency objective

WRAPPER = '''\
"""Test-only app: the generated service plus a failing, a crashing and a slow route."""

import asyncio

from fastapi import Response

from {package}.app import create_app

app = create_app()


@app.get("/e2e/fail")
async def fail() -> Response:
    return Response(status_code=503)


@app.get("/e2e/boom")
async def boom() -> None:
    raise RuntimeError("e2e test crash")


@app.get("/e2e/slow")
async def slow() -> dict[str, bool]:
    await asyncio.sleep({slow})
    return {{"slow": True}}
'''

# One wave of traffic: (path, tenant account or None, how many times).
WAVE: list[tuple[str, str | None, int]] = [
    ("/items/1", "acct-a", 10),
    ("/items/1", "acct-b", 6),
    ("/items/1", None, 4),
    ("/items/999999", "acct-a", 4),  # unknown item: 404 from the route
    ("/no/such/path", None, 4),  # unmatched: 404, http_route="unmatched"
    ("/e2e/fail", "acct-b", 3),  # 503
    ("/e2e/boom", "acct-a", 1),  # unhandled exception: 500
    ("/e2e/slow", "acct-a", 3),
    ("/items/1", "not valid!", 2),  # rejected tenant header
]


@dataclass
class Run:
    job: str
    service: ServiceProcess
    prom: prometheus.PrometheusServer
    spec: dict[str, Any]
    dashboard: dict[str, Any]
    statuses: dict[str, list[int]]


def drive(base_url: str) -> dict[str, list[int]]:
    statuses: dict[str, list[int]] = {}

    def one(path: str, account: str | None) -> tuple[str, int]:
        headers = {"X-Account-Id": account} if account else {}
        response = httpx.get(base_url + path, headers=headers, timeout=30)
        return path, response.status_code

    calls = [(path, account) for path, account, times in WAVE for _ in range(times)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, status in pool.map(lambda call: one(*call), calls):
            statuses.setdefault(path, []).append(status)
    return statuses


def total(prom: prometheus.PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    return sum(float(sample["value"][1]) for sample in result)


@pytest.fixture(scope="module")
def run(
    project_env: Callable[[str, str], ProjectEnv], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    project = project_env("copier", "default")
    answers = yaml.safe_load((project.root / ".copier-answers.yml").read_text())
    package, job = answers["package_name"], answers["project_slug"]
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    (workdir / "e2e_app.py").write_text(WRAPPER.format(package=package, slow=SLOW_SECONDS))

    spec = prometheus.rule_groups(project.root / "deploy" / "kubernetes" / "prometheusrule.yaml")
    rule_file = prometheus.write_rule_file(spec, workdir / "rules.yml")
    check = prometheus.promtool("check", "rules", rule_file)
    assert check.returncode == 0, check.stdout + check.stderr
    dashboard = json.loads((project.root / "deploy" / "grafana" / "dashboard.json").read_text())

    port = free_port()
    env = service_env(project.env(), port=port, PYTHONPATH=str(workdir))
    args = [
        str(project.venv_bin / "python"),
        "-m",
        "uvicorn",
        "e2e_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with ServiceProcess(args, cwd=project.root, env=env, port=port) as service:
        service.wait_ready()
        with prometheus.PrometheusServer(workdir / "prom", {job: [f"127.0.0.1:{port}"]}, [rule_file]) as prom:
            # rate() needs a sample from before the traffic: wait for the first successful scrape.
            prom.wait_up([job])
            statuses = drive(service.url)
            count = f'http_server_request_duration_seconds_count{{job="{job}"}}'
            first = sum(times for _, _, times in WAVE)
            prom.wait_for(f"sum({count}) >= {first}")
            # A second wave after Prometheus has seen the first: every series now grows between scrapes.
            for path, codes in drive(service.url).items():
                statuses[path] += codes
            prom.wait_for(f"sum({count}) >= {2 * first}")
            # Let every rule evaluate on the complete data at least twice.
            time.sleep(2.5)
            yield Run(job, service, prom, spec, dashboard, statuses)


def test_traffic_got_the_expected_answers(run: Run) -> None:
    assert set(run.statuses["/items/1"]) == {200}
    assert set(run.statuses["/items/999999"]) == {404}
    assert set(run.statuses["/no/such/path"]) == {404}
    assert set(run.statuses["/e2e/fail"]) == {503}
    assert set(run.statuses["/e2e/boom"]) == {500}
    assert set(run.statuses["/e2e/slow"]) == {200}


def test_scrape_target_is_healthy(run: Run) -> None:
    (target,) = run.prom.targets_health()
    assert target["health"] == "up", target
    assert target["lastError"] == ""


def test_service_exposes_the_metric_contract(run: Run) -> None:
    """The names and labels the dashboard and rules are checked against are what the service exposes."""
    series = run.prom.api("series", **{"match[]": f'{{job="{run.job}"}}'})
    exposed: dict[str, set[str]] = {}
    for labels in series:
        exposed.setdefault(labels["__name__"], set()).update(set(labels) - {"__name__", "job", "instance"})
    missing = sorted(set(deploy.SERVICE_METRICS) - set(exposed))
    assert not missing, f"the service does not expose {missing}"
    for name, labels in deploy.SERVICE_METRICS.items():
        assert exposed[name] == labels, name
    routes = {
        s.get("http_route") for s in series if s["__name__"] == "http_server_request_duration_seconds_count"
    }
    assert {"/items/{item_id}", "unmatched", "/e2e/fail", "/e2e/slow"} <= routes


def test_every_rule_evaluates_without_error(run: Run) -> None:
    groups = run.prom.wait_rules_evaluated()
    loaded = [rule["name"] for group in groups for rule in group["rules"]]
    expected = [rule.get("record") or rule["alert"] for rule in prometheus.rules(run.spec)]
    assert sorted(loaded) == sorted(expected)
    broken = [
        (rule["name"], rule.get("health"), rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule.get("health") != "ok" or rule.get("lastError")
    ]
    assert not broken, broken


def test_recording_rules_produce_the_slis(run: Run) -> None:
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
        for slo in ("availability", "latency"):
            (sample,) = run.prom.query(f'slo:sli_error:ratio_rate{window}{{slo="{slo}", job="{run.job}"}}')
            ratio = float(sample["value"][1])
            # Both waves had 4 errors (fail + boom) and 3 slow requests in 37.
            assert 0 < ratio < 1, (window, slo, ratio)


def test_burning_alerts_are_pending_or_firing(run: Run) -> None:
    """11% of requests fail and 8% are slow: the rules react as their thresholds say."""
    active = {sample["metric"]["alertname"] for sample in run.prom.query(f'ALERTS{{job="{run.job}"}}')}
    assert {
        "HighErrorRate",
        "AvailabilityErrorBudgetBurnFast",
        "AvailabilityErrorBudgetBurnSlow",
        "LatencyErrorBudgetBurnSlow",
    } <= active
    assert "HighRequestLatencyP95" not in active


def test_every_dashboard_query_returns_data(run: Run) -> None:
    queries = deploy.dashboard_queries(run.dashboard)
    assert len(queries) >= 20
    empty = []
    for query in queries:
        result = run.prom.query(deploy.grafana_to_promql(query.expr))
        if not result:
            empty.append(f"{query.panel} [{query.ref_id}]: {query.expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_dashboard_rates_see_the_traffic(run: Run) -> None:
    count = f'http_server_request_duration_seconds_count{{job="{run.job}"}}'
    by_route = run.prom.query(
        deploy.grafana_to_promql(f"sum by (http_route) (rate({count}[$__rate_interval]))")
    )
    rates = {sample["metric"]["http_route"]: float(sample["value"][1]) for sample in by_route}
    assert all(rates[route] > 0 for route in ("/items/{item_id}", "unmatched", "/e2e/fail", "/e2e/slow")), (
        rates
    )
    tenants = run.prom.query(f'sum by (account_id) (tenant_requests_total{{job="{run.job}"}})')
    accounts = {sample["metric"]["account_id"] for sample in tenants}
    assert {"acct-a", "acct-b", "none"} <= accounts


def test_latency_exemplars_carry_trace_ids(run: Run) -> None:
    now = time.time()
    exemplars = run.prom.query_exemplars(
        f'http_server_request_duration_seconds_bucket{{job="{run.job}"}}', start=now - 600, end=now
    )
    labels = [e["labels"] for series in exemplars for e in series["exemplars"]]
    assert labels, "no exemplars stored: the latency panel could not link to traces"
    assert all(len(label.get("trace_id", "")) == 32 for label in labels), labels[:3]
