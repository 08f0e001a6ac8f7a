"""The local observability stack (deploy/local/), checked without a container engine.

- the compose file against the Compose Specification's JSON schema (the copy check-jsonschema
  vendors), and a broken copy is refused, so a pass means something;
- its wiring: mounts that exist, pinned images, loopback-only ports, the service exporting to the
  collector, Prometheus scraping the service's metrics port, Grafana reading Prometheus and Jaeger,
  PostgreSQL exactly when the database option is on;
- the Prometheus configuration and the rule file with `promtool check config` (the files as
  generated, laid out as compose mounts them); the end-to-end tests run them in a real Prometheus;
- the Grafana provisioning files against the structure Grafana documents for them;
- the collectors' pipelines (deploy/collector/: the gateway and the tail-sampling tier) reference
  only receivers, processors and exporters defined in their configuration and shipped by the
  pinned contrib distribution; the tiers are wired to each other, and the tail sampler's policies
  follow their documented structure and keep what the service promises (failed, error-logged and
  slow traces, the production rate of the others).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from helpers import deploy, prometheus, variants

Generated = Callable[[str, str], Path]

LOCAL = Path("deploy/local")
# The default layout, /metrics on its own port with every datastore (all_features), PostgreSQL
# without SQLAlchemy (asyncpg), Redis alone, no dashboard, no Kubernetes: every conditional part.
VARIANTS = (
    "default",
    "all_features",
    "with_asyncpg_on",
    "with_redis_on",
    "with_grafana_dashboard_off",
    "with_kubernetes_off",
)
SERVICES = {"app", "otel-collector", "otel-tail-sampler", "jaeger", "prometheus", "grafana"}
COLLECTOR = Path("deploy/collector")


def compose(project: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((project / LOCAL / "compose.yaml").read_text())
    return document


def answer(project: Path, name: str) -> Any:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())[name]


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    # check-jsonschema ships the Compose Specification's schema (vendor.compose-spec).
    tool = shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is a dev dependency of the template repository"
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_file_follows_the_compose_specification(generated: Generated, variant: str) -> None:
    result = check_compose_schema(generated("copier", variant) / LOCAL / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_refuses_a_broken_compose_file(generated: Generated, tmp_path: Path) -> None:
    document = compose(generated("copier", "default"))
    document["services"]["app"]["depends_on"]["otel-collector"]["condition"] = "service_ready"
    document["services"]["grafana"]["imgae"] = "grafana/grafana:12.0.2"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(document))
    result = check_compose_schema(broken)
    assert result.returncode == 1, result.stdout
    assert "service_ready" in result.stdout and "imgae" in result.stdout, result.stdout


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of a service's bind mounts (named volumes left out)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


@pytest.mark.parametrize("variant", VARIANTS)
def test_compose_wiring(generated: Generated, variant: str) -> None:
    project = generated("copier", variant)
    local = project / LOCAL
    services = compose(project)["services"]
    database = answer(project, "with_sqlalchemy")
    postgres = database or answer(project, "with_asyncpg")
    redis = answer(project, "with_redis")
    expected = SERVICES | ({"migrate"} if database else set()) | ({"postgres"} if postgres else set())
    assert set(services) == expected | ({"redis"} if redis else set())

    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (local / source).exists(), f"{name}: mounts {source}, which is not generated"
                assert volume.endswith(":ro"), f"{name}: the project's files are mounted read-only"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is reachable from the network"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        if name in ("app", "migrate"):
            assert (local / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository and any(c.isdigit() for c in tag) and tag != "latest", f"{name}: unpinned image"

    # The service records every trace and sends OTLP/HTTP to the gateway tier's HTTP receiver,
    # which routes each trace to the tail sampler, which stores the kept ones in Jaeger.
    app = services["app"]["environment"]
    assert app["TRACE_SAMPLING"] == "collector"
    gateway = yaml.safe_load((project / COLLECTOR / "gateway.yaml").read_text())
    http_receiver = gateway["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert app["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http_receiver.rsplit(':', 1)[1]}"
    assert bind_mounts(services["otel-collector"]) == {
        "/etc/otelcol/config.yaml": "../collector/gateway.yaml"
    }
    sampler = services["otel-tail-sampler"]
    assert bind_mounts(sampler) == {"/etc/otelcol/config.yaml": "../collector/tail-sampling.yaml"}
    assert sampler["environment"]["TRACES_ENDPOINT"] == "jaeger:4317"
    # The image's production behaviour, labelled as a local stack rather than production.
    assert (app["RUN_MODE"], app["ENVIRONMENT"]) == ("production", "local")

    # Prometheus scrapes the port /metrics is on, under the job name the rules and dashboard select,
    # and reads the rule file the PrometheusRule embeds.
    config = yaml.safe_load((local / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == answer(project, "project_slug")
    separate = answer(project, "metrics_separate_port")
    metrics_port = answer(project, "metrics_port" if separate else "http_port")
    assert job["static_configs"] == [{"targets": [f"app:{metrics_port}"]}]
    mounts = bind_mounts(services["prometheus"])
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    (rule_path,) = config["rule_files"]
    rules_dir = PurePosixPath("/etc/prometheus") / rule_path
    assert mounts[str(rules_dir.parent)] == "../prometheus" and rules_dir.name == "rules.yml"
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]

    # Grafana: anonymous admin, no login form; the dashboard mounted where its provider looks.
    grafana = services["grafana"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"
    assert grafana["environment"]["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    grafana_mounts = bind_mounts(grafana)
    if answer(project, "with_grafana_dashboard"):
        providers = yaml.safe_load((local / "grafana" / "dashboards.yaml").read_text())["providers"]
        (dashboard_target,) = [t for t, s in grafana_mounts.items() if s == "../grafana/dashboard.json"]
        assert str(PurePosixPath(dashboard_target).parent) == providers[0]["options"]["path"]
        assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target
    else:
        assert not (local / "grafana" / "dashboards.yaml").exists()
        assert not any("dashboard" in source for source in grafana_mounts.values())

    check_datastores(services, database=database, redis=redis, slug=answer(project, "project_slug"))


def check_datastores(services: dict[str, Any], *, database: bool, redis: bool, slug: str) -> None:
    """Each datastore the answers turn on, the service's URL for it, and the migration step."""
    app = services["app"]["environment"]
    depends_on = services["app"]["depends_on"]
    if database:
        url = app["DATABASE_URL"]
        environment = services["postgres"]["environment"]
        user, password, db = (environment[f"POSTGRES_{k}"] for k in ("USER", "PASSWORD", "DB"))
        assert url == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"
        # The migration step: the service's own image and command, its database, before the service.
        migrate = services["migrate"]
        assert migrate["image"] == services["app"]["image"] and migrate["build"] == services["app"]["build"]
        assert migrate["command"] == [slug, "migrate"]
        assert migrate["environment"]["DATABASE_URL"] == url
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        # The service itself does not wait for the database: it starts without it.
        assert "postgres" not in depends_on
    else:
        assert "DATABASE_URL" not in app or not app["DATABASE_URL"].startswith("postgresql+asyncpg")
        assert "migrate" not in services
    if redis:
        assert app["REDIS_URL"] == "redis://redis:6379/0"
        assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    else:
        assert "REDIS_URL" not in app


@pytest.mark.parametrize("variant", ["default", "all_features"])
def test_promtool_accepts_the_prometheus_config(generated: Generated, tmp_path: Path, variant: str) -> None:
    """The generated prometheus.yml and rule file, laid out as compose mounts them."""
    if prometheus.missing_binaries():
        pytest.skip("needs promtool (.ci/run installs it)")
    project = generated("copier", variant)
    shutil.copy(project / LOCAL / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(project / "deploy" / "prometheus", tmp_path / "rules")
    result = prometheus.promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


# --- Grafana provisioning -------------------------------------------------------------------------
# The structure Grafana documents for provisioning files ("Provision Grafana": data sources and
# dashboard providers, apiVersion 1). No package ships a schema for them, so this is that page's
# field list; unknown keys are refused, which is where typos hide.

_STRING = {"type": "string", "minLength": 1}
DATASOURCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "datasources"],
    "properties": {
        "apiVersion": {"const": 1},
        "deleteDatasources": {"type": "array"},
        "prune": {"type": "boolean"},
        "datasources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", "url", "access"],
                "properties": {
                    "name": _STRING,
                    "type": {"enum": ["prometheus", "jaeger", "tempo", "loki", "postgres"]},
                    "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
                    "access": {"enum": ["proxy", "direct"]},
                    "url": {"type": "string", "pattern": "^https?://[a-z0-9.-]+(:[0-9]+)?/?$"},
                    "orgId": {"type": "integer"},
                    "isDefault": {"type": "boolean"},
                    "editable": {"type": "boolean"},
                    "version": {"type": "integer"},
                    "basicAuth": {"type": "boolean"},
                    "user": {"type": "string"},
                    "database": {"type": "string"},
                    "withCredentials": {"type": "boolean"},
                    "jsonData": {"type": "object"},
                    "secureJsonData": {"type": "object"},
                },
            },
        },
    },
}
DASHBOARDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "providers"],
    "properties": {
        "apiVersion": {"const": 1},
        "providers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", "options"],
                "properties": {
                    "name": _STRING,
                    "orgId": {"type": "integer"},
                    "folder": {"type": "string"},
                    "folderUid": {"type": "string"},
                    "type": {"const": "file"},
                    "disableDeletion": {"type": "boolean"},
                    "allowUiUpdates": {"type": "boolean"},
                    "updateIntervalSeconds": {"type": "integer", "minimum": 1},
                    "options": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["path"],
                        "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "foldersFromFilesStructure": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
# jsonData keys of the Prometheus data source that this stack sets (Grafana's documented names).
PROMETHEUS_JSON_DATA = {"httpMethod", "exemplarTraceIdDestinations", "timeInterval"}


def check_datasources(document: dict[str, Any], services: dict[str, Any]) -> None:
    jsonschema.validate(document, DATASOURCES_SCHEMA)
    sources = document["datasources"]
    uids = {source["uid"] for source in sources}
    assert len(uids) == len(sources), "data source uids must be unique"
    assert sum(bool(source.get("isDefault")) for source in sources) == 1, "exactly one default"
    for source in sources:
        host = source["url"].split("//", 1)[1].split(":", 1)[0]
        assert host in services, f"{source['name']}: {host} is not a compose service"
    (prom,) = [s for s in sources if s["type"] == "prometheus"]
    assert set(prom["jsonData"]) <= PROMETHEUS_JSON_DATA, prom["jsonData"]
    links = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert links and all(link["name"] == "trace_id" and link["datasourceUid"] in uids for link in links)
    jaeger = next(s for s in sources if s["uid"] == links[0]["datasourceUid"])
    assert jaeger["type"] == "jaeger"


@pytest.mark.parametrize("variant", ["default", "with_grafana_dashboard_off"])
def test_grafana_provisioning_follows_its_documented_structure(generated: Generated, variant: str) -> None:
    project = generated("copier", variant)
    services = compose(project)["services"]
    datasources = yaml.safe_load((project / LOCAL / "grafana" / "datasources.yaml").read_text())
    check_datasources(datasources, services)
    providers = project / LOCAL / "grafana" / "dashboards.yaml"
    if providers.exists():
        jsonschema.validate(yaml.safe_load(providers.read_text()), DASHBOARDS_SCHEMA)


def test_grafana_checks_refuse_typos(generated: Generated) -> None:
    project = generated("copier", "default")
    services = compose(project)["services"]
    document = yaml.safe_load((project / LOCAL / "grafana" / "datasources.yaml").read_text())
    document["datasources"][0]["isDefualt"] = True
    with pytest.raises(jsonschema.ValidationError):
        check_datasources(document, services)
    document = yaml.safe_load((project / LOCAL / "grafana" / "datasources.yaml").read_text())
    document["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] = "tempo"
    with pytest.raises(AssertionError):
        check_datasources(document, services)
    providers = yaml.safe_load((project / LOCAL / "grafana" / "dashboards.yaml").read_text())
    providers["providers"][0]["options"]["pth"] = "/dashboards"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(providers, DASHBOARDS_SCHEMA)


# --- OpenTelemetry Collector ----------------------------------------------------------------------
# Component types of the contrib distribution (otel/opentelemetry-collector-contrib) that the
# collector files may use: its build manifest lists these among its receivers, processors and
# exporters (`loadbalancing` and `tail_sampling` are contrib-only).
CONTRIB_COMPONENTS = {
    "receivers": {"otlp", "nop"},
    "processors": {"batch", "memory_limiter", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "debug", "nop", "loadbalancing"},
}
PIPELINE_TYPES = {"traces", "metrics", "logs"}
COLLECTOR_FILES = ("gateway.yaml", "tail-sampling.yaml")


def pipeline_problems(config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    used: dict[str, set[str]] = {kind: set() for kind in CONTRIB_COMPONENTS}
    for pipeline, spec in config["service"]["pipelines"].items():
        if pipeline.split("/")[0] not in PIPELINE_TYPES:
            problems.append(f"pipeline {pipeline}: unknown signal")
        for kind in CONTRIB_COMPONENTS:
            for name in spec.get(kind, []):
                used[kind].add(name)
                if name not in (config.get(kind) or {}):
                    problems.append(f"pipeline {pipeline}: {kind[:-1]} {name} is not defined")
        if not spec.get("receivers") or not spec.get("exporters"):
            problems.append(f"pipeline {pipeline}: needs a receiver and an exporter")
    for kind, shipped in CONTRIB_COMPONENTS.items():
        for name in config.get(kind) or {}:
            if name.split("/")[0] not in shipped:
                problems.append(f"{kind[:-1]} {name}: not in the contrib distribution")
            if name not in used[kind]:
                problems.append(f"{kind[:-1]} {name}: defined but in no pipeline")
    return problems


def collector_config(project: Path, name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((project / COLLECTOR / name).read_text())
    return config


def env_default(value: str) -> str:
    """`${env:NAME:-default}` (the collector's substitution) -> default."""
    assert value.startswith("${env:") and ":-" in value, value
    return value.removesuffix("}").split(":-", 1)[1]


@pytest.mark.parametrize("variant", ["default", "all_features"])
@pytest.mark.parametrize("name", COLLECTOR_FILES)
def test_collector_pipelines_use_only_defined_components(
    generated: Generated, variant: str, name: str
) -> None:
    project = generated("copier", variant)
    assert pipeline_problems(collector_config(project, name)) == []
    for service in ("otel-collector", "otel-tail-sampler"):
        image = compose(project)["services"][service]["image"]
        assert image.startswith("otel/opentelemetry-collector-contrib:"), "CONTRIB_COMPONENTS describes it"


def test_the_gateway_routes_whole_traces_to_the_tail_samplers(generated: Generated) -> None:
    project = generated("copier", "default")
    gateway = collector_config(project, "gateway.yaml")
    assert set(gateway["service"]["pipelines"]) == PIPELINE_TYPES, "the service sends all three signals"
    assert gateway["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing"]
    balancing = gateway["exporters"]["loadbalancing"]
    assert balancing["routing_key"] == "traceID", "every span of a trace to the same sampler"
    resolver = balancing["resolver"]["dns"]
    assert env_default(resolver["hostname"]) in compose(project)["services"]
    sampler = collector_config(project, "tail-sampling.yaml")
    grpc = sampler["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert resolver["port"] == int(grpc.rsplit(":", 1)[1])
    assert "otlp" in balancing["protocol"]


# The tail_sampling processor's settings and the policy types this file uses, as the processor's
# documentation lists them; unknown keys are refused, which is where typos hide.
_POLICY_SETTINGS = {
    "status_code": {
        "type": "object",
        "additionalProperties": False,
        "required": ["status_codes"],
        "properties": {"status_codes": {"type": "array", "items": {"enum": ["OK", "ERROR", "UNSET"]}}},
    },
    "numeric_attribute": {
        "type": "object",
        "additionalProperties": False,
        "required": ["key", "min_value"],
        "properties": {
            "key": {"type": "string"},
            "min_value": {"type": "integer"},
            "max_value": {"type": "integer"},
            "invert_match": {"type": "boolean"},
        },
    },
    "latency": {
        "type": "object",
        "additionalProperties": False,
        "required": ["threshold_ms"],
        "properties": {"threshold_ms": {"type": "integer", "minimum": 1}},
    },
    "probabilistic": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sampling_percentage"],
        "properties": {
            "sampling_percentage": {"type": ["number", "string"]},
            "hash_salt": {"type": "string"},
        },
    },
}
TAIL_SAMPLING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision_wait", "num_traces", "policies"],
    "properties": {
        "decision_wait": {"type": "string", "pattern": "^[0-9]+(ms|s|m)$"},
        "num_traces": {"type": "integer", "minimum": 1},
        "expected_new_traces_per_sec": {"type": "integer", "minimum": 1},
        "policies": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "type", policy],
                        "properties": {
                            "name": _STRING,
                            "type": {"const": policy},
                            policy: settings,
                        },
                    }
                    for policy, settings in _POLICY_SETTINGS.items()
                ]
            },
        },
    },
}


def policies(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jsonschema.validate(config["processors"]["tail_sampling"], TAIL_SAMPLING_SCHEMA)
    return {
        policy["type"]: policy[policy["type"]] for policy in config["processors"]["tail_sampling"]["policies"]
    }


@pytest.mark.parametrize("variant", ["default", "all_features"])
def test_the_tail_sampler_keeps_what_the_service_promises(generated: Generated, variant: str) -> None:
    project = generated("copier", variant)
    kept = policies(collector_config(project, "tail-sampling.yaml"))
    assert kept["status_code"]["status_codes"] == ["ERROR"], "a 5xx or an exception"
    # Logfire's level numbers: error 17 .. fatal 21.
    assert kept["numeric_attribute"]["key"] == "logfire.level_num"
    assert kept["numeric_attribute"]["min_value"] == 17 <= 21 <= kept["numeric_attribute"]["max_value"]
    threshold = float(answer(project, "slo_latency_threshold_seconds"))
    assert kept["latency"]["threshold_ms"] == round(threshold * 1000), "SLOW_REQUEST_SECONDS' default"
    # The production default rate of the service (10%), and the local stack's own percentage.
    assert float(env_default(kept["probabilistic"]["sampling_percentage"])) == 10
    sampler = compose(project)["services"]["otel-tail-sampler"]["environment"]
    assert float(sampler["TAIL_SAMPLING_PERCENTAGE"]) == 100, "locally every trace is kept"


def test_collector_checks_refuse_mistakes(generated: Generated) -> None:
    project = generated("copier", "default")
    config = collector_config(project, "tail-sampling.yaml")
    config["service"]["pipelines"]["traces"]["exporters"] = ["otlp/tempo"]
    config["exporters"]["kafka"] = {}
    assert pipeline_problems(config) == [
        "pipeline traces: exporter otlp/tempo is not defined",
        "exporter otlp/traces: defined but in no pipeline",
        "exporter kafka: not in the contrib distribution",
        "exporter kafka: defined but in no pipeline",
    ]
    config = collector_config(project, "tail-sampling.yaml")
    config["processors"]["tail_sampling"]["policies"][2]["latency"]["treshold_ms"] = 500
    with pytest.raises(jsonschema.ValidationError):
        policies(config)


@pytest.mark.parametrize("variant", ["default", "all_features"])
def test_engines_render_the_same_stack(generated: Generated, variant: str) -> None:
    for path in sorted((generated("copier", variant) / LOCAL).rglob("*")):
        if path.is_file():
            relative = path.relative_to(generated("copier", variant))
            assert path.read_bytes() == (generated("cookiecutter", variant) / relative).read_bytes(), relative


def test_variants_cover_every_conditional_part() -> None:
    flags = [variants.effective_flags(v) for v in VARIANTS]
    assert any(f["with_sqlalchemy"] for f in flags) and not all(f["with_sqlalchemy"] for f in flags)
    assert any(not f["with_grafana_dashboard"] for f in flags)
    assert any(f["with_asyncpg"] and not f["with_sqlalchemy"] for f in flags)
    assert any(f["with_redis"] for f in flags) and not all(f["with_redis"] for f in flags)
    assert set(VARIANTS) - {"all_features", "with_asyncpg_on", "with_redis_on"} <= set(deploy.DEPLOY_VARIANTS)
