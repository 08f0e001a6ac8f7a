"""The telemetry-overhead benchmark (benchmarks/run.py) runs end to end and reports every mode.

A smoke test, not a performance test: one short round of every mode under wrk proves that the
runner still generates a service, boots each mode, drives it without errors and writes its
table and JSON, so the report's command cannot rot unnoticed. No timing is asserted; the
figures come from a real run on a quiet machine (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from helpers import REPO_DIR

pytestmark = pytest.mark.slow

MODES = ("bare", "production", "traced", "collector", "diy", "diy-tail", "diy-traced")
ROUTES = ("items", "deep")
COMPARISONS = ("production/diy-tail", "production/diy", "traced/diy-traced", "collector/diy-traced")


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One round of every mode: the JSON it wrote and the text it printed."""
    assert shutil.which("wrk"), "install wrk (Debian package wrk; .ci/run does)"
    output = tmp_path_factory.mktemp("benchmark") / "results.json"
    options = ("--rounds", "1", "--duration", "1", "--warmup", "0", "--connections", "8")
    printed = run_script("benchmarks/run.py", *options, "--modes", ",".join(MODES), "--output", str(output))
    return json.loads(output.read_text()), printed


def run_script(script: str, *options: str) -> str:
    """Run a benchmark script from the repository root as a user would; what it printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    completed = subprocess.run(
        [sys.executable, script, *options],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-5000:]
    return completed.stdout


def test_every_mode_served_both_routes_without_errors(benchmark: tuple[dict[str, Any], str]) -> None:
    result, _ = benchmark
    assert list(result["summary"]) == list(ROUTES), "a route was left out of the report"
    for route, rows in result["summary"].items():
        assert list(rows) == list(MODES), f"{route}: a mode was left out of the report"
        for mode, row in rows.items():
            assert row["rps"] > 0, (route, mode)
            assert row["non_2xx"] == 0, (route, mode)
            assert row["cpu_us_per_request"] > 0, (route, mode)
            assert row["vs_bare"]["median"] > 0, (route, mode)
        assert rows["bare"]["vs_bare"]["median"] == 1
    assert {(run["mode"], run["route"]) for run in result["runs"]} == {
        (mode, route) for mode in MODES for route in ROUTES
    }
    for route in ROUTES:
        assert list(result["comparisons"][route]) == list(COMPARISONS)
        for name, ratios in result["comparisons"][route].items():
            assert ratios["rps"]["median"] > 0, (route, name)
            assert ratios["cpu_per_request"]["median"] > 0, (route, name)


def test_the_printed_table_has_a_row_per_route_and_mode_and_the_comparisons(
    benchmark: tuple[dict[str, Any], str],
) -> None:
    _, printed = benchmark
    rows = [
        tuple(cell.strip() for cell in line.split("|")[1:3])
        for line in printed.splitlines()
        if line.startswith("| ")
    ]
    assert rows == [("route", "mode"), *((route, mode) for route in ROUTES for mode in MODES)]
    for route in ROUTES:
        for name in COMPARISONS:
            assert f"{route} {name}: " in printed


def test_the_native_telemetry_comparison_runs_and_reports_every_variant(tmp_path: Any) -> None:
    """benchmarks/native_telemetry.py, one tiny round in-process: the command behind item 10's numbers."""
    output = tmp_path / "native.json"
    options = ("--rates", "0.1", "--rounds", "1", "--requests", "20", "--output", str(output))
    printed = run_script("benchmarks/native_telemetry.py", *options)
    variants = ("bare", "native-span", "native-operations", "native-all", "service")
    result = json.loads(output.read_text())["rates"]["0.1"]
    assert list(result) == list(variants)
    assert all(row["cpu_us_per_request"] > 0 for row in result.values())
    rows = [line.split("|")[1].strip() for line in printed.splitlines() if line.startswith("| ")]
    assert rows == ["variant", *variants]
