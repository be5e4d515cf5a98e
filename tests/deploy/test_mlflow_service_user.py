"""deploy/mlflow_service_user.py against a real `gantune server --auth` (SQLite, loopback): it
creates the Ray pods' account as a normal user that can log runs, re-running it applies the
password from the environment and takes back admin rights, and bad settings exit 2 naming the
variable, without a traceback."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient

from deploy_helpers import DEPLOY
from gantune.mlflow_server import ServerConfig, free_port, resolve, running_server
from gantune.mlflow_server.server import PASSWORD_ENV, USER_ENV

SCRIPT = DEPLOY / "mlflow_service_user.py"
ADMIN, ADMIN_PASSWORD = "deploy-admin", "Adm1n-pass-for-tests"
SERVICE, SERVICE_PASSWORD = "gantune-ray", "Ray-pods-pass-0451"
SEARCH_API = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("service_user_server")
    creds = workdir / "admin.env"
    creds.write_text(f"{USER_ENV}={ADMIN}\n{PASSWORD_ENV}={ADMIN_PASSWORD}\n")
    port = free_port()
    cfg = resolve(ServerConfig(port=port, workers=1, workdir=workdir, auth=True, auth_credentials_file=creds,
                               allowed_hosts=f"127.0.0.1:{port}"))  # fmt: skip
    with running_server(cfg, workdir / "server.log", timeout=90.0) as url:
        yield url


def run_script(url: str, **overrides: str | None) -> subprocess.CompletedProcess:
    """The script with the Job's environment (admin login, service account); None unsets a key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
            "GANTUNE_SERVICE_USER": SERVICE, "GANTUNE_SERVICE_PASSWORD": SERVICE_PASSWORD,
            "GANTUNE_WAIT_FOR_SERVER_SECONDS": "0"}  # fmt: skip
    for key, value in overrides.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def login_status(url: str, user: str, password: str) -> int:
    req = urllib.request.Request(url + SEARCH_API)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def as_user(monkeypatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def test_creates_a_normal_account_that_logs_runs_and_cannot_administer(server, monkeypatch):
    assert login_status(server, SERVICE, SERVICE_PASSWORD) == 401  # not there before
    done = run_script(server)
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout and SERVICE_PASSWORD not in done.stdout + done.stderr

    # What a trial does: create an experiment (its creator may then log to it) and log a run.
    as_user(monkeypatch, SERVICE, SERVICE_PASSWORD)
    client = MlflowClient(tracking_uri=server)
    run = client.create_run(client.create_experiment("service-user-smoke"))
    client.log_metric(run.info.run_id, "val_auc", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"val_auc": 0.5}
    # Not an admin: MLflow refuses it the user API.
    with pytest.raises(MlflowException, match="error code 403"):
        AuthServiceClient(server).create_user("intruder", "Intruder-pass-123")


def test_a_rerun_applies_the_new_password_and_takes_back_admin_rights(server, monkeypatch):
    assert run_script(server).returncode == 0  # exists (or created, when run alone)
    as_user(monkeypatch, ADMIN, ADMIN_PASSWORD)
    AuthServiceClient(server).update_user_admin(SERVICE, True)

    rotated = "Rotated-pass-7782"
    done = run_script(server, GANTUNE_SERVICE_PASSWORD=rotated)
    assert done.returncode == 0, done.stderr
    assert "password set" in done.stdout and "admin rights removed" in done.stdout
    assert AuthServiceClient(server).get_user(SERVICE).is_admin is False
    assert login_status(server, SERVICE, SERVICE_PASSWORD) == 401
    assert login_status(server, SERVICE, rotated) == 200


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"GANTUNE_SERVICE_PASSWORD": None}, "set GANTUNE_SERVICE_PASSWORD"),
        ({"MLFLOW_TRACKING_URI": None, "GANTUNE_SERVICE_USER": None}, "set MLFLOW_TRACKING_URI, GANTUNE_SERVICE_USER"),
        ({"GANTUNE_SERVICE_USER": ADMIN}, "must not be the admin"),
        ({"GANTUNE_SERVICE_PASSWORD": "short"}, "GANTUNE_SERVICE_PASSWORD needs 12+ characters"),
        ({"GANTUNE_SERVICE_PASSWORD": "change-me-service-account"}, "placeholder"),
        ({"MLFLOW_TRACKING_PASSWORD": "Wrong-admin-pass-1"}, "the admin login: MLflow tracking server at"),
    ],
)
def test_bad_settings_exit_2_naming_what_to_fix(server, overrides, message):
    done = run_script(server, **overrides)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_that_never_answers_exits_2():
    done = run_script(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "no answer on /health" in done.stderr, done.stderr
