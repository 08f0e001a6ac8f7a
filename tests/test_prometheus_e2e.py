"""End to end: the default service booted with uvicorn, a real Prometheus scraping it every second
with the project's own local-stack configuration (deploy/local/prometheus.yml, targets and pace
swapped in) and rule file (deploy/prometheus/rules.yml), traffic with successes, 404s, 5xx, slow
requests and tenants; then every dashboard query returns data and every recording and alerting
rule evaluates cleanly.

The service gets two test-only routes (a failing and a slow one) from a wrapper module written into
a temporary directory: the generated service itself has no debug routes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import deploy, engines, prometheus, variants
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv
from prometheus_client.utils import floatToGoString

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


def lint_exposition(url: str, workdir: Path) -> dict[str, Any]:
    """`promtool check metrics` on a real scrape (naming and HELP/TYPE conventions)."""
    scrape = workdir / "scrape.txt"
    scrape.write_bytes(httpx.get(url, timeout=10).content)
    with scrape.open("rb") as stdin:
        result = subprocess.run(
            [prometheus.PROMTOOL, "check", "metrics"], stdin=stdin, capture_output=True, text=True, timeout=60
        )
    return {"returncode": result.returncode, "output": result.stdout + result.stderr}


def observe(project: ProjectEnv, workdir: Path, redis_url: str) -> dict[str, Any]:
    """Boot the service and Prometheus, drive the traffic, and record what Prometheus answers."""
    answers = yaml.safe_load((project.root / ".copier-answers.yml").read_text())
    package, job = answers["package_name"], answers["project_slug"]
    (workdir / "e2e_app.py").write_text(WRAPPER.format(package=package, slow=SLOW_SECONDS))
    spec = yaml.safe_load((project.root / "deploy" / "prometheus" / "rules.yml").read_text())
    dashboard = json.loads((project.root / "deploy" / "grafana" / "dashboard.json").read_text())

    port = free_port()
    # acct-a is counted under its id; acct-b, not listed, as ~other. all_features is ready with Redis.
    extra = {"PYTHONPATH": str(workdir), "TENANT_METRICS_ACCOUNTS": "acct-a", "REDIS_URL": redis_url}
    metrics_port = port
    if answers["metrics_separate_port"]:
        metrics_port = free_port()
        extra["METRICS_PORT"] = str(metrics_port)
    env = service_env(project.env(), port=port, **extra)
    args = [str(project.venv_bin / "python"), "-m", "uvicorn", "e2e_app:app", "--port", str(port)]
    with ServiceProcess([*args, "--host", "127.0.0.1"], cwd=project.root, env=env, port=port) as service:
        service.wait_ready()
        public_metrics = httpx.get(f"{service.url}/metrics", timeout=10).status_code
        _, config = prometheus.local_stack_config(project.root, [f"127.0.0.1:{metrics_port}"])
        with prometheus.PrometheusServer(workdir / "prom", {}, base_config=config) as prom:
            # rate() needs a sample from before the traffic: wait for the first successful scrape.
            prom.wait_up([job])
            statuses = drive(service.url)
            count = f'http_server_request_duration_seconds_count{{job="{job}"}}'
            first = sum(times for _, _, times in WAVE)
            prom.wait_for(f"sum({count}) >= {first}")
            # A second wave once Prometheus has seen the first: every series grows between scrapes.
            for path, codes in drive(service.url).items():
                statuses[path] += codes
            prom.wait_for(f"sum({count}) >= {2 * first}")
            # Let every rule evaluate on the complete data at least twice.
            time.sleep(2.5)
            groups = prom.wait_rules_evaluated()
            now = time.time()
            return {
                "job": job,
                "metrics_separate_port": answers["metrics_separate_port"],
                "datastores": answers["with_sqlalchemy"] or answers["with_redis"],
                "public_metrics_status": public_metrics,
                "spec": spec,
                "statuses": statuses,
                "targets": prom.targets_health(),
                "series": prom.api("series", **{"match[]": f'{{job="{job}"}}'}),
                "rule_groups": groups,
                "slis": {
                    f"{slo} {window}": prom.query(
                        f'slo:sli_error:ratio_rate{window}{{slo="{slo}", job="{job}"}}'
                    )
                    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
                    for slo in ("availability", "latency")
                },
                "alerts": prom.query(f'ALERTS{{job="{job}"}}'),
                "dashboard": [
                    {
                        "panel": q.panel,
                        "ref": q.ref_id,
                        "expr": q.expr,
                        "result": prom.query(deploy.grafana_to_promql(q.expr)),
                    }
                    for q in deploy.dashboard_queries(dashboard)
                ],
                "rate_by_route": prom.query(
                    deploy.grafana_to_promql(f"sum by (http_route) (rate({count}[$__rate_interval]))")
                ),
                "tenants": prom.query(f'sum by (account_id) (tenant_requests_total{{job="{job}"}})'),
                "exemplars": prom.query_exemplars(
                    f'http_server_request_duration_seconds_bucket{{job="{job}"}}', start=now - 600, end=now
                ),
                "lint": lint_exposition(f"http://127.0.0.1:{metrics_port}/metrics", workdir),
                "prometheus_log": prom.log(),
                "service_output": service.describe(),
            }


# The default layout (/metrics on the HTTP port) and /metrics on a port of its own (all_features,
# whose environment the generated-project checks sync anyway).
@pytest.fixture(scope="session", params=["default", "all_features"])
def observed(
    request: pytest.FixtureRequest,
    project_env: Callable[[str, str], ProjectEnv],
    shared_dir: Path,
    redis_url: str,
) -> dict[str, Any]:
    """One boot per variant per test session, shared by every xdist worker through a JSON record."""
    project = project_env("copier", request.param)

    def build(dest: Path) -> None:
        dest.mkdir(parents=True)
        record = observe(project, dest, redis_url)
        (dest / "observed.json").write_text(json.dumps(record, indent=1))

    folder = engines.shared_once(shared_dir, f"prometheus-e2e-{request.param}", build)
    record: dict[str, Any] = json.loads((folder / "observed.json").read_text())
    return record


def test_traffic_got_the_expected_answers(observed: dict[str, Any]) -> None:
    statuses = observed["statuses"]
    assert set(statuses["/items/1"]) == {200}
    assert set(statuses["/items/999999"]) == {404}
    assert set(statuses["/no/such/path"]) == {404}
    assert set(statuses["/e2e/fail"]) == {503}
    assert set(statuses["/e2e/boom"]) == {500}
    assert set(statuses["/e2e/slow"]) == {200}


def test_scrape_target_is_healthy(observed: dict[str, Any]) -> None:
    (target,) = observed["targets"]
    assert target["health"] == "up", target
    assert target["lastError"] == ""
    # With a separate metrics port, the public HTTP port does not serve /metrics.
    assert observed["public_metrics_status"] == (404 if observed["metrics_separate_port"] else 200)


def test_service_exposes_the_metric_contract(observed: dict[str, Any]) -> None:
    """The names and labels the dashboard and rules are checked against are what the service exposes."""
    series = observed["series"]
    exposed: dict[str, set[str]] = {}
    for labels in series:
        exposed.setdefault(labels["__name__"], set()).update(set(labels) - {"__name__", "job", "instance"})
    contract = dict(deploy.SERVICE_METRICS)
    if observed["datastores"]:
        contract.update(deploy.DATASTORE_METRICS)  # its readiness checks ran while it booted
    missing = sorted(set(contract) - set(exposed))
    assert not missing, f"the service does not expose {missing}"
    for name, labels in contract.items():
        assert exposed[name] == labels, name
    count = "http_server_request_duration_seconds_count"
    routes = {s.get("http_route") for s in series if s["__name__"] == count}
    assert {"/items/{item_id}", "unmatched", "/e2e/fail", "/e2e/slow"} <= routes
    # Every latency objective offered by copier.yml is a bucket bound, spelled as the rules select it.
    bounds = {s["le"] for s in series if s["__name__"] == "http_server_request_duration_seconds_bucket"}
    choices = variants.QUESTIONS["slo_latency_threshold_seconds"]["choices"]
    assert {floatToGoString(float(choice)) for choice in choices} <= bounds, sorted(bounds)


def test_scrape_passes_promtool_lint(observed: dict[str, Any]) -> None:
    assert observed["lint"]["returncode"] == 0, observed["lint"]["output"]


def test_every_rule_evaluates_without_error(observed: dict[str, Any]) -> None:
    groups = observed["rule_groups"]
    loaded = [rule["name"] for group in groups for rule in group["rules"]]
    expected = [rule.get("record") or rule["alert"] for rule in prometheus.rules(observed["spec"])]
    assert sorted(loaded) == sorted(expected)
    broken = [
        (rule["name"], rule.get("health"), rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule.get("health") != "ok" or rule.get("lastError")
    ]
    assert not broken, broken


def test_recording_rules_produce_the_slis(observed: dict[str, Any]) -> None:
    for name, result in observed["slis"].items():
        (sample,) = result
        ratio = float(sample["value"][1])
        # Each wave had 4 failures (fail + boom) and 3 slow requests in 37.
        assert 0 < ratio < 1, (name, ratio)


def test_burning_alerts_are_pending_or_firing(observed: dict[str, Any]) -> None:
    """11% of requests fail and 8% are slow: the rules react as their thresholds say."""
    active = {sample["metric"]["alertname"] for sample in observed["alerts"]}
    burning = {"HighErrorRate", "AvailabilityErrorBudgetBurnFast", "AvailabilityErrorBudgetBurnSlow"}
    assert burning | {"LatencyErrorBudgetBurnSlow"} <= active
    assert "HighRequestLatencyP95" not in active


def test_every_dashboard_query_returns_data(observed: dict[str, Any]) -> None:
    queries = observed["dashboard"]
    assert len(queries) >= 20
    empty = [f"{q['panel']} [{q['ref']}]: {q['expr']}" for q in queries if not q["result"]]
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_dashboard_rates_see_the_traffic(observed: dict[str, Any]) -> None:
    rates = {s["metric"]["http_route"]: float(s["value"][1]) for s in observed["rate_by_route"]}
    routes = ("/items/{item_id}", "unmatched", "/e2e/fail", "/e2e/slow")
    assert all(rates[route] > 0 for route in routes), rates
    accounts = {sample["metric"]["account_id"] for sample in observed["tenants"]}
    assert accounts == {"acct-a", "~other", "~none"}


def test_latency_exemplars_carry_trace_ids(observed: dict[str, Any]) -> None:
    labels = [e["labels"] for series in observed["exemplars"] for e in series["exemplars"]]
    assert labels, "no exemplars stored: the latency panel could not link to traces"
    assert all(len(label.get("trace_id", "")) == 32 for label in labels), labels[:3]
