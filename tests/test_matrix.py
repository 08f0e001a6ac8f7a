"""The variant matrix: every feature flag and choice question, pairwise, each row a working service.

The pairwise rows (tests/helpers/matrix.py, registered in helpers/variants.py so the engine-parity
tests render them with both engines too) complete the variants that are checked anyway
(`variants.CHECKED_VARIANTS`): together they cover every pair of values of every boolean question
and `python_version`. Each row is generated once per session (shared across xdist workers),
`uv sync`-ed from its own pyproject, then linted, type-checked and tested with its own tools.
The SLO choices are covered value by value in rendered variants and checked with promtool.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from helpers import deploy, matrix, prometheus, variants
from helpers.project_env import ProjectEnv, run_own_tests

Generated = Callable[[str, str], Path]
ProjectEnvFactory = Callable[[str, str], ProjectEnv]

SEEDS = variants.CHECKED_VARIANTS
PAIRWISE = matrix.matrix_variants(
    variants.QUESTIONS, [variants.answers(name) for name in SEEDS], variants.RUNNABLE_PYTHONS
)
# Deploy's variants (imported above) already use most SLO values; these rows add the rest.
SLO = matrix.slo_variants(variants.QUESTIONS, list(variants.VARIANTS.values()))
for _name, _answers in {**PAIRWISE, **SLO}.items():
    variants.register(_name, _answers)  # a no-op when helpers/variants.py registered it already

BOOLEANS = [name for name, q in variants.QUESTIONS.items() if q.get("type") == "bool"]
CHOICES = [name for name, q in variants.QUESTIONS.items() if q.get("choices")]
MAX_ROWS = 12  # pairwise rows on top of the checked variants: keep the suite inside its budget


def row_id(name: str) -> str:
    return f"{name}-{matrix.describe(variants.answers(name), variants.QUESTIONS)}"


def effective(name: str) -> dict[str, Any]:
    answers = variants.answers(name)
    return {question: answers.get(question, q.get("default")) for question, q in variants.QUESTIONS.items()}


def test_matrix_covers_every_pair_of_flags_and_python_versions() -> None:
    parameters: dict[str, list[Any]] = {name: [False, True] for name in BOOLEANS}
    # Every Python minimum that runs here; the others are checked without an interpreter.
    parameters["python_version"] = list(variants.RUNNABLE_PYTHONS)
    rows = [{name: effective(variant)[name] for name in parameters} for variant in (*SEEDS, *PAIRWISE)]
    missing = matrix.all_pairs(parameters) - matrix.covered_pairs(rows, parameters)
    assert not missing, sorted(missing, key=repr)[:10]
    assert len(PAIRWISE) <= MAX_ROWS
    # Every flag of copier.yml is in the matrix, so a new one is covered without editing this file.
    assert set(variants.FLAGS) <= set(BOOLEANS)
    assert all(name in variants.VARIANTS for name in PAIRWISE)


def test_every_choice_value_is_rendered_somewhere() -> None:
    rows = [effective(name) for name in variants.VARIANTS]
    for name in CHOICES:
        used = {str(row[name]) for row in rows}
        assert used == {str(choice) for choice in variants.QUESTIONS[name]["choices"]}, name


def test_matrix_is_deterministic() -> None:
    again = matrix.matrix_variants(
        variants.QUESTIONS, [variants.answers(name) for name in SEEDS], variants.RUNNABLE_PYTHONS
    )
    assert again == PAIRWISE
    for left, right in combinations(PAIRWISE.values(), 2):
        assert left != right


@pytest.mark.parametrize("variant", list(PAIRWISE), ids=row_id)
def test_pairwise_variant_lints_type_checks_and_passes_its_tests(
    project_env: ProjectEnvFactory, request: pytest.FixtureRequest, variant: str
) -> None:
    env = project_env("copier", variant)
    env.tool("ruff", "check", "--no-cache", ".")
    env.tool("ruff", "format", "--check", "--no-cache", ".")
    env.tool("mypy")
    # With a datastore option: the migration and Redis tests against real servers, none skipped.
    run_own_tests(env, variant, lambda: request.getfixturevalue("datastore_env"))


@pytest.mark.skipif(bool(prometheus.missing_binaries()), reason="needs promtool (.ci/run installs it)")
@pytest.mark.parametrize("variant", list(SLO), ids=row_id)
def test_slo_variant_renders_valid_rules_and_dashboard(
    generated: Generated, tmp_path: Path, variant: str
) -> None:
    project = generated("copier", variant)
    answers = effective(variant)
    rule_file = project / "deploy" / "prometheus" / "rules.yml"
    checked = prometheus.promtool("check", "rules", rule_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = prometheus.promtool("test", "rules", "rules.test.yml", cwd=rule_file.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for path in (project / "deploy").rglob("*.y*ml"):
        deploy.load_yaml_documents(path.read_text(encoding="utf-8"))
    dashboard = json.loads((project / "deploy" / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["panels"]
    # The latency objective reads the histogram bucket the answer names (prometheus-client's `le`).
    bucket = f'le="{float(answers["slo_latency_threshold_seconds"])}"'
    assert bucket in rule_file.read_text(encoding="utf-8")
