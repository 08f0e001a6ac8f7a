"""CPU per request of each request layer, called in-process as a server would call it (no network).

Run with the generated service's interpreter (benchmarks/native_telemetry.py does), SERVICE_PACKAGE
set. Logfire is configured once, the service's way (production, LOGFIRE_TRACE_SAMPLE_RATE from the
first argument, no exporter): FastAPI's native telemetry then uses the same providers and sampler.
Every variant serves the same route, which logs nothing, so only the request layer differs. Prints
one JSON object: variant -> CPU microseconds per request, one value per round.
"""

import asyncio
import importlib
import json
import os
import sys
import time

from fastapi import FastAPI

package = os.environ["SERVICE_PACKAGE"]
create_app = importlib.import_module(f"{package}.app").create_app
Settings = importlib.import_module(f"{package}.settings").Settings

rate, rounds, per_round = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
service = create_app(Settings(_env_file=None, environment="production", logfire_trace_sample_rate=rate))
PROBES = {"/healthz", "/readyz", "/metrics"}


async def ping(n: int) -> dict[str, int]:
    return {"n": n}


def native(**telemetry: bool) -> FastAPI:
    app = FastAPI(telemetry={**telemetry, "exclude": lambda scope: scope["path"] in PROBES})
    app.add_api_route("/ping/{n}", ping)
    return app


service.add_api_route("/ping/{n}", ping)
VARIANTS = {
    "bare": native(tracing=False, metrics=False, logs=False),
    # FastAPI's request span and its validation/exception logs: what could replace the service's span.
    "native-span": native(tracing=True, metrics=False, logs=True, operation_spans=False),
    # Its operation spans are what trace background tasks (and dependencies, endpoint, serialization).
    "native-operations": native(tracing=True, metrics=False, logs=True, operation_spans=True),
    "native-all": native(tracing=True, metrics=True, logs=True, operation_spans=True),
    # The service's whole layer: tenant ids, span, Prometheus metrics, sampling, trace id header.
    "service": service,
}


def scope(number: int) -> dict[str, object]:
    path = f"/ping/{number % 7}"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"svc"), (b"user-agent", b"bench"), (b"x-account-id", b"acct-bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def receive() -> dict[str, object]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, object]) -> None:
    pass


async def cpu_us_per_request(app: FastAPI, requests: int) -> float:
    started = time.process_time()
    for number in range(requests):
        await app(scope(number), receive, send)
    return (time.process_time() - started) / requests * 1e6


async def main() -> None:
    for app in VARIANTS.values():  # warm-up: middleware stacks, caches
        await cpu_us_per_request(app, 200)
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):  # interleaved, so machine drift hits every variant alike
        for name, app in VARIANTS.items():
            results[name].append(await cpu_us_per_request(app, per_round))
    print(json.dumps(results))


asyncio.run(main())
