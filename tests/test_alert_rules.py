"""The generated rule file (deploy/prometheus/rules.yml) and the PrometheusRule that embeds it:
promtool accepts them, the unit tests the project ships pass and really cover every alert, every
expression parses and reads only series that exist, and every alert links to a runbook section
that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import deploy, prometheus, variants
from prometheus_client.utils import floatToGoString

Generated = Callable[[str, str], Path]

RULE_FILE = Path("deploy/prometheus/rules.yml")
UNIT_TESTS = Path("deploy/prometheus/rules.test.yml")
CHECK_SCRIPT = Path("deploy/prometheus/check.sh")
MANIFEST = Path("deploy/kubernetes/prometheusrule.yaml")
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
VARIANTS = deploy.DEPLOY_VARIANTS
# `> 0.05`, `> 2` or `> (14.4 * (1 - 99.9 / 100))`: an alert's threshold comparison.
THRESHOLD = re.compile(r"\s*>\s*(\d+(\.\d+)?|\((?:[^()]|\([^()]*\))*\))")

pytestmark = pytest.mark.skipif(
    bool(prometheus.missing_binaries()), reason="needs promtool (.ci/run installs it)"
)


def spec_of(project: Path) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((project / RULE_FILE).read_text(encoding="utf-8"))
    return spec


def alerts(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in prometheus.rules(spec) if "alert" in rule]


def recorded_names(spec: dict[str, Any]) -> frozenset[str]:
    return frozenset(rule["record"] for rule in prometheus.rules(spec) if "record" in rule)


def run_unit_tests(project: Path, spec: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """The project's promtool unit tests against `spec` (its own rules, or a mutated copy)."""
    workdir.mkdir(parents=True, exist_ok=True)
    prometheus.write_rule_file(spec, workdir / "rules.yml")
    shutil.copy(project / UNIT_TESTS, workdir / UNIT_TESTS.name)
    return prometheus.promtool("test", "rules", UNIT_TESTS.name, cwd=workdir)


@pytest.mark.parametrize("variant", VARIANTS)
def test_engines_render_the_same_rules_and_tests(generated: Generated, variant: str) -> None:
    for relative in (RULE_FILE, UNIT_TESTS, CHECK_SCRIPT, MANIFEST):
        copier_file, cookiecutter_file = (generated(engine, variant) / relative for engine in deploy.ENGINES)
        assert copier_file.exists() == cookiecutter_file.exists(), relative
        if copier_file.exists():
            assert copier_file.read_bytes() == cookiecutter_file.read_bytes(), relative


@pytest.mark.parametrize("variant", deploy.KUBERNETES_VARIANTS)
def test_prometheusrule_embeds_the_rule_file(generated: Generated, variant: str) -> None:
    """One source: the PrometheusRule's spec is the rule file the local Prometheus loads, byte for
    byte once dedented (what check.sh and `make prometheusrule` rely on), and equal as YAML."""
    project = generated("copier", variant)
    manifest = (project / MANIFEST).read_text(encoding="utf-8")
    body = manifest.partition("\nspec:\n")[2]
    dedented = "".join(line.removeprefix("  ") for line in body.splitlines(keepends=True))
    assert dedented == (project / RULE_FILE).read_text(encoding="utf-8")
    assert prometheus.rule_groups(project / MANIFEST) == spec_of(project)


@pytest.mark.parametrize("variant", VARIANTS)
def test_promtool_check_rules(generated: Generated, tmp_path: Path, variant: str) -> None:
    rule_file = prometheus.write_rule_file(spec_of(generated("copier", variant)), tmp_path / "rules.yml")
    result = prometheus.promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_unit_tests_pass(generated: Generated, tmp_path: Path, variant: str) -> None:
    project = generated("copier", variant)
    result = run_unit_tests(project, spec_of(project), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("engine", deploy.ENGINES)
def test_shipped_run_script_checks_and_tests_the_rules(
    generated: Generated, tmp_path: Path, engine: str
) -> None:
    # Run it from a copy, the way a developer runs it in their checkout (the shared output stays read-only).
    project = tmp_path / "project"
    shutil.copytree(generated(engine, "default") / "deploy", project / "deploy")
    shutil.copy(generated(engine, "default") / "Makefile", project / "Makefile")
    script = project / CHECK_SCRIPT
    assert script.stat().st_mode & 0o111, "check.sh must be executable"
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 25 rules found" in result.stdout
    assert "spec is deploy/prometheus/rules.yml" in result.stdout
    # An edit to the rule file alone makes the check fail until `make prometheusrule` copies it.
    rules = project / RULE_FILE
    rules.write_text(rules.read_text().replace("for: 15m", "for: 20m"))
    stale = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert stale.returncode == 1 and "run make prometheusrule" in stale.stderr, stale.stdout + stale.stderr
    copied = subprocess.run(
        ["make", "prometheusrule"], cwd=project, capture_output=True, text=True, check=False
    )
    assert copied.returncode == 0, copied.stderr
    assert "for: 20m" in (project / MANIFEST).read_text()
    fresh = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr


def mutated_failures(project: Path, workdir: Path, mutate: Callable[[dict[str, Any]], None]) -> str:
    """Apply `mutate` to every alert at once and return promtool's report of the failing checks."""
    spec = yaml.safe_load(yaml.safe_dump(spec_of(project)))
    for rule in alerts(spec):
        mutate(rule)
    result = run_unit_tests(project, spec, workdir)
    assert result.returncode != 0, "the unit tests pass with every alert broken"
    return result.stdout + result.stderr


def test_unit_tests_catch_alerts_that_never_fire(generated: Generated, tmp_path: Path) -> None:
    """Each alert's firing case is real: promtool reports every alert once none can fire."""

    def never(rule: dict[str, Any]) -> None:
        rule["expr"] = f"({rule['expr']}) and on() vector(0) > 1"

    project = generated("copier", "default")
    report = mutated_failures(project, tmp_path, never)
    missed = [
        rule["alert"] for rule in alerts(spec_of(project)) if f"alertname: {rule['alert']}," not in report
    ]
    assert not missed, f"the unit tests do not notice that these alerts can never fire: {missed}"


def test_unit_tests_catch_alerts_that_always_fire(generated: Generated, tmp_path: Path) -> None:
    """Each alert's silent case is real: promtool reports every alert once thresholds and `for` are gone."""

    def always(rule: dict[str, Any]) -> None:
        # Same labels as the real alert, but firing on any traffic.
        rule["expr"] = THRESHOLD.sub(" >= 0", rule["expr"])
        rule.pop("for", None)

    project = generated("copier", "default")
    report = mutated_failures(project, tmp_path, always)
    missed = [
        rule["alert"] for rule in alerts(spec_of(project)) if f"alertname: {rule['alert']}," not in report
    ]
    assert not missed, f"the unit tests do not notice that these alerts always fire: {missed}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_alert_is_documented_and_tested(generated: Generated, variant: str) -> None:
    project = generated("copier", variant)
    spec = spec_of(project)
    base = yaml.safe_load((project / ".copier-answers.yml").read_text())["runbook_base_url"]
    expected = variants.answers(variant).get("runbook_base_url")
    if expected is None:  # derived from the repository address
        repository = variants.answers(variant).get("repository_url", "https://github.com/your-org/")
        assert base.startswith(repository.rstrip("/") + "/") and base.endswith("/blob/main/docs/runbook.md")
        assert "//blob" not in base
    else:
        assert base == expected
    anchors = deploy.github_anchors((project / "docs" / "runbook.md").read_text())
    unit_tests = yaml.safe_load((project / UNIT_TESTS).read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for case in unit_tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    for rule in alerts(spec):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}, name
        assert all(str(value).strip() for value in annotations.values()), name
        # An absolute link (Alertmanager and chat cannot resolve a relative one) to a section that exists.
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == base, f"{name}: {page} is not the runbook_base_url answer"
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbook.md"
        assert name in firing, f"no unit test shows {name} firing"
        assert name in silent, f"no unit test shows {name} staying silent"


def test_runbook_link_check_catches_a_missing_section() -> None:
    markdown = "# Runbook\n\n## HighErrorRate\n\n## Pod: restarting (OOM)\n\n## HighErrorRate\n"
    anchors = deploy.github_anchors(markdown)
    assert anchors == {"runbook", "higherrorrate", "pod-restarting-oom", "higherrorrate-1"}
    assert "higherrorrates" not in anchors


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_expression_parses_and_reads_known_series(generated: Generated, variant: str) -> None:
    spec = spec_of(generated("copier", variant))
    recorded = recorded_names(spec)
    for rule in prometheus.rules(spec):
        problems = deploy.unknown_names(rule["expr"], recorded)
        assert not problems, f"{rule.get('alert') or rule.get('record')}: {problems}"


def test_name_check_catches_typos() -> None:
    recorded = frozenset({"slo:sli_error:ratio_rate5m"})
    assert (
        deploy.unknown_names(
            "sum by (http_route) (rate(http_server_request_duration_seconds_count[5m]))", recorded
        )
        == []
    )
    assert deploy.unknown_names("rate(http_server_requests_total[5m])", recorded) == [
        "metric 'http_server_requests_total'"
    ]
    assert deploy.unknown_names('http_server_active_requests{route="/"}', recorded) == [
        "label 'route' on http_server_active_requests"
    ]
    assert deploy.unknown_names("sum by (status) (tenant_requests_total)", recorded) == [
        "grouping label 'status'"
    ]
    with pytest.raises(ValueError):
        deploy.unknown_names("sum(rate(http_server_active_requests[5m])", recorded)
    with pytest.raises(ValueError):
        deploy.unknown_names("rate(http_server_active_requests)", recorded)


@pytest.mark.parametrize("variant", VARIANTS)
def test_slo_rules_follow_the_answers(generated: Generated, variant: str) -> None:
    spec = spec_of(generated("copier", variant))
    answers = {**{k: q["default"] for k, q in variants.QUESTIONS.items()}, **variants.answers(variant)}
    records = [rule for rule in prometheus.rules(spec) if "record" in rule]
    for slo in ("availability", "latency"):
        windows = {
            rule["record"].removeprefix("slo:sli_error:ratio_rate")
            for rule in records
            if rule["labels"]["slo"] == slo
        }
        assert windows == {*SLO_WINDOWS, "30d"}, slo
    # The latency SLI reads the histogram bucket exactly as prometheus-client writes its bound
    # (answer "1" must select le="1.0", which `le="1"` would silently miss).
    le = floatToGoString(float(answers["slo_latency_threshold_seconds"]))
    for rule in records:
        if rule["labels"]["slo"] == "latency":
            assert f'le="{le}"' in rule["expr"], rule["record"]
    burn = {rule["alert"]: rule["expr"] for rule in alerts(spec) if "ErrorBudgetBurn" in rule["alert"]}
    assert set(burn) == {
        f"{s}ErrorBudgetBurn{p}" for s in ("Availability", "Latency") for p in ("Fast", "Slow")
    }
    for name, expr in burn.items():
        percent = answers[
            "slo_availability_percent" if name.startswith("Availability") else "slo_latency_percent"
        ]
        pairs = re.findall(r"ratio_rate(\w+)\{[^}]*\} > \(([\d.]+) \* \(1 - ([\d.]+) / 100\)\)", expr)
        assert {p[2] for p in pairs} == {percent}, name
        expected = (
            {("1h", "14.4"), ("5m", "14.4"), ("6h", "6"), ("30m", "6")}
            if name.endswith("Fast")
            else {("1d", "3"), ("2h", "3"), ("3d", "1"), ("6h", "1")}
        )
        assert {(w, f) for w, f, _ in pairs} == expected, name


def test_no_duplicate_of_target_down(generated: Generated) -> None:
    spec = spec_of(generated("copier", "default"))
    for rule in alerts(spec):
        assert "up" not in deploy.expr_names(rule["expr"]).metrics, f"{rule['alert']} duplicates TargetDown"
