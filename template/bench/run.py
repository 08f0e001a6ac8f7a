"""Telemetry overhead benchmark: the service with and without its telemetry, under the same load.

    uv run python bench/run.py                      # all modes, 3 interleaved rounds
    uv run python bench/run.py --rounds 5 --duration 15 --modes bare,production
    uv run python bench/run.py --rate 2000 --connections 64 --modes bare,production,traced

Each mode is a real uvicorn process on 127.0.0.1 (one worker, no access log, uvloop/httptools
when installed, exactly as the service's entry point runs it), driven by `wrk` on `GET /items/1`
with tenant headers. Modes:

- bare          the same routers (health, items) in a FastAPI app without any telemetry: no
                Logfire, no middleware, no metrics, standard logging left unconfigured. Built here
                (`bench_app`), not a setting of the service: production code has no "off" switch.
- production    the real entry point (`python -m <package>`), ENVIRONMENT=production:
                10% head sampling, OTLP export to a local sink started by this script, JSON lines
                on stdout (written to a file, counted).
- traced        production with LOGFIRE_TRACE_SAMPLE_RATE=1.0: every request traced and exported.
- production-quiet  diagnostic: production with LOG_LEVEL=warning, so the example's per-request
                `item.fetched` record is neither written nor sent: shows what the log line costs.
- bare-jsonlines  diagnostic: `bare` plus the production JSON-lines stdout handler and nothing
                else (no Logfire, no middleware): the floor that one JSON line per request sets.
- production-logfire-path, traced-logfire-path  production and traced with REQUEST_SPANS=logfire:
                a traced request's spans go through Logfire's tracer and processors, as they do
                by default with LOGFIRE_TOKEN set (here still exported to the local sink).
- fastapi-native  for comparison: FastAPI's built-in OpenTelemetry instead of the service's
                middleware, same Logfire/logging setup as production.
- logfire-fastapi for comparison: `logfire.instrument_fastapi` instead of the middleware (needs
                `logfire[fastapi]`; skipped when it is not installed).
- otel-fastapi  for comparison: OpenTelemetry's `FastAPIInstrumentor` instead of the middleware,
                same Logfire/logging setup as production (comes with `logfire[fastapi]`).
- prometheus-instrumentator  for comparison: `bare` plus prometheus-fastapi-instrumentator's
                default RED metrics, and nothing else: no traces, no logs (needs
                `prometheus-fastapi-instrumentator`).

Every comparison mode at once:

    uv run --with 'logfire[fastapi]' --with prometheus-fastapi-instrumentator python bench/run.py

Runs are interleaved (A B C, C B A, A B C ...) so that machine drift hits every mode alike; the
table shows medians and, per round, the ratio to the bare run of the same round (median). It also
measures startup (process start to the first `/readyz` 200), the server's CPU time per request
(Linux; steadier than throughput on a shared machine) and how many spans reached the sink.
Without `wrk` on PATH a small Python load generator is used instead: its numbers are labelled
and are not comparable with wrk's.

By default every connection sends its next request as soon as the last one is answered, so each
server runs flat out: its p99 is then mostly queueing and follows its throughput. `--rate`
offers the same load to every mode instead (Poisson arrivals, total requests/s), below what the
servers can take, to compare the latency a request pays at a given traffic. Latency is measured
from when a request is written, so a stall that delays a connection's next requests is not
counted: the figures compare the modes with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PACKAGE = "{{ cookiecutter.package_name }}"
ROOT = Path(__file__).resolve().parent.parent
TENANT_HEADERS = {
    "X-Account-Id": "acct-bench",
    "X-Session-Id": "sess-bench",
    "X-Agent-Instance-Id": "agent-bench",
    "X-LLM-Request-Id": "llmreq-bench",
}
ALL_MODES = (
    "bare",
    "production",
    "traced",
    "production-quiet",
    "bare-jsonlines",
    "production-logfire-path",
    "traced-logfire-path",
    "fastapi-native",
    "logfire-fastapi",
    "otel-fastapi",
    "prometheus-instrumentator",
)
# The service's own entry point, with these settings on top of ENVIRONMENT=production.
SERVICE_MODES: dict[str, dict[str, str]] = {
    "production": {},
    "traced": {"LOGFIRE_TRACE_SAMPLE_RATE": "1.0"},
    "production-quiet": {"LOG_LEVEL": "warning"},
    "production-logfire-path": {"REQUEST_SPANS": "logfire"},
    "traced-logfire-path": {"REQUEST_SPANS": "logfire", "LOGFIRE_TRACE_SAMPLE_RATE": "1.0"},
}
DEFAULT_MODES = (
    "bare",
    "production",
    "traced",
    "fastapi-native",
    "logfire-fastapi",
    "otel-fastapi",
    "prometheus-instrumentator",
)
# Modes without the service's telemetry setup (no Logfire): the app is built here, bare.
WITHOUT_TELEMETRY = ("bare", "bare-jsonlines", "prometheus-instrumentator")
# Comparison modes that need a package the service does not depend on: (module, package).
NEEDS = {
    "logfire-fastapi": ("opentelemetry.instrumentation.fastapi", "logfire[fastapi]"),
    "otel-fastapi": ("opentelemetry.instrumentation.fastapi", "logfire[fastapi]"),
    "prometheus-instrumentator": (
        "prometheus_fastapi_instrumentator",
        "prometheus-fastapi-instrumentator",
    ),
}


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# The apps that are not the service's own entry point (run in the child process: `--serve MODE`)
# --------------------------------------------------------------------------------------------


def bench_app(mode: str) -> Any:
    """Build the app for a comparison mode from the service's own routers."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from {{ cookiecutter.package_name }}.api import health, items
    from {{ cookiecutter.package_name }}.app import UNTRACED_PATHS

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        gc.freeze()  # as the service's lifespan does
        app.state.ready = True
        yield
        if mode not in WITHOUT_TELEMETRY:
            import logfire

            logfire.force_flush(timeout_millis=5000)

    if mode == "bare-jsonlines":
        import logging

        from {{ cookiecutter.package_name }}.telemetry.json_lines import (
            JsonFormatter,
            JsonLinesHandler,
        )

        to_stdout = JsonLinesHandler(sys.stdout)
        to_stdout.setFormatter(JsonFormatter())
        logging.getLogger().addHandler(to_stdout)
        logging.getLogger().setLevel(logging.INFO)
    elif mode not in WITHOUT_TELEMETRY:
        from {{ cookiecutter.package_name }}.settings import Settings
        from {{ cookiecutter.package_name }}.telemetry import configure_telemetry

        configure_telemetry(Settings())
    # FastAPI's built-in telemetry turns itself on once Logfire has installed the global
    # providers: fastapi-native measures it and logfire-fastapi switches it off itself.
    if mode in ("fastapi-native", "logfire-fastapi"):
        app = FastAPI(lifespan=lifespan)
    else:
        app = FastAPI(
            lifespan=lifespan, telemetry={"tracing": False, "metrics": False, "logs": False}
        )
    app.state.ready = False
    app.include_router(health.router)
    app.include_router(items.router)
    # The comparison instrumentations leave out probes and scrapes, as the service does.
    if mode == "logfire-fastapi":
        import logfire

        logfire.instrument_fastapi(app, excluded_urls=",".join(UNTRACED_PATHS))
    # Packages the service does not depend on (NEEDS), hence imported by name.
    if mode == "otel-fastapi":
        otel_fastapi = importlib.import_module("opentelemetry.instrumentation.fastapi")
        otel_fastapi.FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(UNTRACED_PATHS))
    if mode == "prometheus-instrumentator":
        instrumentator = importlib.import_module("prometheus_fastapi_instrumentator")
        instrumentator.Instrumentator(excluded_handlers=list(UNTRACED_PATHS)).instrument(app)
    return app


def serve(mode: str) -> None:
    import uvicorn

    uvicorn.run(
        bench_app(mode),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_config=None,
        access_log=False,
    )


def mode_available(mode: str) -> str | None:
    """None if the mode can run here, else why not."""
    if mode in NEEDS:
        module, package = NEEDS[mode]
        if importlib.util.find_spec(module) is None:
            return f"needs {package}: uv run --with '{package}' python bench/run.py"
    return None


# --------------------------------------------------------------------------------------------
# Local OTLP/HTTP sink: answers 200 to every export and counts the spans it receives
# --------------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0
        self.lock = threading.Lock()
        try:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )

            self.decoder: Any = ExportTraceServiceRequest
        except ImportError:  # pragma: no cover - opentelemetry-proto comes with Logfire
            self.decoder = None
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces" and sink.decoder is not None:
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = sink.decoder.FromString(body)
                    count = sum(
                        len(scope.spans)
                        for resource in request.resource_spans
                        for scope in resource.scope_spans
                    )
                    with sink.lock:
                        sink.spans += count
                with sink.lock:
                    sink.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> int:
        with self.lock:
            spans, self.spans = self.spans, 0
        return spans

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
# --rate with wrk: every connection waits an exponentially distributed time between requests,
# so that arrivals are close to Poisson. wrk's timers count whole milliseconds.
_POISSON_WAITS = """\
math.randomseed(os.time())
function delay()
  return math.floor(-math.log(1 - math.random()) * {mean_ms} + 0.5)
end
"""


def mean_wait_ms(connections: int, rate: float) -> float:
    """Each connection's mean wait between requests for `rate` requests/s in total."""
    return connections / rate * 1000


def run_wrk(url: str, seconds: float, connections: int, rate: float | None = None) -> Load:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in TENANT_HEADERS.items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if rate is not None:
            script.write(_POISSON_WAITS.format(mean_ms=mean_wait_ms(connections, rate)))
            script.flush()
            command += ["-s", script.name]
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*command, url], capture_output=True, text=True, check=True
        ).stdout
    latency = {
        p: float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if done is None or "50" not in latency or "99" not in latency:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # e.g. "Socket errors: connect 0, read 0, write 0, timeout 3" (timeouts: answers over 2 s)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    requests = int(done.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(
        requests=requests,
        seconds=requests / rps if rps else seconds,
        rps=rps,
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0),
    )


async def _python_load(
    host: str, port: int, path: str, seconds: float, connections: int, rate: float | None
) -> Load:
    headers = "".join(f"{k}: {v}\r\n" for k, v in TENANT_HEADERS.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                if rate is not None:  # as with wrk: exponential waits, Poisson arrivals
                    wait = random.expovariate(1000 / mean_wait_ms(connections, rate))
                    await asyncio.sleep(min(wait, deadline - time.perf_counter()))
                    if time.perf_counter() >= deadline:
                        break
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(
        requests=len(latencies),
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        errors=errors,
    )


def run_python(url: str, seconds: float, connections: int, rate: float | None = None) -> Load:
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    if match is None:
        raise ValueError(url)
    return asyncio.run(
        _python_load(
            match.group(1), int(match.group(2)), match.group(3), seconds, connections, rate
        )
    )


# --------------------------------------------------------------------------------------------
# One run of one mode
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    round: int
    startup_s: float
    load: Load
    cpu_us_per_request: float | None
    spans_exported: int | None
    stdout_lines: int | None
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def mode_command(mode: str, sink: Sink, port: int) -> tuple[list[str], dict[str, str]]:
    # PYTHONDONTWRITEBYTECODE would make every start recompile every imported module (seconds):
    # the container image ships compiled bytecode, so the benchmark lets Python cache it too.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "LOGFIRE_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        ENVIRONMENT="production",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
    )
    if mode in SERVICE_MODES:
        env.update(SERVICE_MODES[mode])
        return [sys.executable, "-m", PACKAGE], env
    return [sys.executable, str(Path(__file__).resolve()), "--serve", mode], env


def prime(mode: str, sink: Sink) -> None:
    """Start and stop once, unmeasured: writes the bytecode caches that startup would pay."""
    port = free_port()
    command, env = mode_command(mode, sink, port)
    process = subprocess.Popen(  # noqa: S603
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process, timeout=120)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def run_once(mode: str, round_: int, args: argparse.Namespace, sink: Sink, workdir: Path) -> Run:
    port = free_port()
    command, env = mode_command(mode, sink, port)
    stdout_path = workdir / f"{mode}-{round_}.stdout"
    stderr_path = workdir / f"{mode}-{round_}.stderr"
    sink.take()
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=stdout, stderr=stderr)  # noqa: S603
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", process)
            startup = time.perf_counter() - started
            url = f"http://127.0.0.1:{port}/items/1"
            warmup = args.load(url, args.warmup, args.connections, args.rate)
            cpu_before = process_cpu_seconds(process.pid)
            load = args.load(url, args.duration, args.connections, args.rate)
            cpu_after = process_cpu_seconds(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    cpu = None
    if cpu_before is not None and cpu_after is not None and load.requests:
        cpu = (cpu_after - cpu_before) / load.requests * 1e6
    lines = None
    if mode != "bare":
        with stdout_path.open("rb") as f:
            lines = sum(1 for _ in f)
    stdout_path.unlink()
    return Run(
        mode=mode,
        round=round_,
        startup_s=startup,
        load=load,
        cpu_us_per_request=cpu,
        spans_exported=sink.take() if mode != "bare" else None,
        stdout_lines=lines,
        extra={"warmup_requests": warmup.requests},
    )


# --------------------------------------------------------------------------------------------
# Orchestration and report
# --------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[Run], modes: list[str]) -> dict[str, dict[str, Any]]:
    bare = {r.round: r for r in runs if r.mode == "bare"}
    summary: dict[str, dict[str, Any]] = {}
    for mode in modes:
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            continue
        row: dict[str, Any] = {
            "rounds": len(mine),
            "rps": median([r.load.rps for r in mine]),
            "p50_ms": median([r.load.p50_ms for r in mine]),
            "p99_ms": median([r.load.p99_ms for r in mine]),
            "startup_s": median([r.startup_s for r in mine]),
            "errors": sum(r.load.errors for r in mine),
        }
        cpus = [r.cpu_us_per_request for r in mine if r.cpu_us_per_request is not None]
        row["cpu_us_per_request"] = median(cpus) if cpus else None
        if bare:
            paired = [(r, bare[r.round]) for r in mine if r.round in bare]
            ratios = [r.load.rps / b.load.rps for r, b in paired]
            row["rps_ratio"] = median(ratios)
            # How far single rounds stray: on shared machines, often further than modes differ.
            row["rps_ratio_range"] = [min(ratios), max(ratios)] if ratios else None
            row["p99_ratio"] = median([r.load.p99_ms / b.load.p99_ms for r, b in paired])
            cpu_pairs = [
                b.cpu_us_per_request / r.cpu_us_per_request
                for r, b in paired
                if r.cpu_us_per_request and b.cpu_us_per_request
            ]
            row["cpu_ratio"] = median(cpu_pairs) if cpu_pairs else None
        if mode != "bare":
            # Everything the process served (warmup included) was exported and logged.
            requests = [r.load.requests + r.extra["warmup_requests"] for r in mine]
            row["spans_per_request"] = median(
                [(r.spans_exported or 0) / max(1, n) for r, n in zip(mine, requests, strict=True)]
            )
            row["stdout_lines_per_request"] = median(
                [(r.stdout_lines or 0) / max(1, n) for r, n in zip(mine, requests, strict=True)]
            )
        summary[mode] = row
    return summary


def table(summary: dict[str, dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    def ratio(row: dict[str, Any]) -> str:
        spread = row.get("rps_ratio_range")
        if spread is None or spread[0] == spread[1]:  # bare, or a single round
            return fmt(row.get("rps_ratio"), ".2f")
        return f"{row['rps_ratio']:.2f} ({spread[0]:.2f}-{spread[1]:.2f})"

    lines = [
        "| mode | req/s | p50 ms | p99 ms | req/s vs bare | p99 vs bare | CPU us/req | CPU vs bare"
        " | startup s | spans/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, row in summary.items():
        lines.append(
            f"| {mode} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f}"
            f" | {ratio(row)} | {fmt(row.get('p99_ratio'), '.2f')}"
            f" | {fmt(row['cpu_us_per_request'], '.0f')} | {fmt(row.get('cpu_ratio'), '.2f')}"
            f" | {row['startup_s']:.2f} | {fmt(row.get('spans_per_request'), '.2f')} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before it")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        help="offered requests/s in total, Poisson arrivals (default: as fast as answered)",
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rate is not None and not 0 < args.rate <= args.connections * 500:
        # wrk waits whole milliseconds: below 2 ms on average, rounding would skew the rate.
        parser.error(
            f"--rate must be above 0 and at most {args.connections * 500:g} with"
            f" {args.connections} connections (raise --connections for more)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(ALL_MODES))
    if unknown:
        say(f"unknown modes {unknown}; known: {', '.join(ALL_MODES)}")
        return 2
    for mode in list(modes):
        reason = mode_available(mode)
        if reason:
            say(f"skipping {mode}: {reason}")
            modes.remove(mode)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "python":
        say(
            "wrk not found: using the Python load generator"
            " (slower; its numbers are not comparable with wrk's)"
        )
    args.load = run_wrk if loadgen == "wrk" else run_python

    sink = Sink()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        try:
            for mode in modes:
                prime(mode, sink)
            for round_ in range(args.rounds):
                order = modes if round_ % 2 == 0 else modes[::-1]
                for mode in order:
                    run = run_once(mode, round_, args, sink, Path(tmp))
                    runs.append(run)
                    say(
                        f"round {round_ + 1}/{args.rounds} {mode:16} {run.load.rps:8.0f} req/s"
                        f"  p50 {run.load.p50_ms:6.2f} ms  p99 {run.load.p99_ms:6.2f} ms"
                        f"  startup {run.startup_s:.2f} s"
                        + (
                            f"  cpu {run.cpu_us_per_request:.0f} us/req"
                            if run.cpu_us_per_request
                            else ""
                        )
                    )
        finally:
            sink.close()
    summary = summarize(runs, modes)
    result = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "loadgen": loadgen,
        "url": "GET /items/1",
        "connections": args.connections,
        "offered_rps": args.rate,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    say()
    say(table(summary))
    say(
        f"\nmedians of {args.rounds} interleaved rounds, {loadgen}, {args.connections} connections,"
        f" {args.duration:g} s per run; results in {args.output}"
    )
    if args.rate is not None:
        say(
            f"offered {args.rate:g} req/s (Poisson arrivals): compare latency and CPU per request;"
            " req/s shows whether each mode kept up"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
