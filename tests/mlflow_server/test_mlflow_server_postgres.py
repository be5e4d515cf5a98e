"""`gantune server` with the PostgreSQL at 127.0.0.1:5432 as backend and auth store (as in compose.yaml)."""

from __future__ import annotations

import os
import secrets
import urllib.parse

import pytest
from mlflow import MlflowClient

from gantune.mlflow_server import ServerConfig

from mlflow_server_helpers import assert_artifact_round_trip, get_status

ADMIN_URI = os.environ.get("GANTUNE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN, PASSWORD = "pg-admin", "postgres-backed-secret-1"

pytestmark = pytest.mark.postgres


def admin_connection():
    """Autocommit connection to the maintenance database; fails or skips (never passes) without it."""
    import psycopg2

    try:
        conn = psycopg2.connect(ADMIN_URI, connect_timeout=5)
    except psycopg2.OperationalError as e:
        msg = f"PostgreSQL at {ADMIN_URI} is not reachable ({str(e).strip()})"
        if os.environ.get("GANTUNE_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(f"{msg}; skipped because GANTUNE_ALLOW_NO_POSTGRES=1")
        pytest.fail(f"{msg}; start it, or set GANTUNE_ALLOW_NO_POSTGRES=1 to skip the postgres tests")
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


@pytest.fixture(scope="module")
def postgres_db():
    """A fresh database for this run, dropped afterwards; yields its SQLAlchemy URI."""
    name = f"gantune_test_{secrets.token_hex(4)}"
    conn = admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlparse(ADMIN_URI)._replace(path=f"/{name}").geturl()
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def postgres_server(postgres_db, tmp_path_factory, serve, loopback_port):
    workdir = tmp_path_factory.mktemp("postgres_server")
    creds = workdir / "admin.env"
    creds.write_text(f"GANTUNE_MLFLOW_ADMIN_USER={ADMIN}\nGANTUNE_MLFLOW_ADMIN_PASSWORD={PASSWORD}\n")
    cfg = ServerConfig(
        port=loopback_port(), workers=1, workdir=workdir, backend_store_uri=postgres_db,
        auth=True, auth_credentials_file=creds, auth_database_uri=postgres_db,
    )  # fmt: skip
    with serve(cfg) as url:
        yield url, postgres_db, workdir


def test_postgres_backend_stores_runs_and_serves_artifacts(postgres_server, tmp_path, monkeypatch):
    import psycopg2

    url, db_uri, workdir = postgres_server
    assert get_status(url + "/health") == 200
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert_artifact_round_trip(url, tmp_path)
    run = MlflowClient(tracking_uri=url).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=url).search_experiments()]
    )[0]

    # The run, and the auth users, are rows of the PostgreSQL database, not of a stray SQLite file.
    with psycopg2.connect(db_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == ("FINISHED",)
        cur.execute("SELECT is_admin FROM users WHERE username = %s", (ADMIN,))
        assert cur.fetchone() == (True,)
    assert not (workdir / "mlflow.db").exists() and not (workdir / "basic_auth.db").exists()
