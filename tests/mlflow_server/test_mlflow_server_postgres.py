"""`gantune server` with the PostgreSQL at 127.0.0.1:5432 as backend and auth store (as in compose.yaml)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from gantune.mlflow_server import ServerConfig

from mlflow_server_helpers import assert_artifact_round_trip, get_status

ADMIN, PASSWORD = "pg-admin", "postgres-backed-secret-1"

pytestmark = pytest.mark.postgres


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
