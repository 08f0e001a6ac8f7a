"""Latency at the same offered load: bare, production and traced at fixed request rates.

    python benchmarks/fixed_rate.py SERVICE_DIR [--rates 2000,4000,6000] [--pairs 10]
                                    [--seconds 5] [--connections 64] [--out fixed-rate.json]

Issue 7 asks for production's p99 within 1.2x of bare. `bench/run.py` measures it the way wrk
runs by default: every connection sends its next request as soon as the last one is answered, so
each server runs flat out and its p99 is mostly queueing, which follows throughput. This probe
asks the other question: at the same request rate, below what either server can take, how much
later does a request finish with the service's telemetry?

wrk paces the load as the service's `bench/run.py --rate` does: a Lua script makes every
connection wait an exponentially distributed time between requests (mean connections / rate), so
that arrivals are close to Poisson at the chosen rate. The servers of all three modes run at once;
wrk switches between them every `--seconds`, in alternating order, `--pairs` times per rate, and
each mode's p99 is compared with bare's of the same pair (median, interquartile range). The
server's CPU per request is read from /proc as in `bench/run.py`. wrk measures from when a request
is written, so a stall that delays the next requests of a connection is not counted (coordinated
omission): the figures compare the modes with each other and are not absolute latencies.

It reuses the service's `bench/run.py` for the servers, the OTLP sink and wrk (with `--rate`),
so it needs `uv sync` in the service and wrk on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

MODES = ("bare", "production", "traced")


def spread(values: list[float]) -> dict[str, float]:
    low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "q1": low, "q3": high}


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Medians per mode, and each mode's p50 and p99 against bare's of the same pair."""
    summary = {}
    for mode, mine in runs.items():
        paired = list(zip(mine, runs["bare"], strict=True))
        summary[mode] = {
            "rps": statistics.median(run["rps"] for run in mine),
            "p50_ms": statistics.median(run["p50_ms"] for run in mine),
            "p99_ms": statistics.median(run["p99_ms"] for run in mine),
            "cpu_us_per_request": statistics.median(run["cpu_us"] for run in mine),
            "p50_ratio": spread([run["p50_ms"] / bare["p50_ms"] for run, bare in paired]),
            "p99_ratio": spread([run["p99_ms"] / bare["p99_ms"] for run, bare in paired]),
        }
    return summary


def show(mode: str, row: dict[str, Any]) -> str:
    p99 = row["p99_ratio"]
    return (
        f"  {mode:10} {row['rps']:6.0f} req/s  p50 {row['p50_ms']:5.2f}"
        f"  p99 {row['p99_ms']:5.2f} ms  p99 vs bare {p99['median']:.2f} ({p99['q1']:.2f}-{p99['q3']:.2f})"
        f"  p50 vs bare {row['p50_ratio']['median']:.2f}  {row['cpu_us_per_request']:5.1f} us CPU/req"
    )


def measure(
    bench: Any,
    servers: dict[str, tuple[subprocess.Popen[bytes], str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every rate in turn: `args.pairs` runs of every mode, in alternating order."""
    report: dict[str, Any] = {}
    for rate in args.rates:
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _, url in servers.values():
            bench.run_wrk(url, 2, args.connections, rate)  # warm-up
        for pair in range(args.pairs):
            for mode in MODES if pair % 2 == 0 else MODES[::-1]:
                server, url = servers[mode]
                cpu_before = bench.process_cpu_seconds(server.pid)
                load = bench.run_wrk(url, args.seconds, args.connections, rate)
                cpu_us = (bench.process_cpu_seconds(server.pid) - cpu_before) / load.requests * 1e6
                runs[mode].append(
                    {"rps": load.rps, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "cpu_us": cpu_us}
                )
        summary = summarize(runs)
        print(
            f"offered {rate:g} req/s, {args.connections} connections, {args.pairs} pairs of {args.seconds} s"
        )
        for mode, row in summary.items():
            print(show(mode, row), flush=True)
        report[f"{rate:g}"] = {"summary": summary, "runs": runs}
    return report


def compare(service: Path, args: argparse.Namespace) -> None:
    """Runs with the service's interpreter: all servers up, wrk switching between them."""
    import run as bench  # the service's bench/run.py

    sink = bench.Sink()
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for mode in MODES:
            port = bench.free_port()
            command, env = bench.mode_command(mode, sink, port)
            server = subprocess.Popen(
                command, env=env, cwd=service, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            servers[mode] = (server, f"http://127.0.0.1:{port}/items/1")
            bench.wait_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=60)
        rates = measure(bench, servers, args)
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        sink.close()
    if args.out is not None:
        settings = {"connections": args.connections, "seconds": args.seconds, "pairs": args.pairs}
        args.out.write_text(json.dumps({**settings, "rates": rates}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", type=Path)
    parser.add_argument("--rates", default="2000,4000,6000", help="offered requests/s, comma-separated")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    service = args.service.resolve()
    if os.environ.get("FIXED_RATE_IN_SERVICE") != "1":
        # Again with the service's interpreter, which has FastAPI, uvicorn and its package.
        command = [str(service / ".venv/bin/python"), str(Path(__file__).resolve()), *sys.argv[1:]]
        env = {**os.environ, "FIXED_RATE_IN_SERVICE": "1", "PYTHONPATH": str(service / "bench")}
        raise SystemExit(subprocess.call(command, env=env))
    args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    compare(service, args)


if __name__ == "__main__":
    main()
