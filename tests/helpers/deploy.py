"""What the deploy tests know about a generated project's deploy/ artifacts.

- the variants they render (registered in variants.py, so generation is shared with other tests);
- the series the service exposes and the labels each carries (the brief's metric contract; the
  end-to-end test compares it with a real scrape), plus the Kubernetes series the pod alerts read;
- PromQL helpers: the queries of a Grafana dashboard, Grafana's variables replaced by values
  Prometheus accepts, and the metric and label names an expression uses (parsed with promql-parser).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

#: Variants with Kubernetes manifests, and all the variants whose deploy/ the tests read.
#: all_features: the migration init container, the datastore secrets and alerts.
KUBERNETES_VARIANTS = (
    "default",
    "deploy_answers",
    "slo_loose",
    "slo_strict",
    "with_grafana_dashboard_off",
    "all_features",
)
DEPLOY_VARIANTS = (*KUBERNETES_VARIANTS, "with_kubernetes_off")
ENGINES = ("copier", "cookiecutter")
#: What `kubectl kustomize` builds: the base and each environment's overlay.
BASE, DEV, STAGING, PRODUCTION = (
    "deploy",
    "deploy/overlays/dev",
    "deploy/overlays/staging",
    "deploy/overlays/production",
)
TARGETS = (BASE, DEV, STAGING, PRODUCTION)
OVERLAYS = (DEV, STAGING, PRODUCTION)

# Labels every scraped series gets from its target (Prometheus or the ServiceMonitor).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})

_HTTP = ("http_request_method", "http_route", "http_response_status_code")
#: Series the generated service exposes, with their own labels (the brief's metric contract).
SERVICE_METRICS: dict[str, frozenset[str]] = {
    "http_server_request_duration_seconds_bucket": frozenset({*_HTTP, "le"}),
    "http_server_request_duration_seconds_count": frozenset(_HTTP),
    "http_server_request_duration_seconds_sum": frozenset(_HTTP),
    "http_server_active_requests": frozenset({"http_request_method"}),
    "tenant_requests_total": frozenset({"account_id", "outcome"}),
    "tenant_header_rejections_total": frozenset({"header"}),
    "process_cpu_seconds_total": frozenset(),
    "process_resident_memory_bytes": frozenset(),
}
#: Series a service with a datastore option exposes besides (its readiness checks' outcomes).
DATASTORE_METRICS: dict[str, frozenset[str]] = {"readiness_checks_total": frozenset({"check", "result"})}
#: Series from kube-state-metrics and cAdvisor (kube-prometheus-stack) that the pod alerts read.
KUBERNETES_METRICS: dict[str, frozenset[str]] = {
    "kube_pod_container_status_restarts_total": frozenset({"namespace", "pod", "container"}),
    "kube_pod_container_resource_limits": frozenset(
        {"namespace", "pod", "container", "resource", "unit", "node"}
    ),
    "container_cpu_usage_seconds_total": frozenset(
        {"namespace", "pod", "container", "cpu", "image", "id", "name"}
    ),
    "container_memory_working_set_bytes": frozenset({"namespace", "pod", "container", "image", "id", "name"}),
}
#: Series Prometheus itself records for every target.
PROMETHEUS_METRICS: dict[str, frozenset[str]] = {"up": frozenset()}
#: Labels the recording rules put on their series.
RECORDED_LABELS = frozenset({"namespace", "job", "slo"})


def generated_path(project: Path, *parts: str) -> Path:
    return project.joinpath(*parts)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# Grafana's built-in interval variables, replaced by durations Prometheus accepts. The end-to-end
# test scrapes every second, so one minute covers the traffic it sends.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "1m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def grafana_to_promql(expr: str, extra: dict[str, str] | None = None) -> str:
    substituted = expr
    for name, value in {**GRAFANA_VARIABLES, **(extra or {})}.items():
        substituted = substituted.replace(name, value)
    leftover = re.findall(r"\$\{?\w+\}?", substituted)
    assert not leftover, f"unknown Grafana variables {leftover} in {expr!r}"
    return substituted


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref_id: str
    expr: str
    target: dict[str, Any]


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[DashboardQuery]:
    return [
        DashboardQuery(panel["title"], target["refId"], target["expr"], target)
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


@dataclass(frozen=True)
class ExprNames:
    selectors: tuple[Selector, ...]
    grouping_labels: frozenset[str]

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(selector.metric for selector in self.selectors)


def expr_names(expr: str) -> ExprNames:
    """Parse `expr` (raises ValueError on bad PromQL) and collect its metric and label names."""
    tree = promql_parser.parse(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            labels = frozenset(matcher.name for matcher in node.matchers.matchers)
            name = node.name
            if name is None:
                name = next(m.value for m in node.matchers.matchers if m.name == "__name__")
            selectors.append(Selector(name, labels - {"__name__"}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])
        return True

    promql_parser.walk(tree, visit)
    return ExprNames(tuple(selectors), frozenset(grouping))


def unknown_names(expr: str, recorded: frozenset[str]) -> list[str]:
    """Metric or label names in `expr` that neither the service, Kubernetes nor a rule provides."""
    names = expr_names(expr)
    known_metrics = {**SERVICE_METRICS, **DATASTORE_METRICS, **KUBERNETES_METRICS, **PROMETHEUS_METRICS}
    problems: list[str] = []
    all_labels: set[str] = set(TARGET_LABELS | RECORDED_LABELS)
    for labels in known_metrics.values():
        all_labels |= labels
    for selector in names.selectors:
        if selector.metric in recorded:
            allowed: frozenset[str] = RECORDED_LABELS
        elif selector.metric in known_metrics:
            allowed = known_metrics[selector.metric] | TARGET_LABELS
        else:
            problems.append(f"metric {selector.metric!r}")
            continue
        problems += [f"label {label!r} on {selector.metric}" for label in sorted(selector.labels - allowed)]
    problems += [f"grouping label {label!r}" for label in sorted(names.grouping_labels - all_labels)]
    return problems


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown document's headings: lowercased, punctuation other than
    `-` and `_` dropped, spaces turned into hyphens, repeated headings suffixed -1, -2, ..."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} +(.+?) *#* *$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


# --- manifest validation ---------------------------------------------------------------------------

KUBERNETES_VERSION = "1.30.0"


class ManifestError(AssertionError):
    pass


def _crd_models() -> dict[tuple[str, str], Any]:
    # prometheus-operator's CRDs as pydantic models generated from their openAPIV3Schema.
    from cloudcoil.models.prometheus_operator import v1

    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): v1.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): v1.PrometheusRule,
        ("monitoring.coreos.com/v1", "PodMonitor"): v1.PodMonitor,
    }


def _unset_paths(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in `given` but missing from the model's dump: fields the schema does not know."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "/"]
        problems = [f"{path}.{key}" for key in given if key not in kept]
        for key in given:
            if key in kept:
                problems += _unset_paths(given[key], kept[key], f"{path}.{key}")
        return problems
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p
            for i, (a, b) in enumerate(zip(given, kept, strict=False))
            for p in _unset_paths(a, b, f"{path}[{i}]")
        ]
    return []


def validate_manifest(doc: dict[str, Any]) -> None:
    """Strict offline validation: built-in kinds against Kubernetes' own schemas, prometheus-operator
    kinds against their CRD models. Unknown kinds, unknown fields and wrong types raise ManifestError."""
    import kubernetes_validate
    import pydantic

    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    model = _crd_models().get((api_version, kind))  # type: ignore[arg-type]
    if model is not None:
        try:
            parsed = model.model_validate(doc, strict=False)
        except pydantic.ValidationError as error:
            raise ManifestError(f"{kind}: {error}") from error
        dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        unknown = _unset_paths(doc, dumped)
        if unknown:
            raise ManifestError(f"{kind}: fields unknown to the CRD schema: {unknown}")
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        raise ManifestError(f"no schema for {api_version} {kind}: unknown kind") from error
    except kubernetes_validate.ValidationError as error:
        raise ManifestError(f"{kind}: {error.message} at {list(error.path)}") from error
