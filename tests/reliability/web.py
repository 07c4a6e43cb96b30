"""gunicorn and a PostgreSQL cluster of its own, on 127.0.0.1, for the reliability suite.

Both are real processes the tests start, take down and bring back; every helper here cleans up
after itself (context managers), even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import pytest

from .servers import free_port

REPO = Path(__file__).resolve().parents[2]


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """DATABASE_URL of a Django connection (e.g. the pytest-django test database) for child processes."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"


def app_env(database: str, **extra: str) -> dict[str, str]:
    """The environment of a costcontrol process (manage.py, gunicorn) on `database`."""
    env = {**os.environ, "DATABASE_URL": database, "DJANGO_SETTINGS_MODULE": "costcontrol.settings.local"}
    env.update(DJANGO_DEBUG="0", CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING")
    # No default channels from a developer's .env: nothing a test raises reaches real people.
    env.update(ENABLE_EMAIL_ALERTS="0", ENABLE_SLACK_ALERTS="0")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body) for every HTTP answer, errors included."""
    request = Request(url, data=body, headers=headers or {}, method=method)  # noqa: S310 - 127.0.0.1 only
    try:
        with urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- gunicorn -----------------------------------------------------------------------------------------


class Gunicorn:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def gunicorn(database: str, log: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[Gunicorn]:
    """`gunicorn costcontrol.wsgi` (sync workers) on a free port of 127.0.0.1, serving `database`;
    its output goes to `log`. Ready once /healthz answers 200."""
    port = free_port()
    binary = Path(sys.executable).with_name("gunicorn")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "costcontrol.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(workers),
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=app_env(database, **(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log_text()[-3000:]}")
            try:
                if http("GET", f"{server.url}/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer /healthz within 60 s:\n{server.log_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- a PostgreSQL cluster of the test's own -------------------------------------------------------------


def pg_bin() -> Path:
    found = os.environ.get("PG_BIN") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), "")
    if not found or not (Path(found) / "initdb").exists():
        pytest.skip("needs the PostgreSQL server binaries (postgresql-15; .ci/run installs them)")
    return Path(found)


class PostgresCluster:
    """initdb in a temporary folder and a server on a free port of 127.0.0.1 (as the postgres user when
    root, as bin/with-postgres does: pg_ctl refuses root); stop() and start() keep port and data."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.root = os.geteuid() == 0
        # tmp_path lies under a 0700 folder of root's that the postgres user cannot enter.
        self.directory = Path(tempfile.mkdtemp(prefix="costcontrol-reliability-pg."))
        self.directory.chmod(0o755)
        if self.root:
            shutil.chown(self.directory, "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.user = "postgres" if self.root else os.environ.get("USER") or "postgres"

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/costcontrol"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.directory / "server.log"
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}"
                + (log.read_text(errors="replace")[-2000:] if log.exists() else "")
            )
        return result

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "costcontrol")
        return self

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster.init()
    finally:
        cluster.destroy()


def migrate(database: str) -> None:
    """`manage.py migrate` and `manage.py bootstrap` (the default price catalog) on `database`."""
    for command in (["migrate", "-v0"], ["bootstrap"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=app_env(database),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def api_key_create(database: str, *, service: str) -> str:
    """A fresh API key for `service` (no rate limit to speak of) in `database`; returns its plaintext."""
    script = (
        "import django; django.setup();"
        "from api.keys import api_key_issue;"
        f"print(api_key_issue(name='reliability-{service}', service={service!r}, "
        "rate_limit_per_minute=10**9).plaintext)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=app_env(database), capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"creating an API key failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]
