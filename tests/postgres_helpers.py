"""A real PostgreSQL for the tests: Debian's server binaries, a cluster in a temporary
directory on a free 127.0.0.1 port, run as the `postgres` user when the suite runs as root,
stopped at the end. Each test gets its own new database."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server_helpers import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def binaries() -> Path | None:
    for path in BINARIES:
        if (path / "pg_ctl").exists() and (path / "initdb").exists():
            return path
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class Postgres:
    """One server: its cluster directory, port and binaries; stop() and start() again keep
    its data (a store-down test restarts it)."""

    def __init__(self, bin_dir: Path, home: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.home = home
        self.data = home / "data"
        self.port = port
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                                        "-l", str(self.home / "log"), "-o", options, "-w",
                                        "-t", "60", "start"]),
                       check=True, capture_output=True, timeout=90)
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                                        "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    home = Path(tempfile.mkdtemp(prefix="stageguard-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    server = Postgres(bin_dir, home, free_port())
    try:
        subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(server.data),
                                        "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                        "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
