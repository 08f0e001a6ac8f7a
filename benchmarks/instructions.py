"""Instructions per request, counted by valgrind: a telemetry cost that machine noise cannot move.

    python benchmarks/instructions.py SERVICE_DIR MODE [NAME=VALUE ...] [--out results.json]

Drives a generated service's ASGI app in-process (no sockets, no uvicorn) under
`valgrind --tool=callgrind`, once with 1000 and once with 3000 `GET /items/1` requests carrying the
four tenant headers, and prints the difference divided by 2000: imports and start-up cancel out.
The app's lifespan startup runs first, as under uvicorn. The count includes the span export
thread (spans go to the benchmark's local OTLP sink).

MODE is one of the service benchmark's apps: `bare`, `bare-jsonlines`, `bare-record` (bare plus a
standard logging record per request, handled by a handler that does nothing) or `production`
(the service's `create_app` with ENVIRONMENT=production); with `--server`, also `floor` and
`floor-line`, the minimal layer of `benchmarks/floor.py`. NAME=VALUE pairs are set in the
service's environment, e.g. `LOGFIRE_TRACE_SAMPLE_RATE=0`. For modes that export spans, add
`OTEL_BSP_SCHEDULE_DELAY=600000`: valgrind slows the server down so much that time-based exports
would send far more, smaller bodies than a loaded server does. Needs valgrind and `uv sync` in
SERVICE_DIR. This measures the Python work per request; wrk in `bench/run.py` measures throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

SMALL, LARGE = 1000, 3000


def drive(mode: str, requests: int) -> None:
    """Runs inside valgrind, with the service's interpreter and its bench/ on sys.path."""
    import asyncio
    import logging
    import random

    import run as bench  # the service's bench/run.py

    sink = bench.Sink()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
    os.environ["ENVIRONMENT"] = "production"
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the JSON lines
    random.seed(1)
    # The same tenant headers wrk sends in bench/run.py, as ASGI delivers them.
    headers = [(b"host", b"bench")]
    headers += [(name.lower().encode(), value.encode()) for name, value in bench.TENANT_HEADERS.items()]
    if mode == "production":
        package = bench.PACKAGE
        app = __import__(f"{package}.app", fromlist=["create_app"]).create_app()
    else:
        app = bench.bench_app("bare" if mode == "bare-record" else mode)
        if mode == "bare-record":

            class Discard(logging.Handler):
                def handle(self, record: logging.LogRecord) -> bool:
                    return True

            logging.getLogger().addHandler(Discard())
            logging.getLogger().setLevel(logging.INFO)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        pass

    async def start() -> None:
        """The app's lifespan startup, as uvicorn runs it (the service freezes the GC there)."""
        events: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        await events.put({"type": "lifespan.startup"})
        started = asyncio.Event()

        async def lifespan_send(message: dict[str, object]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        running.append(asyncio.create_task(app(scope, events.get, lifespan_send)))
        await started.wait()

    running: list[asyncio.Task[None]] = []

    async def requests_in_process() -> None:
        await start()
        for _ in range(requests):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/items/1",
                "raw_path": b"/items/1",
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 2),
                "state": {},
            }
            await app(scope, receive, send)

    asyncio.run(requests_in_process())
    if mode == "production":
        import logfire

        logfire.force_flush()
    os._exit(0)


def serve_and_count(mode: str, requests: int) -> None:
    """Runs with the service's interpreter: the real server under valgrind, driven over HTTP.

    The server is the one `bench/run.py` starts for MODE (uvicorn, one worker), prefixed with
    valgrind; this client sends REQUESTS sequential keep-alive requests and then SIGTERM. Prints
    the instructions valgrind counted in the server process (all its threads).
    """
    import http.client
    import signal
    import time

    import run as bench  # the service's bench/run.py

    sink = bench.Sink()
    port = bench.free_port()
    command, env = bench.mode_command("bare" if mode.startswith("floor") else mode, sink, port)
    if mode.startswith("floor"):  # floor.py's minimal layer (see there)
        command = [sys.executable, str(Path(__file__).with_name("floor.py")), "--serve", mode]
    # The NAME=VALUE pairs from the command line (mode_command drops inherited OTEL_ variables).
    env.update({k: os.environ[k] for k in os.environ.get("INSTRUCTIONS_ENV", "").split(",") if k})
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    server = subprocess.Popen(
        [*valgrind, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    headers = bench.TENANT_HEADERS
    deadline = time.monotonic() + 300
    while True:
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            probe.request("GET", "/readyz")
            if probe.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"{mode} did not become ready under valgrind")
        time.sleep(0.5)
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(requests):
        client.request("GET", "/items/1", headers=headers)
        response = client.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET /items/1 answered {response.status}")
    client.close()
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=300)
    found = re.search(r"Collected : (\d+)", stderr)
    if found is None:
        raise SystemExit(f"no count from valgrind:\n{stderr[-2000:]}")
    print(found.group(1), sink.spans)
    os._exit(0)


# Spans the sink received per server run, by number of requests: a traced mode must show two
# per request, or the exporter dropped some and the count is too low.
SPANS_RECEIVED: dict[int, int] = {}


def count_server(service: Path, mode: str, requests: int, env: dict[str, str]) -> int:
    command = [str(service / ".venv" / "bin" / "python"), str(Path(__file__).resolve())]
    command += ["--serve-and-count", mode, str(requests)]
    environment = {**os.environ, **env, "PYTHONPATH": str(service / "bench")}
    environment["INSTRUCTIONS_ENV"] = ",".join(env)
    done = subprocess.run(command, cwd=service, env=environment, capture_output=True, text=True, check=False)
    counts = done.stdout.split()
    if done.returncode != 0 or len(counts) != 2 or not all(c.isdigit() for c in counts):
        raise SystemExit(
            f"server run failed ({done.returncode}):\n{done.stdout[-1000:]}{done.stderr[-2000:]}"
        )
    SPANS_RECEIVED[requests] = int(counts[1])
    return int(counts[0])


def count(service: Path, mode: str, requests: int, env: dict[str, str]) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        str(service / ".venv" / "bin" / "python"),
        str(Path(__file__).resolve()),
        "--drive",
        mode,
        str(requests),
    ]
    environment = {**os.environ, **env, "PYTHONPATH": str(service / "bench")}
    done = subprocess.run(command, cwd=service, env=environment, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--drive":
        drive(sys.argv[2], int(sys.argv[3]))
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-and-count":
        serve_and_count(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", type=Path)
    parser.add_argument(
        "mode",
        help="bare, bare-record, bare-jsonlines, production; with --server: any mode of bench/run.py,"
        " floor or floor-line (benchmarks/floor.py)",
    )
    parser.add_argument(
        "--server",
        action="store_true",
        help="count the real uvicorn server process driven over HTTP (includes uvicorn's HTTP layer)",
    )
    parser.add_argument("env", nargs="*", help="NAME=VALUE set for the service")
    parser.add_argument("--out", type=Path, help="append the result as one JSON line")
    args = parser.parse_args()
    env = dict(pair.split("=", 1) for pair in args.env)
    service = args.service.resolve()
    measure = count_server if args.server else count
    measure(service, args.mode, 1, env)  # unmeasured: writes the bytecode caches a first start pays
    per_request = (measure(service, args.mode, LARGE, env) - measure(service, args.mode, SMALL, env)) // (
        LARGE - SMALL
    )
    how = "server over HTTP" if args.server else "in-process"
    print(f"{service.name} {args.mode} {' '.join(args.env)} ({how}): {per_request} instructions per request")
    spans_per_request = None
    if args.server:
        spans_per_request = (SPANS_RECEIVED[LARGE] - SPANS_RECEIVED[SMALL]) / (LARGE - SMALL)
        print(f"spans exported per request: {spans_per_request:.2f}")
    if args.out:
        with args.out.open("a") as out:
            result = {"service": str(service), "mode": args.mode, "env": env, "how": how}
            result["instructions_per_request"] = per_request
            result["spans_per_request"] = spans_per_request
            out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
