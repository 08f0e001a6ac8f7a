"""Throwaway PostgreSQL and Redis servers on loopback, for the instrumentation tests.

Real servers from Debian's packages (`postgresql`, `redis-server`; `.ci/run` installs them), each
in a temporary directory with nothing persisted:

    with running_postgres() as dsn, running_redis() as url:
        ...

PostgreSQL refuses to run as root: as root, its cluster belongs to the `postgres` user the
package creates, and its programs run as that user (`runuser`), in a directory of its own under
the system's temporary directory (pytest's are private to the user running the tests).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.process import free_port

POSTGRES_USER = "postgres"


def postgres_bin_dir() -> Path | None:
    """Where `initdb` and `postgres` are: Debian keeps them off PATH, per major version."""
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major, reverse=True)
    return Path(versions[0]).parent if versions else None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def missing() -> list[str]:
    """The server programs not installed (the tests fail with this list rather than skip)."""
    absent = [] if postgres_bin_dir() else ["postgres (Debian package postgresql)"]
    if shutil.which("redis-server") is None:
        absent.append("redis-server (Debian package redis-server)")
    return absent


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-4000:]}")


@contextmanager
def _serving(command: list[str], port: int, log: Path) -> Iterator[None]:
    """Runs `command` (its output in `log`) for the block, which starts once it listens on `port`."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_postgres() -> Iterator[str]:
    """A new cluster with a `service` superuser (trust auth, loopback only); yields its DSN."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    with tempfile.TemporaryDirectory(prefix="postgres-") as directory:
        home = Path(directory)
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(home, POSTGRES_USER)
            as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        data = home / "data"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "service", "--auth=trust", "-E", "UTF8"]
        subprocess.run(
            [*as_user, *initdb, "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        server = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(home)]
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with _serving([*as_user, *server, *settings], port, home / "server.log"):
            yield f"postgresql://service@127.0.0.1:{port}/postgres"


@contextmanager
def running_redis() -> Iterator[str]:
    """A Redis server that saves nothing; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        port = free_port()
        server = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        with _serving([*server, "--save", "", "--appendonly", "no"], port, Path(directory) / "server.log"):
            yield f"redis://127.0.0.1:{port}/0"
