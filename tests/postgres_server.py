"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder, ``pg_ctl start`` on a unix socket.

Debian's ``postgresql`` package puts the server programs in ``/usr/lib/postgresql/<version>/bin`` (``pg_config
--bindir`` names that folder when the development files are there too); other systems have them on the ``PATH``.
PostgreSQL refuses to run as root, so under root (CI, containers) the server runs as the ``postgres`` user the package
creates, else as ``nobody``: the process drops to that user before it starts, and owns the temporary folder. The
server listens on a unix socket in its own folder only (no TCP port to collide with), without durability (``fsync``
off: a test database is thrown away), and is stopped at once (``-m immediate``) when the tests are done.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

PROGRAMS = ("initdb", "pg_ctl", "postgres")
#: Unprivileged users to run the server as when the tests run as root, in order of preference.
SERVER_USERS = ("postgres", "nobody")


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None`` when PostgreSQL is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            output = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout
            candidates.append(Path(output.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / program, os.X_OK) for program in PROGRAMS):
            return folder
    return None


def _dropping_to(uid: int, gid: int) -> Callable[[], None]:
    """What a child process runs before the server program: become that user (groups first, while still root)."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


class PostgresServer:
    """A PostgreSQL server of its own, in a temporary folder, for the length of a test session.

    :param bindir: the folder of the server programs (:func:`find_bindir`)
    """

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="maskrl-postgres-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self._as_user, self._user = self._unprivileged_user()

    @property
    def url(self) -> str:
        """URL of the server's ``postgres`` database, through its unix socket, as users write one (no driver named)."""
        return f"postgresql://postgres@/postgres?host={self.socket_dir}"

    def _unprivileged_user(self) -> tuple[Callable[[], None] | None, str | None]:
        if os.geteuid() != 0:
            return None, None
        for name in SERVER_USERS:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            os.chown(self.root, user.pw_uid, user.pw_gid)
            return _dropping_to(user.pw_uid, user.pw_gid), name
        raise RuntimeError(f"running as root, and none of the users {SERVER_USERS} exists to run PostgreSQL as")

    def _run(self, *args: str, timeout: float = 120) -> None:
        environment = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"}
        if self._user is not None:
            environment["HOME"] = str(self.root)
        result = subprocess.run(
            list(args),
            preexec_fn=self._as_user,
            env=environment,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}\n{log}")

    def start(self) -> PostgresServer:
        if self._as_user is not None:
            # Made by the server's user, so that it owns them (the data folder must be its own, mode 0700).
            self._run("mkdir", "-m", "700", str(self.data), str(self.socket_dir))
        else:
            self.data.mkdir(mode=0o700)
            self.socket_dir.mkdir(mode=0o700)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--log", str(self.log), "--wait", "start")
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "--mode", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
