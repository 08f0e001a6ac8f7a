"""Throwaway PostgreSQL and Redis servers on loopback, for the instrumentation tests.

Real servers from Debian's packages (`postgresql`, `redis-server`; `.ci/run` installs them), each
in a temporary directory with nothing persisted:

    with running_postgres() as dsn, running_redis() as url:
        ...

    with postgres_server() as postgres:    # one that can be stopped, started, paused, resumed
        postgres.stop(); postgres.start()

    with redis_server(started=False) as redis:    # stopped and started again on the same port
        redis.start(); redis.stop()

PostgreSQL refuses to run as root: as root, its cluster belongs to the `postgres` user the
package creates, and its programs run as that user (`runuser`), in a directory of its own under
the system's temporary directory (pytest's are private to the user running the tests).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
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


class _LocalServer:
    """A server process on a loopback port, its output in `home/server.log`.

    start() returns once the port accepts connections; stop() asks the server to stop and kills
    it after 20 s. Both can be called again: a test takes the server down and brings it back.
    """

    def __init__(self, home: Path, port: int, command: list[str]) -> None:
        self.port = port
        self._command = command
        self._log = home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self._process = subprocess.Popen(self._command, stdout=out, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self._process, self._log)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._ask_to_stop(self._process)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _ask_to_stop(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()


class PostgresServer(_LocalServer):
    """One throwaway cluster that a test can take down and bring back on the same port.

    stop() is a fast shutdown (open sessions are ended, as when the database is restarted);
    pause() freezes every server process, so a client's connection hangs instead of failing.
    """

    def __init__(self, home: Path, bin_dir: Path, as_user: list[str]) -> None:
        self.home = home
        self.data = home / "data"
        port = free_port()
        self.dsn = f"postgresql://service@127.0.0.1:{port}/postgres"
        command = [
            *as_user,
            str(bin_dir / "postgres"),
            *("-D", str(self.data), "-p", str(port), "-k", str(home)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
        ]
        super().__init__(home, port, command)

    def _postmaster_pid(self) -> int:
        # The server's own pid (as root, the Popen's is runuser's): first line of postmaster.pid.
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _server_pids(self) -> list[int]:
        postmaster = self._postmaster_pid()
        children = [
            int(stat.parent.name)
            for stat in Path("/proc").glob("[0-9]*/stat")
            if _parent_pid(stat) == postmaster
        ]
        return [postmaster, *children]

    def _ask_to_stop(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(self._postmaster_pid(), signal.SIGINT)  # fast shutdown

    def pause(self) -> None:
        for pid in self._server_pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._server_pids():
            os.kill(pid, signal.SIGCONT)


def _parent_pid(stat: Path) -> int | None:
    try:
        # Fields after the command name, which is in parentheses and may contain spaces.
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A new cluster with a `service` superuser (trust auth, loopback only), running for the block."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    with tempfile.TemporaryDirectory(prefix="postgres-") as directory:
        home = Path(directory)
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(home, POSTGRES_USER)
            as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        initdb = [str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", "service", "--auth=trust"]
        subprocess.run(
            [*as_user, *initdb, "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server = PostgresServer(home, bin_dir, as_user)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                server.resume()
            server.stop()


@contextmanager
def running_postgres() -> Iterator[str]:
    """A new cluster (see postgres_server); yields its DSN."""
    with postgres_server() as server:
        yield server.dsn


class RedisServer(_LocalServer):
    """A Redis server that saves nothing and that a test can stop and start again on its port."""

    def __init__(self, home: Path) -> None:
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        command = [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)),
            *("--save", "", "--appendonly", "no"),
        ]
        super().__init__(home, port, command)


@contextmanager
def redis_server(*, started: bool = True) -> Iterator[RedisServer]:
    """A Redis server (running unless `started=False`), stopped when the block ends."""
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        server = RedisServer(Path(directory))
        if started:
            server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def running_redis() -> Iterator[str]:
    """A Redis server that saves nothing; yields its URL."""
    with redis_server() as server:
        yield server.url
