"""Start an MLflow tracking server: SQLite + local artifacts by default, PostgreSQL + S3 for teams.

The server is MLflow's own `mlflow server` command run as a child process; this module only
resolves a `ServerConfig` into that command and its environment, so every option keeps MLflow's
meaning. Secrets (the basic-auth admin password, the Flask secret key) travel in the child's
environment and are never written to disk or printed.
"""

from __future__ import annotations

import configparser
import importlib.util
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Iterator, Mapping

USER_ENV = "GANTUNE_MLFLOW_ADMIN_USER"
PASSWORD_ENV = "GANTUNE_MLFLOW_ADMIN_PASSWORD"

# MLflow refuses shorter passwords (mlflow.utils.validation._validate_password) and rejects the
# password that old releases shipped in basic_auth.ini (GHSA-gq3w-7jj3-x7gr); checking both here
# turns a worker crash inside `mlflow server` into an error that names our flag or variable.
MIN_PASSWORD_LENGTH = 12
LEGACY_DEFAULT_PASSWORD = "password1234"
# deploy/stack.env.example ships `change-me-...` placeholders; they are as public as MLflow's old
# default, so a copied-but-unedited env file must not start a server.
PLACEHOLDER_MARK = "change-me"
# Twelve characters of one or two symbols ("aaaaaaaaaaaa") pass MLflow's length rule but are the
# first thing a guesser tries.
MIN_DISTINCT_CHARACTERS = 5
AUTH_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


class ServerError(RuntimeError):
    """A server that cannot be configured or started; the message names the flag, file or variable."""


class TrackingUnreachableError(ServerError):
    """An http(s) tracking URI this client cannot use: no MLflow server answering behind it, or
    (TrackingAuthError) one that refuses our login."""


class TrackingAuthError(TrackingUnreachableError):
    """A tracking server that answers but refuses this client's credentials (HTTP 401 or 403)."""


@dataclass(frozen=True)
class ServerConfig:
    """How to run `mlflow server`; option names follow MLflow's own CLI."""

    host: str = "127.0.0.1"
    """Interface to bind (--host). Loopback by default; 0.0.0.0 only behind auth or a firewall."""
    port: int = 5000
    """TCP port to listen on (--port)."""
    backend_store_uri: str | None = None
    """Runs/params/metrics store (--backend-store-uri): sqlite:///..., postgresql://user@host/db.
    None means `mlflow.db` in `workdir`, the same file the gantune commands default to."""
    artifacts_destination: str | None = None
    """Where proxied artifacts land (--artifacts-destination): a local path or s3://bucket/prefix.
    None means `mlartifacts/` in `workdir`."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint for an s3:// destination, e.g. http://minio:9000 (MLFLOW_S3_ENDPOINT_URL)."""
    allowed_hosts: str | None = None
    """Comma-separated Host headers the server accepts (--allowed-hosts); None keeps MLflow's
    default (localhost and private IPs)."""
    workers: int = 4
    """Server worker processes (--workers), MLflow's default."""
    auth: bool = False
    """Run MLflow's basic-auth app (--app-name basic-auth)."""
    auth_credentials_file: Path | None = None
    """File with GANTUNE_MLFLOW_ADMIN_USER=... and GANTUNE_MLFLOW_ADMIN_PASSWORD=... lines; when
    None the two environment variables are read instead."""
    auth_database_uri: str | None = None
    """Database of users and permissions; None means `basic_auth.db` (SQLite) in `workdir`."""
    auth_default_permission: str = "READ"
    """Permission of authenticated users on resources nobody granted them (MLflow's default)."""
    auth_cache_ttl_seconds: int = 60
    """How long a worker trusts a verified password (MLflow's auth_cache_ttl_seconds; 0 = off).
    Each check is a deliberately slow hash and trials send many small requests, so gantune turns
    the cache on; a password change reaches other workers within this many seconds."""
    workdir: Path = Path(".")
    """Directory for the default SQLite stores, artifacts and the auth ini."""


@dataclass(frozen=True)
class AdminCredentials:
    """The basic-auth admin account created on the first start against an empty user store."""

    username: str
    """Admin user name."""
    password: str = ""
    """Admin password; kept out of repr so it never reaches a log line."""

    def __repr__(self) -> str:
        return f"AdminCredentials(username={self.username!r}, password=***)"


def resolve(cfg: ServerConfig) -> ServerConfig:
    """Fill the defaults that live in `workdir` and check the options that depend on each other."""
    workdir = cfg.workdir.resolve()
    if not 0 < cfg.port < 65536:
        raise ServerError(f"--port must be in 1..65535, got {cfg.port}")
    if cfg.workers < 1:
        raise ServerError(f"--workers must be >= 1, got {cfg.workers}")
    if cfg.auth_default_permission not in AUTH_PERMISSIONS:
        raise ServerError(
            f"auth default permission must be one of {AUTH_PERMISSIONS}, got {cfg.auth_default_permission!r}"
        )
    destination = cfg.artifacts_destination or str(workdir / "mlartifacts")
    if cfg.s3_endpoint_url and not destination.startswith("s3://"):
        raise ServerError(
            f"--s3-endpoint-url only applies to an s3:// --artifacts-destination, got {destination!r}"
        )
    if cfg.auth_cache_ttl_seconds < 0:
        raise ServerError(f"--auth-cache-ttl must be >= 0 seconds, got {cfg.auth_cache_ttl_seconds}")
    if cfg.auth_credentials_file is not None and not cfg.auth:
        raise ServerError("--auth-credentials-file needs --auth")
    return replace(
        cfg,
        workdir=workdir,
        backend_store_uri=with_installed_postgres_driver(cfg.backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}"),
        artifacts_destination=destination,
        auth_database_uri=with_installed_postgres_driver(
            cfg.auth_database_uri or f"sqlite:///{workdir / 'basic_auth.db'}"
        ),
    )


def with_installed_postgres_driver(uri: str) -> str:
    """Map a bare postgresql:// URI onto psycopg2 when psycopg (v3) is not installed.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg v3, while psycopg2-binary is the driver
    gantune installs; without this the server dies with "No module named 'psycopg'".
    """
    scheme, sep, rest = uri.partition("://")
    if scheme not in ("postgresql", "postgres") or importlib.util.find_spec("psycopg") is not None:
        return uri
    if importlib.util.find_spec("psycopg2") is None:
        raise ServerError(
            f"{uri.split('@')[-1]}: a PostgreSQL store needs psycopg2-binary (pip install psycopg2-binary)"
        )
    return f"postgresql+psycopg2{sep}{rest}"


def read_credentials_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (a docker/k8s env file); blank lines and `#` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ServerError(f"--auth-credentials-file {path}: cannot read it ({e.strerror})") from e
    values = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ServerError(f"{path}:{lineno}: expected KEY=VALUE, got a line without '='")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_credentials(cfg: ServerConfig, environ: Mapping[str, str] = os.environ) -> AdminCredentials:
    """Admin credentials from `cfg.auth_credentials_file`, else from the environment; never a default."""
    if cfg.auth_credentials_file is not None:
        source, values = str(cfg.auth_credentials_file), read_credentials_file(cfg.auth_credentials_file)
    else:
        source, values = "the environment", environ
    username, password = values.get(USER_ENV, ""), values.get(PASSWORD_ENV, "")
    if not username or not password:
        missing = [k for k, v in ((USER_ENV, username), (PASSWORD_ENV, password)) if not v]
        raise ServerError(
            f"--auth needs admin credentials, but {source} does not set {' or '.join(missing)}. "
            f"Set {USER_ENV} and {PASSWORD_ENV} (environment or --auth-credentials-file); "
            "gantune never starts basic auth with a default password."
        )
    if password == LEGACY_DEFAULT_PASSWORD:
        raise ServerError(f"{PASSWORD_ENV} in {source} is MLflow's old public default password; choose another")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServerError(f"{PASSWORD_ENV} in {source} must be at least {MIN_PASSWORD_LENGTH} characters")
    if PLACEHOLDER_MARK in password.lower():
        raise ServerError(
            f"{PASSWORD_ENV} in {source} is the placeholder from deploy/stack.env.example; choose a real password"
        )
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        raise ServerError(
            f"{PASSWORD_ENV} in {source} uses fewer than {MIN_DISTINCT_CHARACTERS} different characters; "
            "choose a less guessable password"
        )
    return AdminCredentials(username, password)


def write_auth_ini(cfg: ServerConfig, username: str) -> Path:
    """The file MLFLOW_AUTH_CONFIG_PATH points at; it holds no password (that goes in the env)."""
    parser = configparser.ConfigParser()
    parser["mlflow"] = {
        "default_permission": cfg.auth_default_permission,
        "database_uri": str(cfg.auth_database_uri),
        "admin_username": username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": str(cfg.auth_cache_ttl_seconds),
    }
    path = cfg.workdir / "mlflow_auth.ini"
    with path.open("w") as f:
        parser.write(f)
    return path


def build_command(cfg: ServerConfig) -> list[str]:
    """The `mlflow server` argv for a resolved config (see `resolve`)."""
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_exe), "server",
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--workers", str(cfg.workers),
        "--backend-store-uri", str(cfg.backend_store_uri),
        "--serve-artifacts",
        "--artifacts-destination", str(cfg.artifacts_destination),
    ]  # fmt: skip
    if cfg.allowed_hosts:
        cmd += ["--allowed-hosts", cfg.allowed_hosts]
    if cfg.auth:
        cmd += ["--app-name", "basic-auth"]
    else:  # MLflow's app opening on model-training runs (gantune/search/mlflow_ui.py)
        cmd += ["--app-name", "gantune"]
    return cmd


def build_env(
    cfg: ServerConfig, credentials: AdminCredentials | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The child's environment: the caller's, plus S3 endpoint and basic-auth settings."""
    env = dict(environ)
    if cfg.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = cfg.s3_endpoint_url
    if cfg.auth:
        assert credentials is not None, "auth needs credentials (load_credentials)"
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_ini(cfg, credentials.username))
        # MLflow reads these env vars before the ini, so a stale value from the caller's
        # environment can never override what gantune resolved.
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = credentials.username
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = credentials.password
        # CSRF needs one static key across workers; a per-start random key suffices for one
        # server, several replicas must share MLFLOW_FLASK_SERVER_SECRET_KEY.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    return env


def redact(arg: str) -> str:
    """An argv item fit to print: a URI's password (postgresql://u:pw@db/x) becomes ***."""
    parts = urllib.parse.urlsplit(arg)
    if not parts.password:
        return arg
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def server_url(cfg: ServerConfig) -> str:
    """The URL clients on this machine use; a wildcard bind is reached through loopback."""
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    return f"http://{host}:{cfg.port}"


def is_loopback(host: str) -> bool:
    """True for an interface only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public interface


def exposure_warning(cfg: ServerConfig) -> str | None:
    """A warning when the server is reachable from other machines without a login."""
    if cfg.auth or is_loopback(cfg.host):
        return None
    return (
        f"--host {cfg.host} without --auth: anyone who can reach port {cfg.port} can read, change and delete "
        "every run, model and artifact. Add --auth (admin from "
        f"{USER_ENV}/{PASSWORD_ENV}), or bind 127.0.0.1 and reach it through a firewall or SSH tunnel."
    )


def check_port_free(host: str, port: int) -> None:
    """Raise ServerError when another process already listens on host:port.

    Binds a throwaway socket the way uvicorn does (SO_REUSEADDR: a port in TIME_WAIT counts as
    free), so the answer matches what mlflow's own bind will meet a moment later.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ServerError(f"--host {host}: cannot resolve it ({e.strerror})") from e
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ServerError(
                f"--port {port}: {host}:{port} is already in use ({e.strerror}); another process (an earlier "
                "`gantune server`?) holds it. Stop it, or choose another --port"
            ) from e


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP `port` (any address), from /proc/net; None off Linux."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(t.exists() for t in tables):
        return None
    inodes = set()
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT, st 0A is LISTEN, field 9 the socket inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _session_of(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) is parenthesised and may hold spaces; after it: state ppid pgrp session ...
    return int(stat.rsplit(")", 1)[1].split()[3])


def serves_port(proc: subprocess.Popen, port: int) -> bool | None:
    """Whether a process of `proc`'s session (see `start_server`) listens on `port`.

    `mlflow server` binds in a grandchild (uvicorn), so the listener is looked for among every
    process that shares the child's session. None where /proc cannot tell (not Linux).
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _session_of(entry.name) != proc.pid:
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                return True
        except OSError:
            continue  # the process exited, or its fds are not ours to read
    return False


def sync_admin_password(cfg: ServerConfig, credentials: AdminCredentials) -> str | None:
    """Make the configured admin password the one the user store holds; a notice when it changed.

    MLflow seeds the admin only into an empty user store, so a password changed in the
    environment after the first start would be ignored while the old one kept working. The
    server's environment is the source of truth for the bootstrap admin: a password changed in
    MLflow's UI is reset to it on the next start, and the notice says so.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    try:
        store.init_db(str(cfg.auth_database_uri))
        if not store.has_user(credentials.username, use_primary=True):
            return None  # first start: MLflow creates the admin from the same values
        changed = []
        if not store.authenticate_user(credentials.username, credentials.password, use_primary=True):
            changed.append("password")
        if not store.get_user(credentials.username).is_admin:
            changed.append("admin rights")
        if changed:
            store.update_user(credentials.username, password=credentials.password, is_admin=True)
    except (MlflowException, OSError) as e:  # sqlalchemy errors surface as MlflowException
        raise ServerError(f"--auth-database-uri {redact(str(cfg.auth_database_uri))}: {e}") from e
    finally:
        if getattr(store, "engine", None) is not None:
            store.engine.dispose()
    if not changed:
        return None
    return (
        f"admin user '{credentials.username}' in {redact(str(cfg.auth_database_uri))} had a different "
        f"{' and '.join(changed)} than {PASSWORD_ENV} gives; applied {PASSWORD_ENV} (the old password no "
        "longer works)"
    )


def start_server(cfg: ServerConfig, log: IO | None = None) -> subprocess.Popen:
    """Start `mlflow server` in its own session and process group (stop it with `stop_server`).

    `cfg` must be resolved; `log` receives the server's stdout and stderr (None: inherit). Refuses
    a port another process already listens on, and applies a changed admin password (printing a
    warning) before MLflow starts.
    """
    check_port_free(cfg.host, cfg.port)
    credentials = load_credentials(cfg) if cfg.auth else None
    if credentials is not None and (notice := sync_admin_password(cfg, credentials)):
        print(f"gantune server: warning: {notice}", file=sys.stderr, flush=True)
    env = build_env(cfg, credentials)
    return subprocess.Popen(
        build_command(cfg), env=env, cwd=cfg.workdir, stdout=log, stderr=subprocess.STDOUT if log else None,
        start_new_session=True,
    )  # fmt: skip


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Terminate the server's process group (uvicorn workers included); kill it if it lingers."""
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    return proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it), for a private server."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def running_server(cfg: ServerConfig, log_path: Path, timeout: float = 180.0) -> Iterator[str]:
    """Start the (resolved) server with its output in `log_path`, wait until it answers, yield its
    URL, and stop it on exit, whatever happened inside."""
    with Path(log_path).open("w") as log:
        proc = start_server(cfg, log=log)
        try:
            wait_for_health(server_url(cfg), timeout=timeout, proc=proc)
            yield server_url(cfg)
        finally:
            stop_server(proc)


def _get_health(url: str, timeout: float) -> None:
    """GET {url}/health; raises URLError/HTTPError/OSError when the server does not answer OK."""
    with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
        if resp.status != 200:
            raise urllib.error.HTTPError(resp.url, resp.status, "health check failed", resp.headers, None)


def wait_for_health(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll GET {url}/health until `proc` (the server we started) answers 200 there.

    A 200 counts only when `proc`'s session holds the listening socket: another server on the
    same port answers /health too, while our own child dies on "address already in use".
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    foreign = f"another process answers {url}/health (its port is already in use), not the server gantune started"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            why = foreign if isinstance(last_error, ServerError) else f"before {url}/health answered"
            raise ServerError(f"mlflow server exited with code {proc.returncode}: {why}")
        try:
            _get_health(url, timeout=2.0)
        except (urllib.error.URLError, OSError) as e:
            last_error = e
        else:
            if proc is None or serves_port(proc, urllib.parse.urlsplit(url).port or 80) is not False:
                return
            last_error = ServerError(foreign)  # ours may still be starting: it exits once its bind fails
        time.sleep(0.25)
    raise ServerError(f"MLflow server at {url} did not answer /health within {timeout:.0f}s: {last_error}")


# The cheapest call every gantune command's first real request needs the same access for.
PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/search"


def check_tracking_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingUnreachableError unless an http(s) tracking URI answers, and lets us in.

    First /health (cheap, and open even on an auth server), then one authenticated API call with
    the credentials MLflow's client will use (MLFLOW_TRACKING_USERNAME/PASSWORD, a token or
    ~/.mlflow/credentials), so a missing or wrong login fails here, before Ray starts, rather
    than as a 401 traceback from the first trial. sqlite:, file: and plain paths are local
    stores that need no server, so they always pass.
    """
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        _get_health(uri, timeout)
    except (urllib.error.URLError, OSError) as e:
        # An HTTPError's str carries the status; a URLError's reason is the socket error.
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
        raise TrackingUnreachableError(
            f"MLflow tracking server at {uri} is not reachable: {reason}; "
            "start one with `gantune server` or use a file/sqlite URI"
        ) from e
    check_tracking_login(uri, timeout)


def check_tracking_login(uri: str, timeout: float = 5.0) -> None:
    """One authenticated read on `uri`; TrackingAuthError naming the variables to set on 401/403."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    try:
        # No retries: the server just answered /health, and MLflow's default retry budget
        # (minutes) would hide a refusal behind a long wait.
        resp = http_request(
            creds, PROBE_ENDPOINT, "GET", max_retries=0, timeout=timeout, raise_on_status=False,
            params={"max_results": 1},
        )  # fmt: skip
    except (MlflowException, OSError) as e:
        raise TrackingUnreachableError(f"MLflow tracking server at {uri} did not answer {PROBE_ENDPOINT}: {e}") from e
    who = f"user '{creds.username}'" if creds.username else None
    if resp.status_code == 401:
        if who is None and not creds.token:
            raise TrackingAuthError(
                f"MLflow tracking server at {uri} requires a login (HTTP 401) and no credentials are set: "
                "export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            )
        raise TrackingAuthError(
            f"MLflow tracking server at {uri} refused the login of {who or 'MLFLOW_TRACKING_TOKEN'} (HTTP 401): "
            "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    if resp.status_code == 403:
        raise TrackingAuthError(
            f"MLflow tracking server at {uri} denies {who or 'this client'} access to experiments (HTTP 403): "
            "ask its admin for READ permission, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            "to a user that has it"
        )
    if resp.status_code != 200:
        raise TrackingUnreachableError(
            f"{uri} answers /health but {PROBE_ENDPOINT} gave HTTP {resp.status_code}; "
            "is it an MLflow tracking server (and the URI without a path)?"
        )
