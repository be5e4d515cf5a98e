"""On a cluster (unit level; the e2e tests are in test_cluster_e2e.py): `gantune search` as the
entrypoint of `ray job submit` joins the job's cluster, retries default higher there, and the
preflight refuses what other nodes cannot reach."""

from __future__ import annotations

import base64
import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gantune.search import preflight
from gantune.search.cli import build_parser, search_options
from gantune.search.options import CLUSTER_MAX_FAILURES, SearchOptions
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "spaces" / "demo.yaml"


def options_for(*flags: str) -> SearchOptions:
    args = build_parser().parse_args(["search", str(DEMO), "--tracking-uri", "sqlite:///m.db", *flags])
    return search_options(args, load_space(DEMO))


def test_a_ray_job_entrypoint_joins_the_jobs_cluster_with_cluster_retries(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = options_for()
    assert (local.address, local.max_failures) == (None, 1)
    # What the job supervisor sets for the entrypoint of `ray job submit`.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    job = options_for()
    assert (job.address, job.max_failures) == ("auto", CLUSTER_MAX_FAILURES) and CLUSTER_MAX_FAILURES >= 3
    assert options_for("--address", "ray://head:10001").address == "ray://head:10001"


def test_max_failures_defaults_higher_with_address_and_an_explicit_value_wins(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert options_for("--address", "auto").max_failures == CLUSTER_MAX_FAILURES
    assert options_for("--address", "auto", "--max-failures", "0").max_failures == 0
    assert options_for("--max-failures", "5").max_failures == 5
    # Built directly (Python API, benchmarks), the same rule applies.
    assert (
        SearchOptions(experiment="e", tracking_uri="sqlite:///m.db", address="auto").max_failures
        == CLUSTER_MAX_FAILURES
    )
    assert SearchOptions(experiment="e", tracking_uri="sqlite:///m.db").max_failures == 1


# --- preflight -----------------------------------------------------------------------------------

@contextlib.contextmanager
def basic_auth_server(user: str, password: str):
    """A stand-in MLflow on a free loopback port: /health open (as MLflow's is), every API call
    401 unless it carries `user:password`, else an empty experiment list. Yields its URL."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.startswith("/health") or self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"experiments": []}' if ok else b'{"error_code": "UNAUTHENTICATED"}')

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


TWO_MACHINES = [
    {"NodeID": "a" * 56, "NodeManagerAddress": "192.0.2.10", "NodeManagerHostname": "head", "Alive": True},
    {"NodeID": "b" * 56, "NodeManagerAddress": "192.0.2.11", "NodeManagerHostname": "gpu-1", "Alive": True},
]


@pytest.fixture
def simulated_cluster(monkeypatch):
    """The driver on 192.0.2.10 and a second machine in the cluster; the node probes recorded
    instead of run (no Ray)."""
    probed = []
    monkeypatch.setattr(preflight, "alive_nodes", lambda: TWO_MACHINES)
    monkeypatch.setattr(preflight, "driver_host", lambda address: "192.0.2.10")
    monkeypatch.setattr(preflight, "probe_nodes", lambda nodes, uri, storage: probed.append((len(nodes), uri)) or [])
    return probed


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:///mlflow.db", "is a store on this machine"),
    ("file:///tmp/mlruns", "is a store on this machine"),
    ("./mlruns", "is a store on this machine"),
    ("http://127.0.0.1:5000", "names the loopback interface"),
    ("http://localhost:5000", "names the loopback interface"),
    ("http://[::1]:5000", "names the loopback interface"),
])
def test_a_multi_machine_cluster_refuses_a_tracking_uri_other_nodes_cannot_reach(simulated_cluster, uri, expected):
    with pytest.raises(preflight.PreflightError, match=expected) as info:
        preflight.preflight("auto", uri, "/shared/ray_results")
    message = str(info.value)
    assert uri in message and "2 node(s), 1 on other machines" in message and "--tracking-uri http://" in message
    assert simulated_cluster == []  # refused before any node is asked


def test_reachable_uris_and_one_machine_clusters_go_on_to_the_node_probes(simulated_cluster, monkeypatch):
    preflight.preflight("auto", "http://mlflow.internal:5000", "s3://gantune/ray-results")
    assert simulated_cluster == [(2, "http://mlflow.internal:5000")]
    # Both nodes on the driver's machine: the local defaults stay allowed (still probed).
    monkeypatch.setattr(preflight, "driver_host", lambda address: "192.0.2.10")
    monkeypatch.setattr(
        preflight, "alive_nodes", lambda: [TWO_MACHINES[0], {**TWO_MACHINES[1], "NodeManagerAddress": "192.0.2.10"}]
    )
    preflight.preflight("auto", "sqlite:///mlflow.db", "/tmp/ray_results")
    assert simulated_cluster[-1] == (2, "sqlite:///mlflow.db")
    # No --address: a fresh local cluster, nothing to check.
    preflight.preflight(None, "sqlite:///mlflow.db", "ray_results")
    assert len(simulated_cluster) == 2


def test_ray_client_counts_every_node_as_another_machine():
    assert preflight.other_machines(TWO_MACHINES, None) == TWO_MACHINES
    assert preflight.other_machines(TWO_MACHINES, "192.0.2.10") == TWO_MACHINES[1:]


def test_search_with_address_on_a_multi_machine_cluster_exits_2_before_anything_starts(
    simulated_cluster, monkeypatch, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    from gantune.search import tuner
    from gantune.search.cli import main

    monkeypatch.setattr(tuner, "init_ray", lambda options, num_cpus=None: None)  # "joined" the simulated cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["search", str(DEMO), "--address", "auto", "--smoke-test", "--tracking-uri", uri,
            "--storage-path", str(tmp_path / "ray_results"), "--experiment", "pre"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "cannot run this search; nothing was started" in err
        and f"--tracking-uri {uri} is a store on this machine" in err
    )
    assert "Traceback" not in err
    assert MlflowClient(uri).get_experiment_by_name("pre") is None  # no parent run, no experiment


def test_a_node_with_wrong_credentials_is_named(tmp_path, monkeypatch):
    """check_node is what the Ray task runs on each node, with that node's environment."""
    storage = str(tmp_path / "ray_results")
    with basic_auth_server("worker", "right-password-123") as url:
        preflight.write_probe(storage, "tok", "driver", "ok")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "worker")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
        problems = preflight.check_node(url, storage, "tok", "n1")
        assert len(problems) == 1 and "refused the login of user 'worker' (HTTP 401)" in problems[0]
        assert "MLFLOW_TRACKING_PASSWORD" in problems[0]
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right-password-123")
        assert preflight.check_node(url, storage, "tok", "n1") == []
        assert preflight.read_probe(storage, "tok", "n1") == "ok"  # the driver reads the node's probe back


def test_a_node_that_sees_another_folder_is_told_to_use_shared_storage(tmp_path, monkeypatch):
    with basic_auth_server("u", "p") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p")
        # No driver probe in this folder: as a node with its own local disk sees it.
        problems = preflight.check_node(url, str(tmp_path / "elsewhere"), "tok", "n1")
    assert len(problems) == 1 and "not a shared filesystem" in problems[0] and "s3://" in problems[0]


# --- --resume auto -------------------------------------------------------------------------------


def test_resume_auto_continues_only_an_unfinished_restorable_search(tmp_path, monkeypatch):
    from ray import tune

    from gantune.search import resume, tuner

    storage = str(tmp_path / "ray_results")
    options = SearchOptions(experiment="e", tracking_uri="sqlite:///m.db", storage_path=storage, resume="auto")
    resolved = {**load_space(DEMO).resolved(), "options": options.to_dict()}
    restorable = set()
    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: path in restorable))
    assert tuner.search_to_resume(options, resolved) is None  # no search yet: start one
    record = resume.SearchRecord("e", "1", "parentid", "e-parenti", "sqlite:///m.db", resolved, "interrupted")
    resume.write_record(storage, record)
    assert tuner.search_to_resume(options, resolved) is None  # killed before Tune's first checkpoint
    restorable.add(resume.tune_path(storage, record))
    assert tuner.search_to_resume(options, resolved).parent_run_id == "parentid"
    other = {**resolved, "options": {**resolved["options"], "seed": 7}}
    assert tuner.search_to_resume(options, other) is None  # another configuration: another search
    resume.write_record(storage, resume.SearchRecord(**{**record.__dict__, "status": "finished"}))
    assert tuner.search_to_resume(options, resolved) is None  # finished: a new search
    # A bare --resume still refuses what it cannot continue.
    with pytest.raises(resume.ResumeError, match="already ended"):
        tuner.search_to_resume(SearchOptions(**{**options.__dict__, "resume": "yes"}), resolved)


def test_the_resume_flag_takes_auto_or_nothing():
    assert options_for("--resume").resume == "yes"
    assert options_for("--resume", "auto").resume == "auto"
    assert options_for().resume is None
    with pytest.raises(SystemExit):
        options_for("--resume", "sometimes")
