"""A small, deterministic pairwise matrix over the template's questions.

Pairwise: for any two covered questions and any two values of theirs, some row answers both. The
boolean questions (every `with_*` flag and `metrics_separate_port`) and `python_version` are covered
pairwise, because they change code, dependencies and type-checking together: each such row is
generated, linted, type-checked and tested. The SLO choices only change numbers in the alert rules
and the dashboard (pairwise over them alone would need 25 rows): `slo_variants` puts every one of
their values into some rendered variant instead, which is checked without a Python environment.

The generator is greedy (AETG-style): start from rows that are generated anyway (the default, all
features, no features), then repeatedly add the candidate row that covers the most still-uncovered
pairs, trying each uncovered pair as the seed of a candidate. Same input, same rows, on every worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

Row = dict[str, Any]
Pair = tuple[tuple[str, Any], tuple[str, Any]]

SLO_QUESTIONS = ("slo_availability_percent", "slo_latency_threshold_seconds", "slo_latency_percent")
SHORT_NAMES = {
    "metrics_separate_port": "metricsport",
    "with_kubernetes": "k8s",
    "with_grafana_dashboard": "grafana",
    "with_system_metrics": "sysmetrics",
    "with_pydantic_ai": "pydanticai",
}


def _pairs(row: Mapping[str, Any], names: Sequence[str]) -> set[Pair]:
    return {((a, row[a]), (b, row[b])) for a, b in combinations(names, 2)}


def all_pairs(parameters: Mapping[str, Sequence[Any]]) -> set[Pair]:
    names = list(parameters)
    return {
        ((a, va), (b, vb)) for a, b in combinations(names, 2) for va in parameters[a] for vb in parameters[b]
    }


def _complete(
    seed: Pair, parameters: Mapping[str, Sequence[Any]], uncovered: set[Pair], rank: Mapping[str, int]
) -> Row:
    """Fix the seed pair, then give every other question the value that covers most new pairs."""
    names = list(parameters)
    position = {name: index for index, name in enumerate(names)}
    # How many uncovered pairs each (question, value) still takes part in.
    demand: dict[tuple[str, Any], int] = {}
    for left, right in uncovered:
        demand[left] = demand.get(left, 0) + 1
        demand[right] = demand.get(right, 0) + 1
    row: Row = dict(seed)
    # The most demanded questions first: they have the most pairs left to place.
    order = sorted(
        (name for name in names if name not in row),
        key=lambda name: (-max(demand.get((name, value), 0) for value in parameters[name]), rank[name]),
    )
    for name in order:

        def gain(value: Any, name: str = name) -> tuple[int, int]:
            new = 0
            for other, chosen in row.items():
                pair = ((other, chosen), (name, value))
                if position[other] > position[name]:
                    pair = (pair[1], pair[0])
                new += pair in uncovered
            return new, demand.get((name, value), 0)

        # max() keeps the first of equal values: deterministic, and prefers the listed order.
        row[name] = max(parameters[name], key=gain)
    return {name: row[name] for name in names}


def _greedy(
    parameters: Mapping[str, Sequence[Any]], seeds: Sequence[Row], rank: Mapping[str, int]
) -> list[Row]:
    names = list(parameters)
    uncovered = all_pairs(parameters)
    for seed in seeds:
        uncovered -= _pairs(seed, names)
    rows: list[Row] = []
    while uncovered:
        candidates = [_complete(pair, parameters, uncovered, rank) for pair in sorted(uncovered, key=repr)]
        best = max(candidates, key=lambda row: len(_pairs(row, names) & uncovered))
        rows.append(best)
        uncovered -= _pairs(best, names)
    return rows


def pairwise(
    parameters: Mapping[str, Sequence[Any]], seeds: Sequence[Row] = (), tries: int = 12
) -> list[Row]:
    """Rows (after the seeds, which are not returned) that cover every pair not covered by a seed.

    Greedy runs with a few fixed tie-breaking orders of the questions; the shortest result wins.
    """
    names = list(parameters)
    best: list[Row] | None = None
    for attempt in range(tries):
        order = names[attempt % len(names) :] + names[: attempt % len(names)]
        if attempt % 2:
            order.reverse()
        rows = _greedy(parameters, seeds, {name: index for index, name in enumerate(order)})
        if best is None or len(rows) < len(best):
            best = rows
    return best or []


def matrix_variants(
    questions: Mapping[str, Mapping[str, Any]], seeds: Sequence[Row], python_versions: Sequence[str]
) -> dict[str, Row]:
    """Named variants (answers that differ from copier.yml's defaults) for the pairwise rows.

    `seeds` are variants already generated and checked elsewhere: their pairs count as covered.
    `python_versions` are the `python_version` choices the rows may use (those that can run here).
    """
    booleans = [name for name, q in questions.items() if q.get("type") == "bool"]
    parameters: dict[str, list[Any]] = {name: [False, True] for name in booleans}
    parameters["python_version"] = list(python_versions)
    defaults = {name: q.get("default") for name, q in questions.items()}
    full_seeds = [{name: seed.get(name, defaults[name]) for name in parameters} for seed in seeds]
    variants: dict[str, Row] = {}
    for number, row in enumerate(pairwise(parameters, full_seeds), start=1):
        variants[f"pairwise_{number:02d}"] = {
            name: value for name, value in row.items() if value != defaults[name]
        }
    return variants


def slo_variants(questions: Mapping[str, Mapping[str, Any]], existing: Sequence[Row]) -> dict[str, Row]:
    """Variants that give every SLO choice's values not yet used by `existing` variants a row.

    Kubernetes and Grafana stay on (their defaults), where the SLO numbers are rendered.
    """
    missing: dict[str, list[str]] = {}
    for name in SLO_QUESTIONS:
        used = {str(row.get(name, questions[name].get("default"))) for row in existing}
        missing[name] = [str(choice) for choice in questions[name]["choices"] if str(choice) not in used]
    count = max(len(values) for values in missing.values())
    variants: dict[str, Row] = {}
    for index in range(count):
        answers: Row = {}
        for name, values in missing.items():
            if values:
                answers[name] = values[index % len(values)]
        variants[f"slo_each_{index + 1}"] = answers
    return variants


def covered_pairs(rows: Sequence[Row], parameters: Mapping[str, Sequence[Any]]) -> set[Pair]:
    names = list(parameters)
    covered: set[Pair] = set()
    for row in rows:
        covered |= _pairs(row, names)
    return covered


def describe(answers: Mapping[str, Any], questions: Mapping[str, Mapping[str, Any]]) -> str:
    """A readable test id: Python version, flags that are on, non-default SLO numbers."""
    effective = {name: answers.get(name, q.get("default")) for name, q in questions.items()}
    on = [
        SHORT_NAMES.get(name, name.removeprefix("with_"))
        for name, q in questions.items()
        if q.get("type") == "bool" and effective[name]
    ]
    slo = "/".join(str(effective[name]) for name in SLO_QUESTIONS)
    return f"py{effective['python_version']}-{'+'.join(on) or 'nothing'}-slo{slo}"
