"""A throwaway PostgreSQL server: initdb + pg_ctl on a free loopback port, removed
when stopped. The tests' pg_server fixture (tests/conftest.py) and the ingest
benchmark (benchmarks/ingest.py) start one instead of using the machine's server.

One small module both import (benchmarks/ already import tests.helpers): not in a
shipped package, since it is test and benchmark tooling only. `make setup`
installs the binaries (Debian's postgresql) when run as root."""
from __future__ import annotations

import getpass
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import free_port


def pg_bindir() -> str | None:
    """Debian's PostgreSQL binaries (/usr/lib/postgresql/N/bin), newest first, or $PATH."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    exe = shutil.which("initdb")
    return os.path.dirname(exe) if exe else None


class ThrowawayPostgres:
    """A PostgreSQL server of our own: initdb into a temp dir, pg_ctl start on a
    free loopback port with its unix socket in that dir. As root (initdb refuses root)
    the server runs as the `postgres` user, which owns the temp dir."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hb-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self.port = free_port()
        self.prefix: list[str] = []
        self.user = getpass.getuser()
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.prefix, self.user = ["runuser", "-u", "postgres", "--"], "postgres"

    def _run(self, *cmd: str) -> None:
        r = subprocess.run(self.prefix + [os.path.join(self.bindir, cmd[0]), *cmd[1:]],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout}{r.stderr}")

    def start(self) -> ThrowawayPostgres:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-o", opts, "-w", "-t", "60", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "test")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/test"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
