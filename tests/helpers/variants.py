"""Named answer sets ("variants") the tests generate, keyed by a short stable name.

A variant is a plain dict of answers that differ from copier.yml's defaults; `{}` is the default
service. Tests parametrize over `VARIANTS` (or a subset) and ask the `generated` fixture for a
variant by name, so every engine run for the same name is shared by the whole session.

The feature flags are read from copier.yml (every boolean question named `with_*`), so a new flag
is covered by the on/off variants without touching this file. Other modules may add entries
(e.g. a pairwise matrix) with `register()`; names must stay unique.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .project_env import find_python

REPO_DIR = Path(__file__).resolve().parents[2]


def _questions() -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load((REPO_DIR / "copier.yml").read_text(encoding="utf-8"))
    # Computed questions (`when: false`: answers_refused, the cookiecutter namespace) are never asked.
    return {name: q for name, q in spec.items() if not name.startswith("_") and q.get("when") is not False}


QUESTIONS = _questions()

#: Every boolean feature flag, in copier.yml order.
FLAGS: tuple[str, ...] = tuple(
    name for name, q in QUESTIONS.items() if name.startswith("with_") and q.get("type") == "bool"
)
#: The default value of every flag (what `default` generates).
FLAG_DEFAULTS: dict[str, bool] = {name: bool(QUESTIONS[name].get("default")) for name in FLAGS}

Answers = dict[str, Any]

VARIANTS: dict[str, Answers] = {
    "default": {},
    "all_features": {**dict.fromkeys(FLAGS, True), "metrics_separate_port": True},
    "minimal": dict.fromkeys(FLAGS, False),
}
for _flag in FLAGS:
    VARIANTS[f"{_flag}_on"] = {_flag: True}
    VARIANTS[f"{_flag}_off"] = {_flag: False}
VARIANTS["metrics_separate_port"] = {"metrics_separate_port": True}
# The newer Python minimums (ruff/mypy target, requires-python, Dockerfile base image change).
VARIANTS["python_3_12"] = {"python_version": "3.12"}
VARIANTS["python_3_13"] = {"python_version": "3.13"}
VARIANTS["python_3_14"] = {"python_version": "3.14"}

#: The python_version choices with an interpreter on this machine: the pairwise matrix runs those.
#: Any other (3.14 here: neither Debian 12 nor pyenv has it, and uv cannot download one offline) is
#: checked without one (tests/test_generated_checks.py: wheels for it, ruff and mypy aimed at it).
RUNNABLE_PYTHONS: tuple[str, ...] = tuple(
    str(choice) for choice in QUESTIONS["python_version"]["choices"] if find_python(str(choice))
)


def register(name: str, answers: Answers) -> None:
    """Add a variant (for other test modules' matrices); a name can only mean one answer set."""
    if name in VARIANTS and VARIANTS[name] != answers:
        raise ValueError(f"variant {name!r} already means {VARIANTS[name]!r}")
    VARIANTS[name] = dict(answers)


def answers(name: str) -> Answers:
    """A copy of the variant's answers (callers may not mutate the table)."""
    return dict(VARIANTS[name])


def python_version(name: str) -> str:
    """The variant's minimum Python (its `python_version` answer or the default)."""
    return str(VARIANTS[name].get("python_version", QUESTIONS["python_version"]["default"]))


def effective_flags(name: str) -> dict[str, bool]:
    """Every flag's value in this variant, defaults filled in."""
    return {flag: bool(VARIANTS[name].get(flag, FLAG_DEFAULTS[flag])) for flag in FLAGS}


#: The variants whose generated projects are synced, linted, type-checked, tested (and booted).
CHECKED_VARIANTS: tuple[str, ...] = ("default", "all_features", "minimal", "python_3_13")

# The deploy artifacts' variants (tests/test_deploy_*.py, test_alert_rules.py, test_dashboard.py).
register(
    "deploy_answers",
    {
        "project_name": "Ledger API",
        "k8s_namespace": "payments-prod",
        "prometheus_release_label": "prom-stack",
        "container_image": "registry.example.com/payments/ledger-api",
        "metrics_separate_port": True,
        "metrics_port": "9100",
        "http_port": "8080",
        "slo_availability_percent": "99.95",
        "slo_latency_threshold_seconds": "1",
        "slo_latency_percent": "95",
        "logfire_project_url": "https://logfire.example.com/payments/ledger-api",
        # A trailing slash: the derived runbook address must not get a double slash.
        "repository_url": "https://git.example.com/payments/ledger-api/",
    },
)
register(
    "slo_loose",
    {"slo_availability_percent": "99", "slo_latency_threshold_seconds": "2.5", "slo_latency_percent": "99.9"},
)
register(
    "slo_strict",
    {
        "slo_availability_percent": "99.99",
        "slo_latency_threshold_seconds": "0.1",
        "slo_latency_percent": "99.5",
        "runbook_base_url": "https://wiki.example.com/team/ledger/runbook",
    },
)

# The pairwise matrix (helpers/matrix.py, checked in test_matrix.py): rows that, with the checked
# variants above, cover every pair of values of every boolean question and python_version.
from . import matrix as _matrix  # noqa: E402

for _name, _answers in _matrix.matrix_variants(
    QUESTIONS, [VARIANTS[n] for n in CHECKED_VARIANTS], RUNNABLE_PYTHONS
).items():
    register(_name, _answers)
