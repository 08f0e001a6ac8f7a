"""What FastAPI's native telemetry would cost against the service's own request layer, in-process.

Generates the default service from the working tree (as run.py does) and runs apps/inprocess.py
with its interpreter, once per sampling rate: each variant's ASGI app is called directly (no
server, no network, no wrk), and the process's CPU time per request is measured in interleaved
rounds. From the repository root:

    uv run benchmarks/native_telemetry.py --output benchmarks/results-native-telemetry.json

Variants: `bare` (FastAPI, telemetry off), `native-span` (FastAPI's request span and logs),
`native-operations` (plus its operation spans, which trace background tasks), `native-all` (plus
its OTel request metrics), `service` (the generated service: TelemetryMiddleware). All of them on
the Logfire pipeline the service configures (production sampler, scrubbing, no exporter).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from run import APPS, clean_env, generate_service, package_versions, say

VARIANTS = ("bare", "native-span", "native-operations", "native-all", "service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="0.1,1.0", help="share of traces recorded, one process each")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000, help="requests per variant per round")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.rates = [float(rate) for rate in args.rates.split(",")]
    return args


def measure(python: Path, package: str, rate: float, args: argparse.Namespace) -> dict[str, list[float]]:
    env = clean_env(SERVICE_PACKAGE=package, PYTHONDONTWRITEBYTECODE="")
    command = [str(python), str(APPS / "inprocess.py"), str(rate), str(args.rounds), str(args.requests)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    rounds: dict[str, list[float]] = json.loads(out.splitlines()[-1])
    return rounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        say(f"generating the default service in {tmp}")
        service = generate_service(Path(tmp))
        for rate in args.rates:
            rounds = measure(service.python, service.package, rate, args)
            bare = statistics.median(rounds["bare"])
            results[str(rate)] = {
                name: {
                    "cpu_us_per_request": statistics.median(values),
                    "over_bare_us": statistics.median(values) - bare,
                    "rounds": values,
                }
                for name, values in rounds.items()
            }
        versions = package_versions(service)
    say("\n| variant | " + " | ".join(f"rate {rate}: CPU us/req (over bare)" for rate in results) + " |")
    say("|---|" + "---:|" * len(results))
    for name in VARIANTS:
        cells = [
            f"{row[name]['cpu_us_per_request']:.0f} (+{row[name]['over_bare_us']:.0f})"
            for row in results.values()
        ]
        say(f"| {name} | " + " | ".join(cells) + " |")
    say(f"\nmedians of {args.rounds} interleaved rounds of {args.requests} requests per variant")
    if args.output:
        given = sys.argv[1:] if argv is None else argv
        setup = {
            "rounds": args.rounds,
            "requests": args.requests,
            "cpus": os.cpu_count(),
            # Other work on the machine moves CPU time per request less than throughput, not nothing.
            "loadavg_at_end": os.getloadavg(),
            "python": sys.version.split()[0],
            "packages": versions,
        }
        result = {"command": " ".join(["uv run benchmarks/native_telemetry.py", *given]), "setup": setup}
        args.output.write_text(json.dumps({**result, "rates": results}, indent=2) + "\n")
        say(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
