"""The generated Grafana dashboard: valid JSON with a datasource variable (no hard-coded uid),
legends rendered literally, every query parses and reads series the service (or a recording rule)
really provides, and the panels the issue asks for are there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import deploy, prometheus, variants

Generated = Callable[[str, str], Path]

DASHBOARD = Path("deploy/grafana/dashboard.json")
VARIANTS = [v for v in deploy.DEPLOY_VARIANTS if v != "with_grafana_dashboard_off"]


def load(project: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((project / DASHBOARD).read_text())
    return dashboard


def answer(variant: str, name: str) -> Any:
    return variants.answers(variant).get(name, variants.QUESTIONS[name]["default"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_engines_render_the_same_dashboard(generated: Generated, variant: str) -> None:
    assert (generated("copier", variant) / DASHBOARD).read_bytes() == (
        generated("cookiecutter", variant) / DASHBOARD
    ).read_bytes()


def test_no_dashboard_when_disabled(generated: Generated) -> None:
    for engine in deploy.ENGINES:
        assert not (generated(engine, "with_grafana_dashboard_off") / "deploy" / "grafana").exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_datasource_is_a_variable(generated: Generated, variant: str) -> None:
    dashboard = load(generated("copier", variant))
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    variable = "${" + datasource["name"] + "}"

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "datasource" in node:
                assert node["datasource"] == {"type": "prometheus", "uid": variable}, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(dashboard["panels"], "panels")
    uids = [key for key in json.dumps(dashboard["panels"]).split('"uid": ')[1:]]
    assert all(uid.startswith('"${') for uid in uids), "a panel hard-codes a datasource uid"


@pytest.mark.parametrize("variant", VARIANTS)
def test_layout_is_sane(generated: Generated, variant: str) -> None:
    dashboard = load(generated("copier", variant))
    panels = list(deploy.dashboard_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    project = generated("copier", variant)
    slug = yaml.safe_load((project / ".copier-answers.yml").read_text())["project_slug"]
    assert dashboard["uid"] == slug, "a stable uid: re-imports update the dashboard instead of copying it"
    assert len(dashboard["uid"]) <= 40, "Grafana uids are at most 40 characters"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_query_parses_and_reads_known_series(generated: Generated, variant: str) -> None:
    project = generated("copier", variant)
    queries = deploy.dashboard_queries(load(project))
    assert len(queries) >= 20
    rules = yaml.safe_load((project / "deploy" / "prometheus" / "rules.yml").read_text())
    recorded = frozenset(r["record"] for r in prometheus.rules(rules) if "record" in r)
    for query in queries:
        problems = deploy.unknown_names(deploy.grafana_to_promql(query.expr), recorded)
        assert not problems, f"{query.panel} {query.ref_id}: {problems}"
        assert f'job="{dashboard_job(project)}"' in query.expr, (
            f"{query.panel}: not scoped to the service's job"
        )


def dashboard_job(project: Path) -> str:
    return str(load(project)["uid"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_legends_are_rendered_literally(generated: Generated, variant: str) -> None:
    legends = [q.target["legendFormat"] for q in deploy.dashboard_queries(load(generated("copier", variant)))]
    assert "{{http_route}}" in legends
    assert "{{account_id}}" in legends
    assert not any("{%" in legend or "raw" in legend for legend in legends)


@pytest.mark.parametrize("variant", VARIANTS)
def test_panels_cover_the_issue(generated: Generated, variant: str) -> None:
    dashboard = load(generated("copier", variant))
    queries = deploy.dashboard_queries(dashboard)
    exprs = [q.expr for q in queries]

    def some(*needles: str) -> bool:
        return any(all(n in e for n in needles) for e in exprs)

    assert some("sum by (http_route", "http_server_request_duration_seconds_count"), "RED rate per route"
    assert some('http_response_status_code=~"5.."', "by (http_route)"), "error ratio per route"
    for quantile in ("0.5", "0.9", "0.99"):
        assert some(f"histogram_quantile({quantile},", "_bucket"), f"p{quantile} latency"
    assert some("http_server_active_requests"), "in progress"
    assert some("slo:sli_error:ratio_rate1h", "/ (1 - "), "SLO burn rate"
    assert some("1 - slo:sli_error:ratio_rate30d"), "remaining error budget"
    # Totals add up every pod; saturation is shown pod by pod.
    assert some("sum(increase(http_server_request_duration_seconds_count", "[$__range]"), "total requests"
    for per_pod in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "http_server_active_requests",
    ):
        assert some("sum by (instance)", per_pod), f"{per_pod} per pod"
    assert some("sum(up{"), "pods scraped"
    assert some("topk(", "tenant_requests_total", "account_id"), "bounded tenant breakdown"
    exemplars = [q for q in queries if q.target.get("exemplar")]
    assert exemplars and all("_bucket" in q.expr for q in exemplars), "exemplars on the latency histogram"
    # The budget arithmetic uses this variant's objectives.
    assert some(f"(1 - {answer(variant, 'slo_availability_percent')} / 100)")
    assert some(f"(1 - {answer(variant, 'slo_latency_percent')} / 100)")


@pytest.mark.parametrize("variant", VARIANTS)
def test_logfire_links_follow_the_answer(generated: Generated, variant: str) -> None:
    dashboard = load(generated("copier", variant))
    url = answer(variant, "logfire_project_url")
    links = [link for panel in deploy.dashboard_panels(dashboard) for link in panel.get("links", [])]
    links += dashboard["links"]
    if url:
        assert links and all(link["url"] == url for link in links)
        latency = [
            p
            for p in deploy.dashboard_panels(dashboard)
            if any(t.get("exemplar") for t in p.get("targets", []))
        ]
        assert all(p.get("links") for p in latency), "the latency panel links to the traces"
    else:
        assert links == []
