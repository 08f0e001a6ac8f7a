"""Two replicas, one Prometheus: the dashboard adds up every pod and shows each one.

Two processes of the default service (what two pods of the Deployment are to Prometheus: two
targets of one job) are scraped by one real Prometheus running the project's own local-stack
configuration. Each gets a different number of requests, so a dashboard that read one pod, or
counted one twice, is caught. Then:

- "Requests in range" (the dashboard's total) equals the requests sent to both, within what
  `increase()`'s extrapolation to the window's edges can add (computed from the scrape interval
  and the span of the samples, a few percent here; a lost or doubled pod is 30% or more off);
- "Pods scraped" is 2, and every per-pod panel (load, in progress, CPU, memory) has one series
  per process, with the load split as it was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import deploy, engines, prometheus
from helpers.process import ServiceProcess, free_port, service_env
from helpers.project_env import ProjectEnv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(prometheus.missing_binaries()), reason="needs prometheus (.ci/run installs it)"),
]

SENT = {"a": 30, "b": 70}
INTERVAL = 0.5  # seconds between scrapes: more samples, less extrapolation
QUIET = 4.0  # seconds of flat counters before and after the traffic
ROUTE = "/items/{item_id}"


def panel_query(dashboard: dict[str, Any], title: str) -> str:
    (query,) = [q.expr for q in deploy.dashboard_queries(dashboard) if q.panel == title]
    return query


def observe(project: ProjectEnv, workdir: Path) -> dict[str, Any]:
    answers = yaml.safe_load((project.root / ".copier-answers.yml").read_text())
    package, job = answers["package_name"], answers["project_slug"]
    dashboard = json.loads((project.root / "deploy" / "grafana" / "dashboard.json").read_text())
    ports = {name: free_port() for name in SENT}

    def replica(name: str) -> ServiceProcess:
        port = ports[name]
        args = [str(project.venv_bin / "python"), "-m", "uvicorn", "--factory", f"{package}.app:create_app"]
        env = service_env(project.env(), port=port)
        return ServiceProcess(
            [*args, "--host", "127.0.0.1", "--port", str(port)], cwd=project.root, env=env, port=port
        )

    with replica("a") as a, replica("b") as b:
        replicas = {"a": a, "b": b}
        for service in replicas.values():
            service.wait_ready()
            # The measured series exists before the first scrape, so `increase()` sees all the traffic.
            assert httpx.get(f"{service.url}/items/1", timeout=10).status_code == 200
        addresses = [f"127.0.0.1:{ports[name]}" for name in SENT]
        _, config = prometheus.local_stack_config(
            project.root, addresses, interval=f"{int(INTERVAL * 1000)}ms"
        )
        with prometheus.PrometheusServer(workdir / "prom", {}, base_config=config) as prom:
            route_total = (
                f'sum(http_server_request_duration_seconds_count{{job="{job}", http_route="{ROUTE}"}})'
            )
            prom.wait_for(f'count(up{{job="{job}"}} == 1) == 2')
            prom.wait_for(f"{route_total} == 2")
            started = time.time()
            time.sleep(QUIET)

            def send(name: str) -> list[int]:
                url = f"{replicas[name].url}/items/1"
                return [httpx.get(url, timeout=10).status_code for _ in range(SENT[name])]

            with ThreadPoolExecutor(max_workers=2) as pool:
                statuses = dict(zip(SENT, pool.map(send, SENT), strict=True))
            prom.wait_for(f"{route_total} == {2 + sum(SENT.values())}")
            time.sleep(QUIET)
            window = f"{int(time.time() - started) + 2}s"

            def run(title: str) -> list[dict[str, Any]]:
                expr = deploy.grafana_to_promql(panel_query(dashboard, title), {"$__range": window})
                return prom.query(expr)

            return {
                "statuses": statuses,
                "addresses": addresses,
                "window": window,
                "total": run("Requests in range"),
                "by_route": prom.query(
                    f'sum by (http_route) (increase(http_server_request_duration_seconds_count{{job="{job}"}}'
                    f"[{window}]))"
                ),
                "pods": run("Pods scraped"),
                "load": run("Requests per second by pod"),
                "in_progress": run("In progress by pod"),
                "cpu": run("CPU per pod"),
                "memory": run("Resident memory per pod"),
                "per_target": prom.query(
                    f'http_server_request_duration_seconds_count{{job="{job}", http_route="{ROUTE}"}}'
                ),
            }


@pytest.fixture(scope="session")
def observed(project_env: Callable[[str, str], ProjectEnv], shared_dir: Path) -> dict[str, Any]:
    project = project_env("copier", "default")

    def build(dest: Path) -> None:
        dest.mkdir(parents=True)
        (dest / "observed.json").write_text(json.dumps(observe(project, dest), indent=1))

    folder = engines.shared_once(shared_dir, "replicas", build)
    record: dict[str, Any] = json.loads((folder / "observed.json").read_text())
    return record


def test_every_request_was_answered(observed: dict[str, Any]) -> None:
    assert {name: set(codes) for name, codes in observed["statuses"].items()} == {"a": {200}, "b": {200}}


def test_dashboard_total_equals_the_requests_sent_to_both(observed: dict[str, Any]) -> None:
    sent = sum(SENT.values())
    (total_sample,) = observed["total"]
    total = float(total_sample["value"][1])
    # Only the measured route is counted in the window (health checks and scrapes are not requests
    # the dashboard shows), so the total is the traffic sent.
    routes = {s["metric"].get("http_route"): float(s["value"][1]) for s in observed["by_route"]}
    assert set(routes) == {ROUTE}, routes
    # increase() extrapolates each series to the window's edges: at most ~1.1 scrape intervals at
    # the end of a span of at least 2 * QUIET seconds.
    tolerance = sent * 1.1 * INTERVAL / (2 * QUIET) + 0.5
    print(f"dashboard total {total:.2f}, {sent} sent, tolerance {tolerance:.2f}, {observed['window']}")
    assert abs(total - sent) <= tolerance, (total, sent, tolerance)
    # Reading one pod, or one pod twice, is far outside it.
    assert min(abs(total - v) for v in (SENT["a"], SENT["b"], sent + SENT["a"], sent + SENT["b"])) > tolerance


def test_each_pod_is_its_own_series(observed: dict[str, Any]) -> None:
    (pods,) = observed["pods"]
    assert float(pods["value"][1]) == 2
    for panel in ("load", "in_progress", "cpu", "memory"):
        instances = sorted(sample["metric"]["instance"] for sample in observed[panel])
        assert instances == sorted(observed["addresses"]), panel
    # The raw counters per target are exact: the warm-up request plus what each was sent.
    by_instance = {s["metric"]["instance"]: float(s["value"][1]) for s in observed["per_target"]}
    expected = {address: 1 + SENT[name] for name, address in zip(SENT, observed["addresses"], strict=True)}
    assert by_instance == expected
    # The per-pod load shows the uneven split that was sent.
    load = {s["metric"]["instance"]: float(s["value"][1]) for s in observed["load"]}
    a, b = observed["addresses"]
    assert load[b] > load[a] > 0, load
