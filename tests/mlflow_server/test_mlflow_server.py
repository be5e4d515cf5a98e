"""`gantune server` against real `mlflow server` processes on loopback (SQLite store, basic auth)."""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gantune.mlflow_server import (
    ServerConfig,
    ServerError,
    TrackingAuthError,
    TrackingUnreachableError,
    add_server_arguments,
    build_command,
    build_env,
    check_tracking_reachable,
    config_from_args,
    load_credentials,
    resolve,
    server_main,
    start_server,
    stop_server,
    wait_for_health,
)
from gantune.mlflow_server.server import PASSWORD_ENV, USER_ENV, sync_admin_password

from mlflow_server_helpers import SEARCH_API, assert_artifact_round_trip, get_status, stand_in_server

REPO = Path(__file__).resolve().parents[2]

ADMIN, PASSWORD = "gantune-admin", "correct-horse-battery-9"


def make_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(list(argv))


# --- Config, command line and credentials (no server) ---


def test_defaults_are_sqlite_and_local_artifacts_in_workdir_on_loopback(tmp_path):
    cfg = resolve(ServerConfig(workdir=tmp_path))
    cmd = build_command(cfg)
    assert Path(cmd[0]).name == "mlflow" and cmd[1] == "server"
    opts = dict(zip(cmd[2::1], cmd[3::1]))
    assert opts["--host"] == "127.0.0.1"
    assert opts["--backend-store-uri"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert opts["--artifacts-destination"] == str(tmp_path.resolve() / "mlartifacts")
    assert "--serve-artifacts" in cmd
    assert "--allowed-hosts" not in cmd
    assert opts["--app-name"] == "gantune"  # the UI app that opens on model-training runs (no auth by default)


def test_cli_flags_map_to_mlflow_options(tmp_path):
    args = make_args(
        "--host", "0.0.0.0", "--port", "5055", "--backend-store-uri", "postgresql://u@db:5432/mlflow",
        "--artifacts-destination", "s3://bucket/mlflow", "--s3-endpoint-url", "http://minio:9000",
        "--allowed-hosts", "mlflow.example.org,10.0.*", "--workdir", str(tmp_path),
    )  # fmt: skip
    cfg = config_from_args(args)
    cmd = build_command(cfg)
    opts = dict(zip(cmd, cmd[1:]))
    assert opts["--host"] == "0.0.0.0" and opts["--port"] == "5055"
    assert opts["--backend-store-uri"].startswith("postgresql")  # driver suffix: see the test below
    assert opts["--backend-store-uri"].endswith("://u@db:5432/mlflow")
    assert opts["--artifacts-destination"] == "s3://bucket/mlflow"
    assert opts["--allowed-hosts"] == "mlflow.example.org,10.0.*"
    assert build_env(cfg, None, environ={})["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_s3_endpoint_without_s3_destination_is_refused(tmp_path):
    with pytest.raises(ServerError, match="--s3-endpoint-url"):
        resolve(ServerConfig(workdir=tmp_path, s3_endpoint_url="http://minio:9000"))


def test_credentials_from_env_and_file(tmp_path):
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True))
    creds = load_credentials(cfg, environ={USER_ENV: ADMIN, PASSWORD_ENV: PASSWORD})
    assert (creds.username, creds.password) == (ADMIN, PASSWORD)
    assert PASSWORD not in repr(creds)

    file = tmp_path / "admin.env"
    file.write_text(f"# admin\n{USER_ENV}=fileadmin\n{PASSWORD_ENV}='{PASSWORD}'\n")
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True, auth_credentials_file=file))
    creds = load_credentials(cfg, environ={USER_ENV: "ignored", PASSWORD_ENV: "ignored-ignored"})
    assert (creds.username, creds.password) == ("fileadmin", PASSWORD)


@pytest.mark.parametrize(
    "environ, match",
    [
        ({}, PASSWORD_ENV),
        ({USER_ENV: ADMIN}, PASSWORD_ENV),
        ({USER_ENV: ADMIN, PASSWORD_ENV: "password1234"}, "old public default"),
        ({USER_ENV: ADMIN, PASSWORD_ENV: "short"}, "at least 12"),
    ],
)
def test_bad_or_missing_credentials_are_refused(tmp_path, environ, match):
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True))
    with pytest.raises(ServerError, match=match):
        load_credentials(cfg, environ=environ)


def deploy_example_password() -> str:
    for line in (REPO / "deploy" / "stack.env.example").read_text().splitlines():
        if line.startswith(f"{PASSWORD_ENV}="):
            return line.partition("=")[2]
    raise AssertionError(f"deploy/stack.env.example sets no {PASSWORD_ENV}")


@pytest.mark.parametrize(
    "password, match",
    [
        (deploy_example_password(), "placeholder from deploy/stack.env.example"),
        ("aaaaaaaaaaaa", "different characters"),
    ],
)
def test_example_and_repetitive_passwords_are_refused(tmp_path, password, match):
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True))
    with pytest.raises(ServerError, match=match):
        load_credentials(cfg, environ={USER_ENV: ADMIN, PASSWORD_ENV: password})


def test_credentials_file_errors_name_the_file(tmp_path):
    file = tmp_path / "admin.env"
    file.write_text(f"{USER_ENV}\n")
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True, auth_credentials_file=file))
    with pytest.raises(ServerError, match=f"{file}:1"):
        load_credentials(cfg, environ={})
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True, auth_credentials_file=tmp_path / "nope"))
    with pytest.raises(ServerError, match="nope"):
        load_credentials(cfg, environ={})


def test_auth_ini_has_mlflow_keys_and_no_password(tmp_path):
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True))
    creds = load_credentials(cfg, environ={USER_ENV: ADMIN, PASSWORD_ENV: PASSWORD})
    env = build_env(cfg, creds, environ={"MLFLOW_AUTH_ADMIN_PASSWORD": "stale-from-shell"})
    ini_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert PASSWORD not in ini_path.read_text()
    ini = configparser.ConfigParser()
    ini.read(ini_path)
    assert ini["mlflow"]["database_uri"] == f"sqlite:///{tmp_path.resolve() / 'basic_auth.db'}"
    assert ini["mlflow"]["admin_username"] == ADMIN
    assert ini["mlflow"]["default_permission"] == "READ"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == ADMIN
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32
    assert "--app-name" in build_command(cfg)


def test_server_refuses_to_start_with_auth_and_no_credentials(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    started = []
    monkeypatch.setattr("gantune.mlflow_server.cli.start_server", lambda *a, **k: started.append(a))
    assert server_main(make_args("--auth", "--workdir", str(tmp_path))) == 2
    assert not started
    assert PASSWORD_ENV in capsys.readouterr().err


def test_dry_run_prints_command_without_secrets_and_starts_nothing(tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr("gantune.mlflow_server.cli.start_server", lambda *a, **k: started.append(a))
    uri = "postgresql://mlflow:s3cret-pw@db:5432/mlflow"
    argv = ("--dry-run", "--port", "5077", "--backend-store-uri", uri, "--workdir", str(tmp_path))
    assert server_main(make_args(*argv)) == 0
    assert not started
    out = capsys.readouterr().out
    assert "--port 5077" in out and "mlflow:***@db:5432/mlflow" in out
    assert "s3cret-pw" not in out


@pytest.mark.parametrize(
    "argv, env, warns",
    [
        (("--host", "0.0.0.0"), {}, True),
        (("--host", "192.168.1.20"), {}, True),
        ((), {}, False),
        (("--host", "0.0.0.0", "--auth"), {USER_ENV: ADMIN, PASSWORD_ENV: PASSWORD}, False),
    ],
)
def test_network_bind_without_auth_warns(tmp_path, monkeypatch, capsys, argv, env, warns):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert server_main(make_args(*argv, "--dry-run", "--workdir", str(tmp_path))) == 0
    err = capsys.readouterr().err
    assert ("warning: --host" in err and "without --auth" in err) == warns, err


# --- A port something else already serves ---


def test_server_refuses_a_port_that_already_answers_health(tmp_path, loopback_port, capsys):
    port = loopback_port()
    with stand_in_server(port):
        code = server_main(make_args("--port", str(port), "--workers", "1", "--workdir", str(tmp_path)))
    captured = capsys.readouterr()
    assert code == 2
    assert f"127.0.0.1:{port} is already in use" in captured.err and "--port" in captured.err
    assert "ready" not in captured.out


@pytest.mark.parametrize("exits", [False, True])
def test_health_from_another_process_is_not_our_server(loopback_port, exits):
    """The race the port check cannot close: the port is taken after it. A 200 on /health counts
    only from a listener in our child's session; else we wait for the child, which then dies."""
    port = loopback_port()
    code = "import time; time.sleep(1); raise SystemExit(3)" if exits else "import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        with stand_in_server(port) as url, pytest.raises(ServerError, match="another process answers") as err:
            wait_for_health(url, timeout=4.0, proc=child)
        assert ("exited with code 3" in str(err.value)) == exits
    finally:
        stop_server(child)


# --- check_tracking_reachable ---


def test_closed_port_is_reported_clearly(loopback_port):
    uri = f"http://127.0.0.1:{loopback_port()}"
    with pytest.raises(TrackingUnreachableError) as err:
        check_tracking_reachable(uri, timeout=2.0)
    msg = str(err.value)
    assert f"MLflow tracking server at {uri} is not reachable" in msg
    assert "gantune server" in msg and "file/sqlite URI" in msg


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "file:///tmp/mlruns", "./mlruns"])
def test_local_uris_need_no_server(uri):
    check_tracking_reachable(uri)


# --- A real server: SQLite store, proxied local artifacts ---


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory, serve, loopback_port):
    workdir = tmp_path_factory.mktemp("sqlite_server")
    with serve(ServerConfig(port=loopback_port(), workers=1, workdir=workdir)) as url:
        yield url, workdir


def test_sqlite_server_health_and_run_with_artifact(sqlite_server, tmp_path):
    url, workdir = sqlite_server
    assert get_status(url + "/health") == 200
    check_tracking_reachable(url)
    artifact_uri = assert_artifact_round_trip(url, tmp_path)
    # The bytes landed in the server's artifacts destination, and the runs in its SQLite file.
    rel = artifact_uri.removeprefix("mlflow-artifacts:/")
    assert (workdir / "mlartifacts" / rel / "samples" / "note.txt").read_text() == "hello from a trial\n"
    assert (workdir / "mlflow.db").stat().st_size > 0


# --- A real server: basic auth and allowed hosts ---


@pytest.fixture(scope="module")
def auth_config(tmp_path_factory, loopback_port) -> ServerConfig:
    workdir = tmp_path_factory.mktemp("auth_server")
    creds = workdir / "admin.env"
    creds.write_text(f"{USER_ENV}={ADMIN}\n{PASSWORD_ENV}={PASSWORD}\n")
    port = loopback_port()
    return ServerConfig(
        port=port, workers=1, workdir=workdir, auth=True, auth_credentials_file=creds,
        allowed_hosts=f"127.0.0.1:{port},localhost:{port}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def auth_server(auth_config, serve):
    with serve(auth_config) as url:
        yield url


def test_auth_refuses_anonymous_and_accepts_configured_user(auth_server):
    url = auth_server
    assert get_status(url + "/health") == 200  # health stays open for probes
    assert get_status(url + SEARCH_API) == 401
    assert get_status(url + SEARCH_API, auth=(ADMIN, "wrong-password-123")) == 401
    assert get_status(url + SEARCH_API, auth=("admin", "password1234")) == 401
    assert get_status(url + SEARCH_API, auth=(ADMIN, PASSWORD)) == 200


def clear_client_credentials(monkeypatch, tmp_path):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials either


def test_tracking_check_logs_in_and_names_the_variables(auth_server, monkeypatch, tmp_path):
    clear_client_credentials(monkeypatch, tmp_path)
    with pytest.raises(TrackingAuthError, match="no credentials are set: export MLFLOW_TRACKING_USERNAME and "):
        check_tracking_reachable(auth_server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123")
    with pytest.raises(TrackingAuthError, match=f"refused the login of user '{ADMIN}' \\(HTTP 401\\)"):
        check_tracking_reachable(auth_server)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    check_tracking_reachable(auth_server)


@pytest.mark.parametrize("status, match", [(403, "denies this client access.*READ permission"), (404, "HTTP 404")])
def test_tracking_check_reports_forbidden_and_foreign_servers(loopback_port, monkeypatch, tmp_path, status, match):
    clear_client_credentials(monkeypatch, tmp_path)
    with (
        stand_in_server(loopback_port(), api_status=status) as url,
        pytest.raises(TrackingUnreachableError, match=match),
    ):
        check_tracking_reachable(url, timeout=5.0)


@pytest.mark.parametrize("command", [["report", "--experiment", "x"], ["search", "spaces/demo.yaml", "--smoke-test"]])
def test_commands_without_a_login_fail_before_starting_anything(auth_server, tmp_path, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(HOME=str(tmp_path), RAY_TMPDIR=str(tmp_path))
    gantune = Path(sys.executable).with_name("gantune")
    out = subprocess.run(
        [str(gantune), *command, "--tracking-uri", auth_server], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out.stderr
    assert "Traceback" not in out.stderr and "Ray" not in out.stderr + out.stdout


def test_a_changed_admin_password_is_applied_and_reported(tmp_path, loopback_port, capsys):
    """MLflow seeds the admin only into an empty user store; a new password in the env used to be
    ignored while the old one kept working."""
    old, new = "first-Passw0rd-abc", "second-Passw0rd-xyz"

    def start_with(password: str):
        creds = tmp_path / "admin.env"
        creds.write_text(f"{USER_ENV}={ADMIN}\n{PASSWORD_ENV}={password}\n")
        cfg = resolve(
            ServerConfig(port=loopback_port(), workers=1, workdir=tmp_path, auth=True, auth_credentials_file=creds)
        )
        log = (tmp_path / "server.log").open("a")
        proc = start_server(cfg, log=log)
        wait_for_health(f"http://127.0.0.1:{cfg.port}", timeout=90.0, proc=proc)
        return proc, f"http://127.0.0.1:{cfg.port}"

    proc, url = start_with(old)
    try:
        assert get_status(url + SEARCH_API, auth=(ADMIN, old)) == 200
    finally:
        stop_server(proc)
    assert "warning" not in capsys.readouterr().err  # the first start creates, nothing to apply

    proc, url = start_with(new)
    try:
        assert get_status(url + SEARCH_API, auth=(ADMIN, new)) == 200
        assert get_status(url + SEARCH_API, auth=(ADMIN, old)) == 401
    finally:
        stop_server(proc)
    err = capsys.readouterr().err
    assert f"admin user '{ADMIN}'" in err and f"applied {PASSWORD_ENV}" in err
    cfg = resolve(ServerConfig(workdir=tmp_path, auth=True))
    assert sync_admin_password(cfg, load_credentials(cfg, {USER_ENV: ADMIN, PASSWORD_ENV: new})) is None


def test_auth_server_logs_runs_for_the_configured_user(auth_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert_artifact_round_trip(auth_server, tmp_path)


def test_allowed_hosts_rejects_other_host_headers(auth_server):
    assert get_status(auth_server + SEARCH_API, auth=(ADMIN, PASSWORD), host="evil.example") == 403


def test_bare_postgresql_uri_uses_an_installed_driver(tmp_path):
    import importlib.util

    cfg = resolve(ServerConfig(workdir=tmp_path, backend_store_uri="postgresql://u@db:5432/mlflow"))
    driver = "postgresql" if importlib.util.find_spec("psycopg") else "postgresql+psycopg2"
    assert cfg.backend_store_uri == f"{driver}://u@db:5432/mlflow"
    explicit = "postgresql+psycopg2://u@db/mlflow"
    assert resolve(ServerConfig(workdir=tmp_path, backend_store_uri=explicit)).backend_store_uri == explicit


# Open without a login by MLflow's design (mlflow.server.auth.is_unprotected_route): probes, the
# UI's static bundle, and server-info (how the server is configured, no secrets). Anything else
# answering an anonymous caller is a hole.
OPEN_BY_DESIGN = ("/health", "/static-files/", "/favicon.ico")
OPEN_SUFFIXES = ("/mlflow/server-info",)


def served_routes(cfg: ServerConfig, tmp: Path) -> list[tuple[str, str]]:
    """Every (path, method) of the app `cfg`'s `mlflow server` command runs, read from the app
    itself in a child process (see list_routes.py); its auth store is a scratch copy."""
    cfg = resolve(replace(cfg, workdir=tmp))
    cmd = build_command(cfg)
    app_name = cmd[cmd.index("--app-name") + 1] if "--app-name" in cmd else None
    env = build_env(cfg, load_credentials(cfg) if cfg.auth else None)
    env["_MLFLOW_SGI_NAME"] = "uvicorn"  # what `mlflow server` sets for its uvicorn workers
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("list_routes.py")), *([app_name] if app_name else [])],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return [tuple(r) for r in json.loads(out.stdout)]


def concrete_path(rule: str) -> str:
    """A request path for a Flask (<conv:name>) or FastAPI ({name:conv}) rule."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "1", rule)


def test_auth_refuses_anonymous_calls_on_every_route_the_server_exposes(auth_config, auth_server, tmp_path):
    routes = served_routes(auth_config, tmp_path)
    paths = {path for path, _ in routes}
    # The listing really is the auth app's: its user routes are there, and it is not a stub.
    assert (
        "/api/2.0/mlflow/users/create" in paths and "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>" in paths
    )
    assert len(routes) > 300, len(routes)
    answered, open_routes = [], []
    for rule, method in routes:
        path = concrete_path(rule)
        status = get_status(auth_server + path, method=method)
        if path.startswith(OPEN_BY_DESIGN) or path.endswith(OPEN_SUFFIXES):
            open_routes.append((method, rule, status))
        elif status != 401:
            answered.append((method, rule, status))
    assert not answered, f"{len(answered)} of {len(routes)} routes did not refuse an anonymous caller: {answered[:20]}"
    assert ("GET", "/health", 200) in open_routes
