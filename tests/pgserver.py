"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl from the machine's PostgreSQL.

The server runs from a temporary folder on a free local port and is removed afterwards. PostgreSQL
refuses to run as root, so a root test run starts it as the `postgres` system user (which the
Debian packages create); anyone else runs it as themselves. The tests connect over TCP with a
password (scram-sha-256), as a sweep worker on another machine would; the fixture administers the
server over a Unix socket in the temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

PG_BIN = Path(os.environ.get("NETSPEC_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"  # the cluster's superuser (a database role, whatever the system user)
USER, PASSWORD = "sweeper", "s3cret-pw"


def unavailable_reason() -> str | None:
    """Why the server cannot be started here, or None."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL server binaries not found in {PG_BIN} (set NETSPEC_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' system user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresServer:
    folder: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            _as_server_user([str(PG_BIN / command[0]), *command[1:]]),
            capture_output=True, text=True, timeout=timeout, cwd=self.folder,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    @classmethod
    def create(cls) -> PostgresServer:
        # As root, the server's user must reach the folder: /tmp, not a TMPDIR that may be root's alone.
        folder = Path(tempfile.mkdtemp(prefix="netspec-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        server = cls(folder)
        server._run(
            "initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        return server

    def start(self) -> None:
        """Start on self.port, or on a fresh free port (retried: another process may take it first)."""
        for attempt in range(5):
            port = self.port or free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.folder} -c fsync=off"
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options,
                          "-w", "-t", "120", "start")  # fmt: skip
            except RuntimeError:
                if self.port or attempt == 4:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()}") from None
                continue
            self.port = port
            return

    def running(self) -> bool:
        command = _as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"])
        return subprocess.run(command, capture_output=True, cwd=self.folder, timeout=60).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.folder), port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as connection:  # fmt: skip
            connection.execute(sql)

    def url(self, database: str, password: str = PASSWORD, host: str = "127.0.0.1", port: int | None = None) -> str:
        return f"postgresql://{USER}:{password}@{host}:{port or self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
