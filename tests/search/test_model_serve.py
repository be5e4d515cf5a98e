"""`mlflow models serve` of the champion, as the README tells a user to run it from the activated
venv (`source .venv/bin/activate`; MLflow starts `uvicorn` by name from PATH): a generator promoted
in a real SQLite store, served on a free port, answering /invocations with images of the
requested class, count and seed, the same pixels `mlflow.pyfunc.load_model` gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from ray_processes import BIN, free_port  # not from conftest: later conftests take that name
from mlflow.tracking import MlflowClient
from test_promote_generate import make_search, tiny_gans  # noqa: F401 (tiny_gans: the fixture)

from gantune.search.promote import promote

pytestmark = pytest.mark.timeout(600)
SERVE_WAIT_S = 240


def http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_up(url: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + SERVE_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"mlflow models serve exited {proc.returncode}:\n{log.read()[-4000:]}")
        try:
            if http(f"{url}/ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    log.seek(0)
    pytest.fail(f"mlflow models serve did not answer /ping within {SERVE_WAIT_S}s:\n{log.read()[-4000:]}")


def test_the_champion_serves_images_over_http(tmp_path, tiny_gans):  # noqa: F811
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("srv", artifact_location=(tmp_path / "artifacts").as_uri())
    make_search(client, "srv", [("base", 0.70, "FINISHED", True, False), ("good", 0.80, "FINISHED", False, True)],
                tmp_path, tiny_gans)
    _, version = promote(uri, "srv")
    model_uri = f"models:/{version.name}@champion"

    port = free_port()
    # An activated venv: its bin first on PATH (MLflow runs `uvicorn` from PATH), nothing else set.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": uri}
    with (tmp_path / "serve.log").open("w+") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, proc, log)
            request = {"dataframe_split": {"columns": ["label", "num", "seed"], "data": [[0, 3, 7], [1, 2, 0]]}}
            status, body = http(f"{url}/invocations", json.dumps(request).encode())
            assert status == 200, body[:2000]
            predictions = json.loads(body)["predictions"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers (this test's own group)
            proc.wait(timeout=60)

    assert len(predictions) == 2  # one entry per request row
    first, second = (np.asarray(p) for p in predictions)
    assert first.shape == (3, 1, 28, 28) and second.shape == (2, 1, 28, 28)  # (num, C, H, W) per row
    assert first.min() >= 0 and first.max() <= 255 and first.std() > 0
    mlflow.set_tracking_uri(uri)
    import pandas as pd

    local = mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame(request["dataframe_split"]["data"],
                                                                     columns=["label", "num", "seed"]))
    np.testing.assert_array_equal(first, local[0])  # the same seeded pixels as a local load
    np.testing.assert_array_equal(second, local[1])
