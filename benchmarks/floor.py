"""The floor: the least a telemetry layer can do per request in Python, against bare and production.

    python benchmarks/floor.py SERVICE_DIR [--rounds 5] [--duration 10] [--out floor.json]

Issue 7 asks for production at 0.90 of bare throughput. This probe asks whether any Python layer
can get there on this app. `floor` serves the generated service's own routers (as `bench/run.py`'s
`bare` mode does) behind one pure-ASGI layer that does only the unavoidable minimum, with none of
the service's guarantees:

- tenant headers into one context variable (no validation, no OTel context, no sampling);
- fresh trace and span ids per request;
- status, route template and duration into a plain-dict histogram, and an in-progress count;
- `floor-line` adds the example's event as one JSON line (epoch timestamp, level, logger, message, ids,
  tenant ids, fields) appended to a list that a thread writes every 0.2 s.

It runs `bare`, `floor`, `floor-line` and `production` (the service's real entry point) as real
uvicorn processes under the same wrk load, interleaved, and prints median requests/s and CPU per
request with each mode's ratio to the bare run of the same round. It reuses the service's
`bench/run.py` for the servers, the OTLP sink and wrk, so it needs `uv sync` and wrk.

`--serve MODE` is how the driver starts a floor server (with the service's interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from bisect import bisect_left
from contextvars import ContextVar
from json.encoder import encode_basestring_ascii as quote
from pathlib import Path
from typing import Any

TENANT_BY_HEADER = {
    b"x-account-id": "account_id",
    b"x-session-id": "session_id",
    b"x-agent-instance-id": "agent_instance_id",
    b"x-llm-request-id": "llm_request_id",
}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
REQUEST: ContextVar[tuple[dict[str, str], int, int]] = ContextVar("request")
PENDING: list[str] = []


class FloorLayer:
    """Tenant ids, trace ids, a duration histogram and an in-progress count: nothing else."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.histograms: dict[tuple[str, str | None, int], list[float]] = {}
        self.active = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = {}
        for name, value in scope["headers"]:
            attribute = TENANT_BY_HEADER.get(name)
            if attribute is not None:
                tenant[attribute] = value.decode("ascii")
        token = REQUEST.set((tenant, random.getrandbits(128), random.getrandbits(64)))
        status = 500

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.active += 1
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            duration = time.perf_counter() - start
            self.active -= 1
            key = (scope["method"], getattr(scope.get("route"), "path", None), status)
            histogram = self.histograms.get(key)
            if histogram is None:
                histogram = self.histograms[key] = [0.0] * (len(BUCKETS) + 2)
            histogram[bisect_left(BUCKETS, duration)] += 1
            histogram[-1] += duration
            REQUEST.reset(token)


def event(name: str, **fields: object) -> None:
    """The example's event as one JSON line, with as little work as possible."""
    tenant, trace_id, span_id = REQUEST.get()
    line = (
        f'{{"timestamp": {time.time()}, "level": "info", "logger": "api.items", '
        f'"message": {quote(name)}, "trace_id": "{trace_id:032x}", "span_id": "{span_id:016x}"'
    )
    for key, value in tenant.items():
        line += f', "{key}": {quote(value)}'
    for key, value in fields.items():
        line += f', "{key}": {value}'
    PENDING.append(line + "}")


def write_pending() -> None:
    while True:
        time.sleep(0.2)
        lines = PENDING[:]
        del PENDING[: len(lines)]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()


def serve(mode: str) -> None:
    """Runs with the service's interpreter and its bench/ on sys.path."""
    import run as bench  # the service's bench/run.py
    import uvicorn

    app = bench.bench_app("bare")
    app.add_middleware(FloorLayer)
    if mode == "floor-line":
        items = __import__(f"{bench.PACKAGE}.api.items", fromlist=["events"])
        items.events.info = event
        threading.Thread(target=write_pending, daemon=True).start()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_config=None, access_log=False)


def compare(service: Path, rounds: int, duration: float, out: Path | None) -> None:
    """Runs with the service's interpreter: interleaved wrk rounds of every mode."""
    import run as bench  # the service's bench/run.py

    modes = ("bare", "floor", "floor-line", "production")
    sink = bench.Sink()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        for mode in modes if round_ % 2 == 0 else modes[::-1]:
            port = bench.free_port()
            command, env = bench.mode_command("bare" if mode.startswith("floor") else mode, sink, port)
            if mode.startswith("floor"):
                command = [sys.executable, str(Path(__file__).resolve()), "--serve", mode]
                env["PYTHONPATH"] = str(service / "bench")
            server = subprocess.Popen(
                command, env=env, cwd=service, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                bench.wait_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=60)
                url = f"http://127.0.0.1:{port}/items/1"
                bench.run_wrk(url, 1, 32)  # warm-up
                cpu_before = bench.process_cpu_seconds(server.pid)
                load = bench.run_wrk(url, duration, 32)
                cpu_after = bench.process_cpu_seconds(server.pid)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
            cpu = (cpu_after - cpu_before) / load.requests * 1e6
            results[mode].append({"rps": load.rps, "p99_ms": load.p99_ms, "cpu_us": cpu})
            print(f"round {round_} {mode:11} {load.rps:8.0f} req/s  {cpu:6.1f} µs CPU/req", flush=True)
    summary = {}
    for mode in modes:
        ratios = [run["rps"] / base["rps"] for run, base in zip(results[mode], results["bare"], strict=True)]
        summary[mode] = {
            "rps": statistics.median(run["rps"] for run in results[mode]),
            "cpu_us_per_request": statistics.median(run["cpu_us"] for run in results[mode]),
            "ratio_to_bare": statistics.median(ratios),
        }
        print(
            f"{mode:11} ratio to bare {summary[mode]['ratio_to_bare']:.2f}  "
            f"{summary[mode]['cpu_us_per_request']:6.1f} µs CPU/req"
        )
    if out is not None:
        out.write_text(
            json.dumps({"rounds": rounds, "seconds": duration, "summary": summary, "runs": results}, indent=2)
            + "\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", nargs="?", type=Path)
    parser.add_argument("--serve", choices=("floor", "floor-line"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.service is None:
        parser.error("SERVICE_DIR is required")
    service = args.service.resolve()
    if os.environ.get("FLOOR_IN_SERVICE") != "1":
        # Again with the service's interpreter, which has FastAPI, uvicorn and its package.
        command = [str(service / ".venv/bin/python"), str(Path(__file__).resolve()), *sys.argv[1:]]
        env = {**os.environ, "FLOOR_IN_SERVICE": "1", "PYTHONPATH": str(service / "bench")}
        raise SystemExit(subprocess.call(command, env=env))
    compare(service, args.rounds, args.duration, args.out)


if __name__ == "__main__":
    main()
