"""The counting proxy of benchmarks/mlflow_traffic.py in front of a real `mlflow server`: it
forwards faithfully and attributes each request's route, run and uploaded bytes."""

from __future__ import annotations

from urllib.parse import urlsplit

from mlflow.tracking import MlflowClient

from benchmarks.mlflow_traffic import Traffic, counting_proxy
from gantune.mlflow_server import ServerConfig, free_port, resolve, running_server


def test_the_proxy_counts_routes_runs_and_uploaded_bytes(tmp_path):
    cfg = resolve(ServerConfig(port=free_port(), workers=1, workdir=tmp_path))
    with running_server(cfg, tmp_path / "server.log") as url:
        traffic = Traffic()
        proxy = counting_proxy(urlsplit(url).netloc, traffic)
        client = MlflowClient(f"http://127.0.0.1:{proxy.server_address[1]}")
        experiment = client.create_experiment("t")
        run_id = client.create_run(experiment).info.run_id
        client.log_metric(run_id, "m", 1.0)
        (tmp_path / "generator").mkdir()
        (tmp_path / "generator" / "w.pt").write_bytes(b"x" * 12345)
        client.log_artifacts(run_id, str(tmp_path / "generator"), "generator")
        # Forwarded faithfully: read back through the proxy.
        assert client.get_run(run_id).data.metrics == {"m": 1.0}
        assert [f.file_size for f in client.list_artifacts(run_id, "generator")] == [12345]
        proxy.shutdown()
    uploads = [r for r in traffic.requests if r[1] == "PUT artifacts/generator"]
    assert [(r[2], r[3]) for r in uploads] == [(run_id, 12345)]
    metric = [r for r in traffic.requests if r[1].endswith("/runs/log-metric")]
    assert len(metric) == 1 and metric[0][2] == run_id
