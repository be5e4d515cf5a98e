"""Create or update the non-admin MLflow account the Ray pods log with, through MLflow's auth API.

Run once after `gantune server --auth` is up (the k8s Job in deploy/k8s/mlflow.yaml and the
`mlflow-service-user` service of deploy/compose.yaml run it from the image):

    MLFLOW_TRACKING_URI=http://mlflow:5000 \\
    MLFLOW_TRACKING_USERNAME=<admin> MLFLOW_TRACKING_PASSWORD=<admin password> \\
    GANTUNE_SERVICE_USER=gantune-ray GANTUNE_SERVICE_PASSWORD=<its password> \\
    python deploy/mlflow_service_user.py

Every value comes from the environment, so no password is ever on a command line. Idempotent:
an existing account gets the password from the environment (the secret stays the source of
truth, as for the admin) and loses admin rights if someone granted them. The account owns the
experiments it creates (MLflow gives their creator MANAGE), so searches run with it need
nothing else. Exit 0 when the account logs in, 2 with a message naming the variable otherwise.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

REQUIRED = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "GANTUNE_SERVICE_USER", "GANTUNE_SERVICE_PASSWORD")  # fmt: skip
WAIT_ENV = "GANTUNE_WAIT_FOR_SERVER_SECONDS"
SEARCH_API = "/api/2.0/mlflow/experiments/search"


class SetupError(RuntimeError):
    """A setting or a server answer that stops the account from being set up."""


def read_settings(environ) -> dict[str, str]:
    missing = [key for key in REQUIRED if not environ.get(key)]
    if missing:
        raise SetupError(f"set {', '.join(missing)} (environment; from a Secret or an env file)")
    settings = {key: environ[key] for key in REQUIRED}
    check_password(settings["GANTUNE_SERVICE_PASSWORD"])
    if settings["GANTUNE_SERVICE_USER"] == settings["MLFLOW_TRACKING_USERNAME"]:
        raise SetupError("GANTUNE_SERVICE_USER must not be the admin (MLFLOW_TRACKING_USERNAME): "
                         "the service account is the one without admin rights")  # fmt: skip
    return settings


def check_password(password: str) -> None:
    """The rules `gantune server --auth` applies to the admin's password, for this account's."""
    from gantune.mlflow_server.server import MIN_DISTINCT_CHARACTERS, MIN_PASSWORD_LENGTH, PLACEHOLDER_MARK

    if len(password) < MIN_PASSWORD_LENGTH or len(set(password)) < MIN_DISTINCT_CHARACTERS:
        raise SetupError(f"GANTUNE_SERVICE_PASSWORD needs {MIN_PASSWORD_LENGTH}+ characters, "
                         f"{MIN_DISTINCT_CHARACTERS}+ of them different")  # fmt: skip
    if PLACEHOLDER_MARK in password.lower():
        raise SetupError("GANTUNE_SERVICE_PASSWORD is a placeholder from an example file; choose a real password")


def wait_for_health(uri: str, seconds: float) -> None:
    """The server may still be starting (a Job and a Deployment are applied together)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                return
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() > deadline:
                raise SetupError(f"MLFLOW_TRACKING_URI {uri}: no answer on /health after {seconds:.0f} s ({e})") from e
            time.sleep(2)


def can_log_in(uri: str, user: str, password: str) -> bool:
    """One authenticated read as `user` (not the environment's login)."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    creds = MlflowHostCreds(uri, username=user, password=password)
    resp = http_request(creds, SEARCH_API, "GET", max_retries=0, timeout=10, raise_on_status=False,
                        params={"max_results": 1})  # fmt: skip
    return resp.status_code == 200


def ensure_service_user(settings: dict[str, str]) -> str:
    """Create the account, or reset its password and admin flag; returns what was done."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.server.auth.client import AuthServiceClient

    from gantune.mlflow_server.server import TrackingUnreachableError, check_tracking_login

    uri, user, password = (settings[k] for k in ("MLFLOW_TRACKING_URI", "GANTUNE_SERVICE_USER",
                                                   "GANTUNE_SERVICE_PASSWORD"))  # fmt: skip
    try:
        check_tracking_login(uri)  # the admin, from MLFLOW_TRACKING_USERNAME/PASSWORD
    except TrackingUnreachableError as e:
        raise SetupError(f"the admin login: {e}") from e
    client = AuthServiceClient(uri)  # authenticates with MLFLOW_TRACKING_USERNAME/PASSWORD
    try:
        try:
            client.create_user(user, password)
            done = "created"
        except RestException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.update_user_password(user, password)
            done = "exists; password set from GANTUNE_SERVICE_PASSWORD"
        if client.get_user(user).is_admin:
            client.update_user_admin(user, False)
            done += "; admin rights removed"
    except MlflowException as e:  # RestException, or a refusal without a JSON body
        raise SetupError(f"MLflow refused to set up {user!r}: {e.message}") from e
    if not can_log_in(uri, user, password):
        raise SetupError(f"{user!r} was set up but cannot log in to {uri}")
    return done


def main(environ=os.environ) -> int:
    try:
        settings = read_settings(environ)
        wait_for_health(settings["MLFLOW_TRACKING_URI"], float(environ.get(WAIT_ENV, "300")))
        done = ensure_service_user(settings)
    except SetupError as e:
        print(f"mlflow_service_user: error: {e}", file=sys.stderr)
        return 2
    print(f"mlflow_service_user: {settings['GANTUNE_SERVICE_USER']!r} {done}; it logs in and is not an admin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
