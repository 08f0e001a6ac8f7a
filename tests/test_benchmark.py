"""The generated service's benchmark (bench/run.py) runs every mode and reports what it measured.

Not a performance test: two short rounds with the built-in load generator prove that each mode
boots, serves the example route without errors and exports and logs what it should, so the
script a user runs to check the overhead cannot rot unnoticed. The overhead figures themselves
come from wrk on a quiet machine (benchmarks/telemetry-overhead.md), never from a test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.project_env import ProjectEnv

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("env-copier-default")]

SERVICE_MODES = (
    "production",
    "traced",
    "production-quiet",
    "production-logfire-path",
    "traced-logfire-path",
)
COMPARISONS = (
    "bare-jsonlines",
    "fastapi-native",
    "logfire-fastapi",
    "otel-fastapi",
    "prometheus-instrumentator",
)
MODES = ("bare", *SERVICE_MODES, *COMPARISONS)


def bench_command(project: ProjectEnv, packages: tuple[str, ...] = ()) -> list[str]:
    """`bench/run.py` in the project's environment, with `packages` added."""
    with_packages = [arg for package in packages for arg in ("--with", package)]
    return ["uv", "run", "--python", project.python, *with_packages, "python", "bench/run.py"]


def run_benchmark(
    project: ProjectEnv, output_dir: Path, *options: str, packages: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`bench/run.py` with these options (and `packages` added): its JSON and its printed table."""
    output = output_dir / "results.json"
    completed = project.run(*bench_command(project, packages), *options, "--output", str(output), timeout=600)
    result: dict[str, Any] = json.loads(output.read_text())
    result["printed"] = completed.stdout
    return result


@pytest.fixture(scope="module")
def report(
    project_env: Callable[[str, str], ProjectEnv], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_benchmark(
        project_env("copier", "default"),
        tmp_path_factory.mktemp("bench"),
        *("--rounds", "2", "--duration", "1", "--warmup", "0.5", "--loadgen", "python"),
        *("--modes", ",".join(MODES)),
        # The packages of the comparison modes, as the generated README says to add them.
        packages=("logfire[fastapi]", "prometheus-fastapi-instrumentator"),
    )


def test_every_mode_ran_and_served_the_route_without_errors(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert list(summary) == list(MODES), "a mode was skipped or left out of the report"
    for mode, row in summary.items():
        assert row["errors"] == 0, mode
        assert row["rps"] > 0, mode
        assert row["cpu_us_per_request"] > 0, mode
        assert 0 < row["startup_s"] < 30, mode
        assert row["rps_ratio"] > 0, mode
        lowest, highest = row["rps_ratio_range"]
        assert lowest <= row["rps_ratio"] <= highest, mode
    assert report["loadgen"] == "python"
    assert report["offered_rps"] is None, "unpaced unless --rate is given"
    assert {run["mode"] for run in report["runs"]} == set(MODES)


def test_the_table_shows_each_ratio_beside_its_lowest_and_highest_round(
    report: dict[str, Any],
) -> None:
    row = report["summary"]["production"]
    lowest, highest = row["rps_ratio_range"]
    assert lowest < highest, "two rounds, two different ratios"
    [line] = [line for line in report["printed"].splitlines() if line.startswith("| production |")]
    assert f"| {row['rps_ratio']:.2f} ({lowest:.2f}-{highest:.2f}) |" in line, line


OFFERED_RPS = 200


@pytest.fixture(scope="module")
def fixed_rate_report(
    project_env: Callable[[str, str], ProjectEnv], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_benchmark(
        project_env("copier", "default"),
        tmp_path_factory.mktemp("bench-rate"),
        *("--rate", str(OFFERED_RPS), "--connections", "8", "--rounds", "1"),
        *("--duration", "3", "--warmup", "0.5", "--loadgen", "python", "--modes", "bare,production"),
    )


def test_a_fixed_rate_offers_every_mode_the_same_load(fixed_rate_report: dict[str, Any]) -> None:
    assert fixed_rate_report["offered_rps"] == OFFERED_RPS
    for mode, row in fixed_rate_report["summary"].items():
        assert row["errors"] == 0, mode
        # About 600 arrivals in 3 s. Unpaced, the same load generator sends several times as
        # many; each connection waits after an answer (as wrk does), so a slow answer lowers
        # the rate a little, and nothing raises it.
        assert 0.5 * OFFERED_RPS <= row["rps"] <= 1.2 * OFFERED_RPS, (mode, row["rps"])
    assert f"offered {OFFERED_RPS} req/s (Poisson arrivals)" in fixed_rate_report["printed"]


def test_a_rate_wrk_cannot_pace_is_refused_before_any_server_starts(
    project_env: Callable[[str, str], ProjectEnv],
) -> None:
    project = project_env("copier", "default")
    completed = project.run(
        *bench_command(project),
        *("--rate", "5000", "--connections", "8", "--output", "/nonexistent/results.json"),
        check=False,
    )
    assert completed.returncode == 2
    assert "--rate must be above 0 and at most 4000 with 8 connections" in completed.stderr
    assert "round 1" not in completed.stdout


def served(run: dict[str, Any]) -> int:
    """Requests the run's process served: the warm-up and the measured load."""
    return int(run["load"]["requests"] + run["extra"]["warmup_requests"])


def runs_of(report: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    runs = [run for run in report["runs"] if run["mode"] == mode]
    assert runs, mode
    return runs


# Spans and lines a process adds outside requests (startup and shutdown logs).
OUTSIDE_REQUESTS = 10


def test_the_service_exports_two_spans_per_traced_request_and_a_tenth_of_that_in_production(
    report: dict[str, Any],
) -> None:
    # Each traced request: its SERVER span and the example's `item.fetched` log, all delivered
    # (the exporters flush on SIGTERM), on the direct path and on Logfire's alike.
    for mode in ("traced", "traced-logfire-path"):
        for run in runs_of(report, mode):
            assert 0 <= run["spans_exported"] - 2 * served(run) <= OUTSIDE_REQUESTS, mode
    # Production keeps one trace in ten: within five standard deviations of it. Without the
    # event (production-quiet) only the SERVER span is left of a sampled request.
    for mode, spans_per_trace in (
        ("production", 2),
        ("production-logfire-path", 2),
        ("production-quiet", 1),
    ):
        for run in runs_of(report, mode):
            requests = served(run)
            assert requests >= 100, f"{mode}: too few requests to check the sampling rate"
            spread = 5 * (requests * 0.1 * 0.9) ** 0.5
            traces = run["spans_exported"] / spans_per_trace
            assert abs(traces - 0.1 * requests) <= spread + OUTSIDE_REQUESTS, mode
    for mode in ("bare-jsonlines", "prometheus-instrumentator"):
        assert all(run["spans_exported"] == 0 for run in runs_of(report, mode)), mode
    assert all(run["spans_exported"] is None for run in runs_of(report, "bare"))


def test_one_json_line_per_request_on_stdout_unless_the_event_is_below_log_level(
    report: dict[str, Any],
) -> None:
    # The example's event, sampled or not, then the few lines of startup and shutdown.
    for mode in {*SERVICE_MODES, "bare-jsonlines"} - {"production-quiet"}:
        for run in runs_of(report, mode):
            assert 0 <= run["stdout_lines"] - served(run) <= OUTSIDE_REQUESTS, mode
    for run in runs_of(report, "production-quiet"):
        assert run["stdout_lines"] <= OUTSIDE_REQUESTS


# wrk stops with requests in flight: their lines are written, but wrk does not count them.
WRK_CONNECTIONS = 16
WRK_RATE = 400


@pytest.fixture(scope="module")
def wrk_reports(
    project_env: Callable[[str, str], ProjectEnv], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """bare and production driven by wrk, as a user runs the benchmark: unpaced and paced."""
    assert shutil.which("wrk"), "install wrk (Debian package wrk; .ci/run does)"
    project = project_env("copier", "default")
    options = ("--rounds", "1", "--duration", "2", "--warmup", "1", "--loadgen", "wrk")
    options += ("--connections", str(WRK_CONNECTIONS), "--modes", "bare,production")
    return {
        "unpaced": run_benchmark(project, tmp_path_factory.mktemp("bench-wrk"), *options),
        "paced": run_benchmark(
            project, tmp_path_factory.mktemp("bench-wrk-rate"), *options, "--rate", str(WRK_RATE)
        ),
    }


def test_wrk_drives_every_mode_and_its_counts_match_what_the_service_logged(
    wrk_reports: dict[str, dict[str, Any]],
) -> None:
    for name, report in wrk_reports.items():
        assert report["loadgen"] == "wrk", name
        for mode, row in report["summary"].items():
            assert row["errors"] == 0, (name, mode)
            assert 0 < row["p50_ms"] <= row["p99_ms"], (name, mode)
            assert row["cpu_us_per_request"] > 0, (name, mode)
        # One JSON line per request: wrk's count (warm-up and load) read right, to within the
        # requests each of its two runs left in flight.
        for run in runs_of(report, "production"):
            unanswered = 2 * WRK_CONNECTIONS
            assert 0 <= run["stdout_lines"] - served(run) <= unanswered + OUTSIDE_REQUESTS, name


def test_wrk_paces_a_fixed_rate(wrk_reports: dict[str, dict[str, Any]]) -> None:
    paced = wrk_reports["paced"]
    assert paced["offered_rps"] == WRK_RATE
    for mode, row in paced["summary"].items():
        # Unpaced, wrk sends as fast as the server answers, many times this rate.
        assert 0.5 * WRK_RATE <= row["rps"] <= 1.2 * WRK_RATE, (mode, row["rps"])
