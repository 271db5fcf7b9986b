"""A real PostgreSQL server (Debian's package) on a free loopback port, in its own data directory.

    server = PostgresServer().start()
    server.dsn          # postgresql://sampleapp@127.0.0.1:<port>/sampleapp
    server.stop()       # fast shutdown, then the directory is removed

PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's ``postgres`` user and
its programs run through ``setpriv`` (which execs them: the pid is the server's own). The cluster
trusts connections from 127.0.0.1 only (it listens nowhere else), and its superuser is ``sampleapp``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .redis_server import free_port

USER = "sampleapp"


def bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin (Debian's layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql: install Debian's postgresql (make setup)")
    return found[-1].parent


@dataclass
class PostgresServer:
    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="queueops-pg-")))
    process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{USER}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]

    def start(self, timeout: float = 30.0) -> PostgresServer:
        data = self.directory / "data"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            self._as_owner([str(bindir() / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with open(self.directory / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                self._as_owner(
                    [
                        str(bindir() / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(self.port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={self.directory}",
                        "-c",
                        "fsync=off",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"postgres exited early:\n{self.log()}")
                if self._ready():
                    return self
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise RuntimeError(f"postgres not ready within {timeout} s:\n{self.log()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            url = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (USER,)).fetchone():
                    conn.execute(f"CREATE DATABASE {USER}")
            return True
        except psycopg.OperationalError:
            return False

    def log(self) -> str:
        try:
            return (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: open sessions are ended
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
