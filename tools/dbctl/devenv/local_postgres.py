"""An embedded PostgreSQL server in a directory: for `make up` without a cluster, and for tests.

It runs Debian's (or any) PostgreSQL binaries with a private data directory,
listening on 127.0.0.1 only. PostgreSQL refuses to run as root, so when we are
root the server runs as an ordinary user (`postgres` by default).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dbctl import config
from dbctl.errors import ConfigError, DbctlError
from dbctl.text import quoted

DEFAULT_DIR = ".dev/postgres"
DEFAULT_PORT = 55432
DEV_USER = DEV_PASSWORD = DEV_DATABASE = "kiro"


@dataclass
class LocalServer:
    root: Path
    port: int = DEFAULT_PORT
    user: str = DEV_USER
    password: str = DEV_PASSWORD
    database: str = DEV_DATABASE
    durable: bool = True  # False: fsync off, for throwaway test servers

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str | None = None) -> str:
        return (f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@127.0.0.1:{self.port}/{quote(database or self.database, safe='')}")


def from_environment() -> LocalServer:
    """The `make up` server: KIRO_PG_DIR and KIRO_PG_PORT override the defaults."""
    port = os.environ.get("KIRO_PG_PORT", str(DEFAULT_PORT))
    if config.tcp_port(port) is None:
        raise ConfigError(f"KIRO_PG_PORT={quoted(port)} is not a TCP port; use a number like 55432")
    return LocalServer(Path(os.environ.get("KIRO_PG_DIR", DEFAULT_DIR)).absolute(), int(port))


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: DBCTL_PG_BINDIR, Debian's newest, or PATH."""
    explicit = os.environ.get("DBCTL_PG_BINDIR")
    candidates = [explicit] if explicit else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise ConfigError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
        "(Debian: apt-get install postgresql) or set DBCTL_PG_BINDIR"
    )


def _major(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if config.ascii_digits(version) else 0


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("DBCTL_PG_OS_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"running as root, but there is no user {quoted(name)} to run PostgreSQL as; "
            "install Debian's postgresql package or set DBCTL_PG_OS_USER to an ordinary user"
        ) from None


def _run(args: list[str], account, **kwargs) -> subprocess.CompletedProcess:
    def demote():
        os.setgid(account.pw_gid)
        os.initgroups(account.pw_name, account.pw_gid)
        os.setuid(account.pw_uid)

    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if account:
        env["HOME"] = account.pw_dir
    return subprocess.run(args, preexec_fn=demote if account else None, env=env, text=True,
                          capture_output=True, **kwargs)


def _check_reachable(path: Path, account) -> None:
    """As root, the server account must be able to walk down to the data directory."""
    if account is None:
        return
    for parent in list(path.parents)[::-1]:
        st = parent.stat()
        if st.st_uid == account.pw_uid or st.st_mode & 0o001:
            continue
        raise ConfigError(
            f"PostgreSQL runs as user {quoted(account.pw_name)} (we are root), who cannot enter {parent}; "
            "set KIRO_PG_DIR to a directory under /tmp or /var/tmp, or run as an ordinary user"
        )


def _chown_tree(path: Path, account) -> None:
    if account is None:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, account.pw_uid, account.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), account.pw_uid, account.pw_gid)


def is_initialised(server: LocalServer) -> bool:
    return (server.datadir / "PG_VERSION").exists()


def is_running(server: LocalServer) -> bool:
    if not is_initialised(server):
        return False
    result = _run([str(find_bindir() / "pg_ctl"), "status", "-D", str(server.datadir)], _server_account())
    return result.returncode == 0


def init(server: LocalServer) -> None:
    """initdb with a password-protected superuser; settings for a loopback-only dev server."""
    account = _server_account()
    server.root.mkdir(parents=True, exist_ok=True)
    _check_reachable(server.root, account)
    _chown_tree(server.root, account)
    with tempfile.NamedTemporaryFile("w", dir=server.root, delete=False) as pwfile:
        pwfile.write(server.password + "\n")
    try:
        _chown_tree(server.root, account)
        result = _run([
            str(find_bindir() / "initdb"), "-D", str(server.datadir), "-U", server.user,
            f"--pwfile={pwfile.name}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
            "--encoding=UTF8", "--locale=C.UTF-8",
        ], account)
    finally:
        os.unlink(pwfile.name)
    if result.returncode != 0:
        raise DbctlError(f"initdb failed: {_last_line(result.stderr or result.stdout)}")
    settings = [
        "listen_addresses = '127.0.0.1'",
        f"port = {server.port}",
        "unix_socket_directories = ''",
        "max_connections = 100",
        "shared_buffers = 64MB",
        "log_min_messages = warning",
    ]
    if not server.durable:
        settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    with open(server.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n# dbctl local server\n" + "\n".join(settings) + "\n")


def start(server: LocalServer, timeout: int = 60) -> None:
    account = _server_account()
    if account:  # the log file must be writable by the server account
        server.logfile.touch()
        os.chown(server.logfile, account.pw_uid, account.pw_gid)
    result = _run([
        str(find_bindir() / "pg_ctl"), "start", "-D", str(server.datadir), "-l", str(server.logfile),
        "-w", "-t", str(timeout), "-o", f"-p {server.port}",
    ], account)
    if result.returncode != 0:
        raise DbctlError(
            f"PostgreSQL did not start on port {server.port}: {_log_tail(server)}; "
            f"see {server.logfile} (another server on that port? set KIRO_PG_PORT)"
        )


def stop(server: LocalServer, mode: str = "fast") -> bool:
    """Stop the server; False when it was not running."""
    if not is_running(server):
        return False
    result = _run([str(find_bindir() / "pg_ctl"), "stop", "-D", str(server.datadir), "-m", mode, "-w"],
                  _server_account())
    if result.returncode != 0:
        raise DbctlError(f"PostgreSQL did not stop: {_last_line(result.stderr or result.stdout)}")
    return True


def ensure_database(server: LocalServer, name: str | None = None) -> bool:
    """Create the database if it is missing; True when it was created."""
    from dbctl.engine import postgres

    name = name or server.database
    with postgres.connect(server.url("postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(postgres.create_database_sql(name))
        return True


def ensure_running(server: LocalServer) -> bool:
    """Initialise and start as needed; True when the data directory is new."""
    created = False
    if not is_initialised(server):
        init(server)
        created = True
    if not is_running(server):
        start(server)
    return created


def _log_tail(server: LocalServer) -> str:
    try:
        lines = [line for line in server.logfile.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if "FATAL" in line or "ERROR" in line]
    return (errors or lines or ["no log"])[-1].strip()


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
