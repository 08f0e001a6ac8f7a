"""What a generated service's telemetry costs per request, against bare FastAPI and the DIY stack.

Generates the default service from this repository's working tree, boots each mode as a real
uvicorn process (one worker, loopback) and drives two routes with wrk, in interleaved rounds:
`GET /items/1` (one event) and `GET /deep` (three nested spans, two events). From the repository
root:

    uv run benchmarks/run.py --rounds 5 --duration 8 --output benchmarks/results.json

Modes: `bare` (FastAPI alone, apps/bare.py); the service (apps/service.py) as `production`
(RUN_MODE=production, its default sampling: 10% by trace id, every failed or slow request),
`traced` (every request traced) and `collector` (TRACE_SAMPLING=collector: every trace exported
for a collector's tail sampling); the do-it-yourself stack (apps/diy.py) as `diy` (head sampling
10%), `diy-tail` (Logfire's `level_or_duration` tail sampling at 10%: the service's guarantee)
and `diy-traced` (100%). Telemetry goes to a local OTLP sink (apps/sink.py), stdout to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from copier import run_copy

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
# The uv running this script (`uv run` exports it; scripts/uv's own copy is not on PATH).
UV = os.environ.get("UV") or "uv"
MODES = ("bare", "production", "traced", "collector", "diy", "diy-tail", "diy-traced")
ROUTES = {"items": "/items/1", "deep": "/deep"}
# The service's default SLOW_REQUEST_SECONDS (the latency SLO threshold answer), for diy-tail.
SLOW_SECONDS = "0.5"
# What each mode adds to the base environment (RUN_MODE=production, HOST, PORT, OTLP endpoint).
MODE_ENV = {
    "bare": {},
    "production": {},  # LOGFIRE_TRACE_SAMPLE_RATE unset: the service's production default
    "traced": {"LOGFIRE_TRACE_SAMPLE_RATE": "1.0"},
    "collector": {"TRACE_SAMPLING": "collector"},
    "diy": {"DIY_HEAD_SAMPLE_RATE": "0.1"},
    "diy-tail": {"DIY_TAIL_SAMPLE_RATE": "0.1", "DIY_SLOW_SECONDS": SLOW_SECONDS},
    "diy-traced": {"DIY_HEAD_SAMPLE_RATE": "1.0"},
}
# (service mode, DIY mode): the same guarantee, or the DIY stack's cheaper one.
COMPARISONS = (
    ("production", "diy-tail"),
    ("production", "diy"),
    ("traced", "diy-traced"),
    ("collector", "diy-traced"),
)
# The comparison apps' packages, added to the generated service's environment.
EXTRA_PACKAGES = ("logfire[fastapi]", "prometheus-fastapi-instrumentator")
TENANT_HEADERS = {
    "X-Account-Id": "acct-bench",
    "X-Agent-Instance-Id": "agent-bench",
    "X-Session-Id": "sess-bench",
    "X-LLM-Request-Id": "llmreq-bench",
}
# Settings of the environment that must not reach the processes under test (each mode sets the
# service's own). PYTHONDONTWRITEBYTECODE would recompile every import at every boot.
LEAKY_PREFIXES = ("OTEL_", "LOGFIRE_", "UV_PROJECT_ENVIRONMENT")
LEAKY_NAMES = {
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "RUN_MODE",
    "ENVIRONMENT",
    "LOG_LEVEL",
}


@dataclass(frozen=True)
class Service:
    root: Path
    python: Path
    package: str


@dataclass(frozen=True)
class Load:
    requests: int
    rps: float
    p99_ms: float
    non_2xx: int
    # Connect, read, write errors and timeouts (no answer within wrk's 2 s).
    socket_errors: int


@dataclass(frozen=True)
class Run:
    mode: str
    route: str
    round: int
    load: Load
    cpu_us_per_request: float
    # Share of one core the server used: well under 1 means it waited, e.g. on a busy machine.
    cpu_busy: float
    export_bytes_per_request: float


def say(text: str = "") -> None:
    print(text, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(LEAKY_PREFIXES) and key not in LEAKY_NAMES
    }
    return {**env, **extra}


def generate_service(workdir: Path) -> Service:
    """The default service from the working tree (uncommitted changes too), synced, plus extras."""
    root = workdir / "service"
    run_copy(str(REPO), str(root), vcs_ref="HEAD", defaults=True, unsafe=False, quiet=True)
    env = clean_env(UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    python_version = "{}.{}".format(*sys.version_info[:2])
    sync = [UV, "sync", "--quiet", "--no-dev", "--python", python_version]
    subprocess.run(sync, cwd=root, env=env, check=True)
    python = root / ".venv" / "bin" / "python"
    # The extras may add packages, never move the service's own: its versions are constraints.
    freeze = [UV, "pip", "freeze", "--exclude-editable", "--python", str(python)]
    pinned = workdir / "service-versions.txt"
    pinned.write_text(subprocess.run(freeze, env=env, capture_output=True, text=True, check=True).stdout)
    install = [UV, "pip", "install", "--quiet", "--python", str(python), "--constraint", str(pinned)]
    subprocess.run([*install, *EXTRA_PACKAGES], cwd=root, env=env, check=True)
    (package,) = [path.parent.name for path in (root / "src").glob("*/__init__.py")]
    for app in ("bare.py", "diy.py", "service.py"):
        shutil.copy(APPS / app, workdir / app)
    return Service(root=root, python=python, package=package)


def package_versions(service: Service) -> dict[str, str]:
    wanted = {"fastapi", "uvicorn", "logfire", "opentelemetry-sdk", "prometheus-fastapi-instrumentator"}
    freeze = subprocess.run(
        [UV, "pip", "freeze", "--python", str(service.python)], capture_output=True, text=True, check=True
    ).stdout
    pairs = (line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    return {name: version for name, version in pairs if name in wanted}


def start_sink() -> tuple[subprocess.Popen[str], str]:
    """The OTLP sink in its own process; its URL is the first line it prints."""
    sink = subprocess.Popen([sys.executable, str(APPS / "sink.py")], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    return sink, sink.stdout.readline().strip()


def sink_bytes(sink_url: str) -> int:
    """Bytes the sink received since the last call."""
    with urllib.request.urlopen(sink_url, timeout=5) as response:  # loopback only
        return int(json.load(response)["bytes"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def mode_command(mode: str, service: Service, workdir: Path, port: int) -> list[str]:
    if mode in ("production", "traced", "collector"):
        return [str(service.python), str(workdir / "service.py")]
    app = "bare" if mode == "bare" else "diy"
    uvicorn = ["-m", "uvicorn", f"{app}:app", "--app-dir", str(workdir), "--no-access-log"]
    return [str(service.python), *uvicorn, "--host", "127.0.0.1", "--port", str(port)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    request = urllib.request.Request(url, headers=TENANT_HEADERS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # loopback only
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def run_wrk(url: str, seconds: int, connections: int) -> Load:
    headers = [arg for name, value in TENANT_HEADERS.items() for arg in ("-H", f"{name}: {value}")]
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *headers, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if requests is None or rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    to_ms = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return Load(
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * to_ms,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0,
    )


def start_mode(
    mode: str, port: int, sink_url: str, service: Service, workdir: Path
) -> subprocess.Popen[bytes]:
    """The mode's server, set up as the container image runs the service; stdout and stderr to files."""
    env = clean_env(
        PYTHONUNBUFFERED="1",
        RUN_MODE="production",
        ENVIRONMENT="benchmark",
        HOST="127.0.0.1",
        PORT=str(port),
        OTEL_EXPORTER_OTLP_ENDPOINT=sink_url,
        SERVICE_PACKAGE=service.package,
        **MODE_ENV[mode],
    )
    command = mode_command(mode, service, workdir, port)
    with (workdir / f"{mode}.stdout").open("wb") as out, (workdir / f"{mode}.stderr").open("wb") as err:
        return subprocess.Popen(command, cwd=service.root, env=env, stdout=out, stderr=err)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_mode(mode: str, round_: int, args: argparse.Namespace, service: Service, workdir: Path) -> list[Run]:
    """Boot one mode, then warm up and measure each route under wrk in turn; stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_mode(mode, port, args.sink_url, service, workdir)
    runs = []
    try:
        wait_ready(base + ROUTES["items"], process)
        for route, path in ROUTES.items():
            if args.warmup:
                run_wrk(base + path, args.warmup, args.connections)
            sink_bytes(args.sink_url)
            cpu_before, started = cpu_seconds(process.pid), time.monotonic()
            load = run_wrk(base + path, args.duration, args.connections)
            cpu, elapsed = cpu_seconds(process.pid) - cpu_before, time.monotonic() - started
            exported = sink_bytes(args.sink_url)
            requests = max(1, load.requests)
            runs.append(
                Run(mode, route, round_, load, cpu / requests * 1e6, cpu / elapsed, exported / requests)
            )
    except Exception:
        sys.stderr.write(f"--- {mode} stderr ---\n{(workdir / f'{mode}.stderr').read_text()[-5000:]}\n")
        raise
    finally:
        stop(process)
    return runs


def rotated(modes: list[str], round_: int) -> list[str]:
    """Round r starts r places further into the list, so no mode always runs first or last."""
    shift = round_ % len(modes)
    return modes[shift:] + modes[:shift]


def paired_ratio(
    runs: list[Run], mode: str, base: str, route: str, cpu: bool = False
) -> dict[str, float] | None:
    """Median, lowest and highest, round by round, of mode's req/s over base's on one route (or,
    with `cpu`, of base's CPU per request over mode's: how many times less CPU mode spends)."""
    bases = {run.round: run for run in runs if run.mode == base and run.route == route}
    pairs = [
        (run, bases[run.round])
        for run in runs
        if run.mode == mode and run.route == route and run.round in bases
    ]
    if cpu:
        ratios = [other.cpu_us_per_request / run.cpu_us_per_request for run, other in pairs]
    else:
        ratios = [run.load.rps / other.load.rps for run, other in pairs]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def summarize(runs: list[Run], modes: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per route, per mode: medians over rounds."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for route in ROUTES:
        summary[route] = {}
        for mode in modes:
            mine = [run for run in runs if run.mode == mode and run.route == route]
            summary[route][mode] = {
                "rps": statistics.median(run.load.rps for run in mine),
                "vs_bare": paired_ratio(runs, mode, "bare", route),
                "p99_ms": statistics.median(run.load.p99_ms for run in mine),
                "cpu_us_per_request": statistics.median(run.cpu_us_per_request for run in mine),
                # bare's CPU per request over mode's: the req/s ratio a CPU-bound server reaches.
                "cpu_vs_bare": paired_ratio(runs, mode, "bare", route, cpu=True),
                "cpu_busy": statistics.median(run.cpu_busy for run in mine),
                "export_bytes_per_request": statistics.median(run.export_bytes_per_request for run in mine),
                "non_2xx": sum(run.load.non_2xx for run in mine),
                "socket_errors": sum(run.load.socket_errors for run in mine),
            }
    return summary


def compare(runs: list[Run], modes: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per route, the service's modes against the DIY stack's."""
    return {
        route: {
            f"{mode}/{base}": {
                "rps": paired_ratio(runs, mode, base, route),
                "cpu_per_request": paired_ratio(runs, mode, base, route, cpu=True),
            }
            for mode, base in COMPARISONS
            if mode in modes and base in modes
        }
        for route in ROUTES
    }


def spread(ratio: dict[str, float] | None, unit: str = "") -> str:
    if ratio is None:
        return "-"
    return f"{ratio['median']:.2f}{unit} ({ratio['min']:.2f}-{ratio['max']:.2f})"


def format_table(summary: dict[str, dict[str, Any]], comparisons: dict[str, Any]) -> str:
    lines = [
        "| route | mode | req/s | vs bare (min-max) | p99 ms | CPU us/req | CPU vs bare"
        " | CPU busy | export B/req | non-2xx | socket errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for route, rows in summary.items():
        for mode, row in rows.items():
            lines.append(
                f"| {route} | {mode} | {row['rps']:.0f} | {spread(row['vs_bare'])}"
                f" | {row['p99_ms']:.2f} | {row['cpu_us_per_request']:.0f}"
                f" | {spread(row['cpu_vs_bare'])} | {row['cpu_busy']:.2f}"
                f" | {row['export_bytes_per_request']:.0f} | {row['non_2xx']} | {row['socket_errors']} |"
            )
    for route, pairs in comparisons.items():
        lines.append("")
        for name, ratios in pairs.items():
            lines.append(
                f"{route} {name}: {spread(ratios['rps'], 'x')} the req/s,"
                f" {spread(ratios['cpu_per_request'], 'x')} less CPU per request"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before it (0: none)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {', '.join(unknown)}; known: {', '.join(MODES)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian package wrk)")
    return args


def measure(args: argparse.Namespace, service: Service, workdir: Path) -> list[Run]:
    runs = []
    for round_ in range(args.rounds):
        for mode in rotated(args.modes, round_):
            for run in run_mode(mode, round_, args, service, workdir):
                runs.append(run)
                say(
                    f"round {round_ + 1}/{args.rounds} {mode:10} {run.route:5} {run.load.rps:7.0f} req/s"
                    f"  p99 {run.load.p99_ms:6.2f} ms  cpu {run.cpu_us_per_request:4.0f} us/req"
                    f" (busy {run.cpu_busy:.2f})"
                )
    return runs


def setup(args: argparse.Namespace, service: Service, loadavg_at_start: tuple[float, ...]) -> dict[str, Any]:
    """What the run ran on, for the JSON file."""
    return {
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        # Other work on the machine: what the CPU busy column shows it cost.
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": os.getloadavg(),
        "python": sys.version.split()[0],
        "packages": package_versions(service),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers and the sink are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        say(f"generating the default service in {workdir}")
        service = generate_service(workdir)
        sink, args.sink_url = start_sink()
        loadavg_at_start = os.getloadavg()
        if loadavg_at_start[0] > (os.cpu_count() or 1) / 2:
            say(f"warning: load average {loadavg_at_start[0]:.1f}: other work will move req/s (see CPU busy)")
        try:
            runs = measure(args, service, workdir)
        finally:
            sink.terminate()
            sink.wait()
        ran_on = setup(args, service, loadavg_at_start)
    summary, comparisons = summarize(runs, args.modes), compare(runs, args.modes)
    say(f"\n{format_table(summary, comparisons)}")
    say(f"\nmedians of {args.rounds} interleaved rounds, wrk -c{args.connections}, {args.duration} s per run")
    if args.output:
        command = " ".join(["uv run benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
        result = {"command": command, "setup": ran_on, "summary": summary, "comparisons": comparisons}
        result["runs"] = [asdict(run) for run in runs]
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        say(f"results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
