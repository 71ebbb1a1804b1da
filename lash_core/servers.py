"""Throwaway local Redis and PostgreSQL servers for tests, notebooks and benchmarks.

``LocalRedisServer.start()`` and ``LocalPostgresServer.start()`` run Debian's ``redis-server`` /
PostgreSQL binaries (installed by ``scripts/servers-setup``) on a free loopback port, in a new
temporary directory, as child processes of this one; ``stop()`` ends them and removes the
directory, and ``restart()`` stops and starts the same server on the same port and data (what a
server restart does to its clients). Both are context managers.

This is I/O glue for development only: production code takes a URL or DSN and never starts
servers. A server that cannot start raises ``ServerUnavailable`` with the reason (binary missing,
not started within ``timeout`` seconds, its log's last lines).

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user that
Debian's package creates, and the data directory is given to that user.
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
from typing import Any, TypeVar

__all__ = ["ServerUnavailable", "LocalRedisServer", "LocalPostgresServer", "free_port"]


class ServerUnavailable(RuntimeError):
    """A local server could not be started (the message says why)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, deadline: float, process: subprocess.Popen[bytes] | None) -> bool:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def _tail(path: str, lines: int = 12) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]).strip()
    except OSError:
        return "(no log)"


_S = TypeVar("_S", bound="_LocalServer")


class _LocalServer:
    kind = "server"
    #: what ``stop()`` / ``restart()`` send first (then SIGKILL after 15 s)
    stop_signal = signal.SIGTERM

    def __init__(self, *, port: int | None = None, timeout: float = 30.0) -> None:
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        self.directory = tempfile.mkdtemp(prefix=f"lash-{self.kind}-")
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.directory, f"{self.kind}.log")

    @classmethod
    def start(cls: type[_S], **kwargs: Any) -> _S:
        """A new server of this kind, running (its constructor's keyword arguments); raises
        ``ServerUnavailable`` (and leaves nothing behind) when it cannot start."""
        server = cls(**kwargs)
        try:
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def restart(self) -> None:
        """Stop the server, then start it again on the same port with the same data directory."""
        self._halt()
        self._launch()

    def stop(self) -> None:
        """End the server and remove its directory. Idempotent."""
        self._halt()
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server and every process it started (a crash: PostgreSQL's backends
        would otherwise outlive their postmaster and answer one more query on a connection they
        already hold); ``restart()`` brings it back. Each server runs in a process group of its
        own, so this is one ``killpg``."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # gone in between
                pass
            process.wait(10)

    def _halt(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._process = None

    def _launch(self) -> None:
        raise NotImplementedError

    def _started(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        if not _wait_for_port(self.port, time.monotonic() + self.timeout, process):
            self._halt()
            raise ServerUnavailable(
                f"{self.kind} did not accept connections on 127.0.0.1:{self.port} within"
                f" {self.timeout} s; log {self.log_path}:\n{_tail(self.log_path)}"
            )


class LocalRedisServer(_LocalServer):
    """``redis-server`` on ``127.0.0.1:port``; ``url`` is ``redis://127.0.0.1:port/0``.

    ``appendonly=True`` (the default) keeps data across ``restart()`` (AOF, fsync every write),
    ``False`` starts empty after each restart (what a cache-only Redis does)."""

    kind = "redis"

    def __init__(
        self, *, port: int | None = None, timeout: float = 30.0, appendonly: bool = True
    ) -> None:
        super().__init__(port=port, timeout=timeout)
        self.appendonly = appendonly
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _launch(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise ServerUnavailable(
                "redis-server is not installed (bash scripts/servers-setup installs it with apt)"
            )
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
            "--save", "", "--daemonize", "no", "--protected-mode", "no",
            "--logfile", self.log_path,
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
        ]  # fmt: skip
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._started(process)


def _postgres_bindir() -> str | None:
    for name in ("pg_ctl", "initdb", "postgres"):
        found = shutil.which(name)
        if found:
            return os.path.dirname(os.path.realpath(found))
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2].split(".")[0])
    )
    return candidates[-1] if candidates else None


class LocalPostgresServer(_LocalServer):
    """A PostgreSQL cluster on ``127.0.0.1:port`` with trust authentication; ``dsn`` is
    ``postgresql://lash@127.0.0.1:port/postgres``. ``create_database(name)`` gives a new,
    empty database's DSN. ``fsync`` is off (a test server: data survives ``restart()``, not a
    power cut)."""

    kind = "postgres"
    #: PostgreSQL's "fast" shutdown: connected clients are disconnected (SIGTERM is the "smart"
    #: shutdown, which waits for every client to leave, so a test with a pool open would wait)
    stop_signal = signal.SIGINT

    def __init__(self, *, port: int | None = None, timeout: float = 60.0) -> None:
        super().__init__(port=port, timeout=timeout)
        self.bindir = _postgres_bindir()
        self.data = os.path.join(self.directory, "data")
        self._as_user: dict[str, Any] = {}
        self._initialised = False

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://lash@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, ``_``) and return its DSN."""
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ValueError(f"database name must be letters, digits and _: {name!r}")
        psql = os.path.join(self.bindir or "", "psql")
        if not os.access(psql, os.X_OK):
            psql = shutil.which("psql") or "psql"
        subprocess.run(
            [psql, "-q", "-d", self.dsn, "-c", f"CREATE DATABASE {name}"],
            check=True, capture_output=True, timeout=self.timeout,
        )  # fmt: skip
        return self.dsn_for(name)

    def _run(self, args: list[str]) -> None:
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                args, stdout=log, stderr=subprocess.STDOUT, timeout=self.timeout, **self._as_user
            )
        if result.returncode != 0:
            raise ServerUnavailable(
                f"{os.path.basename(args[0])} failed ({result.returncode}); log"
                f" {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _launch(self) -> None:
        bindir = self.bindir
        if bindir is None or not os.access(os.path.join(bindir, "postgres"), os.X_OK):
            raise ServerUnavailable(
                "PostgreSQL is not installed (bash scripts/servers-setup installs it with apt)"
            )
        if not self._initialised:
            if os.geteuid() == 0:
                try:
                    import pwd

                    entry = pwd.getpwnam("postgres")
                except KeyError:
                    raise ServerUnavailable(
                        "running as root and there is no postgres user to run the server as"
                    ) from None
                os.chown(self.directory, entry.pw_uid, entry.pw_gid)
                open(self.log_path, "ab").close()
                os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
                self._as_user = {
                    "user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                }  # fmt: skip
            self._run(
                [os.path.join(bindir, "initdb"), "-D", self.data, "-U", "lash", "--auth=trust",
                 "-E", "UTF8", "--no-locale", "--no-sync"]
            )  # fmt: skip
            self._initialised = True
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        args = [os.path.join(bindir, "postgres"), "-D", self.data, *options.split()]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_user
            )
        self._started(process)
