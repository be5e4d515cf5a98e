"""MLflow traffic of a search, measured: every HTTP request a smoke search makes to a real
`mlflow server` (SQLite + proxied artifacts, started by gantune's own server code) passes through
a small counting proxy, which records the route, the bytes uploaded (request bodies) and the run
the request is about. Requests about trial runs are divided by the trials and by the folds the
trials ran (their final `folds_done`), so searches whose scheduler stopped different trials
compare per unit of work.

    python -m benchmarks.run --only mlflow_traffic [--before-gantune /path/to/old/gantune]

`--before-gantune` runs the same search with another gantune (the code before a change, e.g. at
commit 6b7b680 in a venv of its own); without it, "before" is this code with `--keep-artifacts all`
(the generator logged at every fold, as before), which reproduces the old uploads but not the old
driver's run lookups."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
SEARCH_ARGS = ["--smoke-test", "--num-samples", "4", "--set", "data.folds=3", "--set", "gan.steps=40",
               "--max-concurrent", "2", "--seed", "0", "--quiet"]
"""A smoke search of spaces/demo.yaml: 1 real_only baseline + 3 sampled trials over 3 folds."""
SCHEDULERS = {"asha": [], "fifo": ["--set", "search.scheduler=fifo"]}
"""Each measured twice: as written (ASHA may stop trials after a fold, and those keep no generator
under --keep-artifacts complete) and with every trial running all its folds."""
ARTIFACT_ROUTE = re.compile(r"/api/2\.0/mlflow-artifacts/artifacts/[^/]+/(?P<run>[0-9a-f]{32})/artifacts/(?P<path>.*)")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Traffic:
    """What the proxy saw: one (method, route, run id or None, bytes up, bytes down) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, int, int]] = []
        self._lock = threading.Lock()

    def add(self, *request) -> None:
        with self._lock:
            self.requests.append(request)


def route_and_run(method: str, target: str, body: bytes) -> tuple[str, str | None]:
    """A request's route (artifact uploads by their top folder) and the run it is about."""
    parts = urlsplit(target)
    match = ARTIFACT_ROUTE.fullmatch(parts.path)
    if match:
        return f"{method} artifacts/{match['path'].split('/')[0]}", match["run"]
    run = (parse_qs(parts.query).get("run_id") or parse_qs(parts.query).get("run_uuid") or [None])[0]
    if run is None and body[:1] == b"{":
        try:
            payload = json.loads(body)
            run = payload.get("run_id") or payload.get("run_uuid")
        except ValueError:
            pass
    return f"{method} {parts.path}", run


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while (size := int(handler.rfile.readline().split(b";")[0], 16)) > 0:
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def counting_proxy(upstream: str, traffic: Traffic) -> ThreadingHTTPServer:
    """A proxy on a free loopback port that forwards to `upstream` (host:port) and counts."""
    host, port = upstream.split(":")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            body = read_body(self)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(host, int(port), timeout=600)
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            conn.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            traffic.add(self.command, *route_and_run(self.command, self.path, body), len(body), len(data))

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_search(gantune: str, space: str, extra: list[str], work: Path, proxy_url: str, name: str) -> None:
    env_drop = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")
    import os

    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    ray_tmp = tempfile.mkdtemp(prefix="rtrf", dir="/tmp")  # short: Ray's unix socket paths
    env.update(OMP_NUM_THREADS="1", RAY_TMPDIR=ray_tmp)
    cmd = [gantune, "search", space, *SEARCH_ARGS, *extra, "--experiment", name,
           "--tracking-uri", proxy_url, "--storage-path", str(work / "ray_results")]
    try:
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def summarize(traffic: Traffic, client, name: str) -> dict:
    experiment = client.get_experiment_by_name(name)
    trials = client.search_runs([experiment.experiment_id], "tags.`gantune.role` = 'trial'")
    trial_ids = {r.info.run_id for r in trials}
    generator_trials = sum(1 for r in trials if client.list_artifacts(r.info.run_id, "generator"))
    folds = int(sum(r.data.metrics.get("folds_done", 0) for r in trials))
    by_route: dict[str, Counter] = defaultdict(Counter)
    totals = Counter()
    for _method, route, run, up, _down in traffic.requests:
        kind = "trial" if run in trial_ids else "other"
        for key in (route, f"all {kind}"):
            by_route[key].update(requests=1, bytes_up=up)
        totals.update({f"{kind}_requests": 1, f"{kind}_bytes_up": up, "requests": 1, "bytes_up": up})
    return {
        "trials": len(trials), "folds": folds, "trials_keeping_a_generator": generator_trials,
        "requests": totals["requests"], "bytes_up": totals["bytes_up"],
        "trial_requests_per_trial": totals["trial_requests"] / len(trials),
        "trial_requests_per_fold": totals["trial_requests"] / folds,
        "trial_bytes_up_per_trial": totals["trial_bytes_up"] / len(trials),
        "trial_bytes_up_per_fold": totals["trial_bytes_up"] / folds,
        "other_requests": totals["other_requests"], "other_bytes_up": totals["other_bytes_up"],
        "by_route": {k: dict(v) for k, v in sorted(by_route.items())},
    }


def measure(gantune: str, space: str, extra: list[str], name: str) -> dict:
    from mlflow.tracking import MlflowClient

    from gantune.mlflow_server import ServerConfig, free_port, resolve, running_server

    with tempfile.TemporaryDirectory(prefix="traffic") as tmp:
        work = Path(tmp)
        cfg = resolve(ServerConfig(port=free_port(), workers=1, workdir=work))
        with running_server(cfg, work / "server.log") as upstream:
            traffic = Traffic()
            proxy = counting_proxy(urlsplit(upstream).netloc, traffic)
            try:
                run_search(gantune, space, extra, work, f"http://127.0.0.1:{proxy.server_address[1]}", name)
            finally:
                proxy.shutdown()
            return summarize(traffic, MlflowClient(upstream), name)


def mlflow_traffic(before_gantune: str | None = None, before_space: str | None = None) -> dict:
    """Before and after, measured in the same run, for each scheduler; ratios after / before per
    trial and per fold. `before_space`: the demo space file of the code before (its keys may
    differ from this one's)."""
    here = str(Path(sys.executable).with_name("gantune"))
    demo = str(ROOT / "spaces" / "demo.yaml")
    before_how = (f"{before_gantune} {before_space or demo} (another gantune, its defaults)" if before_gantune
                  else "this gantune with --keep-artifacts all")
    result = {"before_ran": before_how, "search": ["spaces/demo.yaml", *SEARCH_ARGS]}
    for scheduler, extra in SCHEDULERS.items():
        print(f"  {scheduler}, before: {before_how}", flush=True)
        before = measure(before_gantune or here, before_space or demo,
                         extra + ([] if before_gantune else ["--keep-artifacts", "all"]), f"traffic-before-{scheduler}")
        print(f"  {scheduler}, after: this gantune, --keep-artifacts complete (the default)", flush=True)
        after = measure(here, demo, extra, f"traffic-after-{scheduler}")
        ratios = {
            key: after[key] / before[key] if before[key] else float("nan")
            for key in ("trial_requests_per_fold", "trial_bytes_up_per_fold", "trial_requests_per_trial",
                        "trial_bytes_up_per_trial")
        }
        result[scheduler] = {"before": before, "after": after, "after_over_before": ratios}
    return result


def print_traffic(result: dict) -> None:
    for scheduler in SCHEDULERS:
        for label in ("before", "after"):
            r = result[scheduler][label]
            print(f"\n{scheduler}, {label}: {r['trials']} trials, {r['folds']} folds, "
                  f"{r['trials_keeping_a_generator']} keep a generator; {r['requests']} requests, "
                  f"{r['bytes_up'] / 1e6:.2f} MB up in all")
            print(f"  trial runs: {r['trial_requests_per_trial']:.1f} requests and "
                  f"{r['trial_bytes_up_per_trial'] / 1e3:.0f} kB up per trial; "
                  f"{r['trial_requests_per_fold']:.1f} requests and "
                  f"{r['trial_bytes_up_per_fold'] / 1e3:.0f} kB per fold")
            print(f"  other (parent run, experiment, searches): {r['other_requests']} requests, "
                  f"{r['other_bytes_up'] / 1e3:.0f} kB up")
            for route, c in r["by_route"].items():
                print(f"    {route:70s} {c['requests']:5d} req {c['bytes_up'] / 1e3:9.1f} kB up")
        ratios = result[scheduler]["after_over_before"]
        print(f"\n{scheduler}, after / before:", {k: round(v, 3) for k, v in ratios.items()})
