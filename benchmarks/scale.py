"""The driver at scale (issue 25), measured through the real driver: `tuner.run_search` with its
Tune loop, scheduler, Optuna searcher on PostgreSQL, MLflow callbacks and writer thread, progress
callbacks and resume record, against a real `mlflow server` on PostgreSQL behind a counting proxy.
Only the trial's computation is a stub: `stub_trainable` is the real trainable
(pipeline.trainable: its MLflow trial run, per-fold metrics and plots, fold checkpoints and
tune.report) with `run_trial` replaced by a sleep per fold that yields a FoldResult of the fold's
real validation labels.

    python -m benchmarks.scale --trials 64 [--concurrency 16] [--fold-s 5]    # make bench-scale: 64, 256, 1024

Measured per size, written to benchmarks/results.json under `scale` (merged: other keys and sizes
stay): the driver's CPU seconds per fold report (this process: Tune's loop, callbacks, writer
thread, Optuna client), the delay from a trial's tune.report to the end of the driver's callbacks
for that result (p50, p99), MLflow requests and uploaded bytes per trial (every client, through
the proxy), Optuna ask / tell / report time, the driver's peak RSS, and wall time against the ideal
(trials x folds x fold seconds / concurrency). Each trial is an actor process of ~330 MB private
memory (torch, MLflow, Ray), so concurrency is bounded by the machine's memory; --concurrency
says what a run used."""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from ray.tune import Callback

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "spaces" / "demo.yaml"
SIZES = (64, 256, 1024)
FOLDS = 5
MAX_CONCURRENCY = 256
FOLD_S_ENV = "GANTUNE_SCALE_FOLD_S"
"""The stub's seconds per fold, passed to the trial processes (they inherit the driver's environment)."""
STAMP = "scale_reported_at"
"""Result key: when the trial called tune.report (time.time() on this machine)."""
POSTGRES = os.environ.get("GANTUNE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class ScaleRun:
    """One size of the simulation."""

    trials: int
    """Trials of the search (the demo space's baselines included)."""
    concurrency: int
    """Trials running at once (search.max_concurrent; the local Ray gets as many logical CPUs)."""
    fold_s: float
    """Seconds each stub fold sleeps."""
    folds: int = FOLDS
    """Folds per trial (data.folds); FIFO, so every trial reports every fold."""
    seed: int = 0
    """The search's seed (Optuna's sampler, the stub's fold scores)."""


# --- The trial side: the real trainable, a sleep instead of training ---

def stub_trainable(config: dict, settings) -> None:
    """pipeline.trainable with run_trial a sleep per fold, each report stamped with its time."""
    from ray import tune

    from gantune.trainables import pipeline

    real_report, real_run_trial = tune.report, pipeline.run_trial

    def stamped(metrics: dict, checkpoint=None) -> None:
        real_report({**metrics, STAMP: time.time()}, checkpoint=checkpoint)

    tune.report, pipeline.run_trial = stamped, sleeping_run_trial
    try:
        pipeline.trainable(config, settings)
    finally:
        tune.report, pipeline.run_trial = real_report, real_run_trial


def sleeping_run_trial(cfg, data, device, on_fold=None, skip_folds: int = 0, gan_cache=None) -> dict:
    """run_trial's contract (the folds from skip_folds on, one FoldResult each to on_fold), with a
    sleep for the work and scores drawn per trial and fold (no signal for the searcher to find)."""
    import numpy as np

    from gantune.trainables.gans.cache import CacheStats
    from gantune.trainables.metrics import classification_metrics
    from gantune.trainables.trial import FoldResult, Synthetic, fold_seed, trial_folds

    fold_s = float(os.environ.get(FOLD_S_ENV, "1"))
    for fold in trial_folds(cfg, data)[skip_folds:]:
        time.sleep(fold_s)
        labels = fold.val_view(data.pool).labels.cpu().numpy()
        rng = np.random.default_rng(fold_seed(cfg, fold) + int(1e6 * cfg.synth.ratio))
        p = np.clip(0.5 + 0.3 * (labels == cfg.data.positive_class) + rng.normal(0, 0.25, len(labels)), 0, 1)
        proba = np.stack([1 - p, p], axis=1) if cfg.data.positive_class == 1 else np.stack([p, 1 - p], axis=1)
        metrics = {**classification_metrics(labels, proba, positive=cfg.data.positive_class), "clf_best_step": 1.0}
        on_fold(FoldResult(fold.index, metrics, labels, proba, Synthetic(), {}, gan_stats=CacheStats().as_metrics()))
    return {}


# --- The driver side: probes on the real driver ---

class Timings:
    """Durations by name, from any thread."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.values.setdefault(name, []).append(seconds)


def timed(timings: Timings, name: str, method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            timings.add(name, time.perf_counter() - start)

    return wrapper


TIMINGS = Timings()
"""The driver's timings of one size (the callback is pickled with the Tuner: it holds no lock)."""


class Probe(Callback):
    """The last Tune callback: the delay from a report to the end of the driver's work on it
    (Tune runs the scheduler, then the searcher, then the callbacks in order)."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if STAMP in result:
            TIMINGS.add("report_to_callbacks_end", time.time() - result[STAMP])


def install_probes(timings: Timings) -> None:
    """Time Optuna's ask / report / tell and append the probe to the search's callbacks (once)."""
    from gantune.search import tuner

    if tuner.trainable is stub_trainable:
        return

    searcher = tuner.StaleFailingOptunaSearch
    for method, name in (("suggest", "optuna_ask"), ("on_trial_result", "optuna_report"),
                         ("on_trial_complete", "optuna_tell")):
        setattr(searcher, method, timed(timings, name, getattr(searcher, method)))
    make_progress = tuner.make_progress

    def with_probe(space, quiet):
        reporter, callbacks = make_progress(space, quiet=quiet)
        return reporter, [*callbacks, Probe()]

    tuner.make_progress = with_probe
    tuner.trainable = stub_trainable  # make_trainable wraps it with the search's settings


# --- Services: PostgreSQL databases, MLflow server, counting proxy ---

def create_database(prefix: str) -> str:
    import psycopg2

    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = psycopg2.connect(POSTGRES, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return urllib.parse.urlparse(POSTGRES)._replace(path=f"/{name}").geturl()


def drop_database(uri: str) -> None:
    import psycopg2

    conn = psycopg2.connect(POSTGRES, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{urllib.parse.urlparse(uri).path[1:]}" WITH (FORCE)')
    conn.close()


def proxy_process(upstream: str, conn) -> None:
    """The counting proxy (benchmarks/mlflow_traffic.py) in a process of its own, so its CPU is
    not the driver's; sends its port, then on any message the requests it counted."""
    from .mlflow_traffic import Traffic, counting_proxy

    traffic = Traffic()
    server = counting_proxy(upstream, traffic)
    conn.send(server.server_address[1])
    conn.recv()
    server.shutdown()
    conn.send(traffic.requests)


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=proxy_process, args=(upstream, child), daemon=True)
        self._proc.start()
        self.url = f"http://127.0.0.1:{self._conn.recv()}"

    def requests(self) -> list[tuple]:
        self._conn.send("stop")
        requests = self._conn.recv()
        self._proc.join(timeout=30)
        return requests


# --- One size ---

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict:
    return {"count": len(values), "total_s": round(sum(values), 3),
            "mean_ms": round(1000 * statistics.fmean(values), 2) if values else None,
            "p50_ms": round(1000 * percentile(values, 0.5), 2) if values else None,
            "p99_ms": round(1000 * percentile(values, 0.99), 2) if values else None}


def traffic_per_trial(requests: list[tuple], trial_run_ids: set[str], trials: int) -> dict:
    trial_reqs = [r for r in requests if r[2] in trial_run_ids]
    return {
        "requests": len(requests), "bytes_up": sum(r[3] for r in requests),
        "requests_per_trial": round(len(requests) / trials, 1),
        "bytes_up_per_trial": round(sum(r[3] for r in requests) / trials),
        "trial_run_requests_per_trial": round(len(trial_reqs) / trials, 1),
        "trial_run_bytes_up_per_trial": round(sum(r[3] for r in trial_reqs) / trials),
    }


def run_size(run: ScaleRun, work: Path) -> dict:
    """One search of `run.trials` stub trials through the real driver; its figures."""
    from mlflow.tracking import MlflowClient

    from gantune.mlflow_server import ServerConfig, free_port, resolve, running_server
    from gantune.mlflow_server.server import with_installed_postgres_driver
    from gantune.search.dataset import load_data
    from gantune.search.options import SearchOptions
    from gantune.search.space import load_space
    from gantune.search.tuner import run_search

    os.environ[FOLD_S_ENV] = str(run.fold_s)
    # The trial processes import stub_trainable from benchmarks/ (a folder of the checkout).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    space = load_space(DEMO).with_overrides({
        "search.num_samples": run.trials, "search.max_concurrent": run.concurrency, "data.folds": run.folds,
        "search.scheduler": "fifo",
    })
    data, _ = load_data(space, skip_bad=False)
    mlflow_db, optuna_db = create_database("scale_mlflow"), create_database("scale_optuna")
    timings = TIMINGS
    timings.values.clear()
    install_probes(timings)
    try:
        # One worker: uvicorn's supervisor of several kills a worker that does not answer its 5 s
        # health check, which an MLflow worker still importing on a busy machine never does.
        cfg = resolve(ServerConfig(port=free_port(), workers=1, backend_store_uri=mlflow_db, workdir=work))
        with running_server(cfg, work / "server.log", timeout=900) as upstream:  # schema set-up on a busy machine
            proxy = CountingProxy(urllib.parse.urlsplit(upstream).netloc)
            options = SearchOptions(experiment=f"scale-{run.trials}", tracking_uri=proxy.url,
                                    storage_path=str(work / "ray_results"), seed=run.seed,
                                    optuna_storage=with_installed_postgres_driver(optuna_db),
                                    quiet=True)
            start_ray(options, run.concurrency)
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            rss0 = cpu0.ru_maxrss
            rows, parent_run_id = run_search(space, data, options)
            wall = time.monotonic() - wall0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            requests = proxy.requests()
            client = MlflowClient(upstream)
            experiment_id = client.get_run(parent_run_id).info.experiment_id
            trial_runs = client.search_runs([experiment_id], "tags.`gantune.role` = 'trial'", max_results=5000)
        ray_shutdown()
    finally:
        for db in (mlflow_db, optuna_db):
            drop_database(db)
    driver_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    delays = timings.values.get("report_to_callbacks_end", [])
    reports = len(delays)
    ideal = run.trials * run.folds * run.fold_s / run.concurrency
    return {
        **asdict(run),
        "leaderboard_rows": len(rows), "trial_runs": len(trial_runs),
        "trial_runs_running": sum(r.info.status == "RUNNING" for r in trial_runs),
        "fold_reports": reports,
        "driver_cpu_s": round(driver_cpu, 2),
        "driver_cpu_ms_per_fold_report": round(1000 * driver_cpu / reports, 2) if reports else None,
        "report_to_callbacks_end_p50_s": round(percentile(delays, 0.5), 4),
        "report_to_callbacks_end_p99_s": round(percentile(delays, 0.99), 4),
        "report_to_callbacks_end_max_s": round(max(delays), 4) if delays else None,
        "mlflow": traffic_per_trial(requests, {r.info.run_id for r in trial_runs}, run.trials),
        "optuna": {name: summary(timings.values.get(name, [])) for name in ("optuna_ask", "optuna_report",
                                                                            "optuna_tell")},
        "driver_peak_rss_mb": round(cpu1.ru_maxrss / 1024, 1),
        "driver_rss_before_search_mb": round(rss0 / 1024, 1),
        "wall_s": round(wall, 1), "ideal_s": round(ideal, 1), "wall_over_ideal": round(wall / ideal, 2),
    }


def start_ray(options, num_cpus: int, tries: int = 3) -> None:
    """The local Ray run_search would start (tuner.start_local_ray, as many logical CPUs as trials
    at once), tried again when its raylet did not register within Ray's fixed 30 s: on a machine
    busy with other work, niced processes can wait that long."""
    from gantune.search.tuner import start_local_ray

    for attempt in range(tries):
        try:
            start_local_ray(options, num_cpus)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == tries - 1:
                raise
            print(f"scale: Ray's start timed out ({attempt + 1}/{tries}); again", file=sys.stderr, flush=True)
            ray_shutdown()


def ray_shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def write_scale(result: dict, path: Path) -> dict:
    """Merge one size into results.json's `scale` (other keys and sizes stay)."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    scale = previous.get("scale", {})
    sizes = {**scale.get("sizes", {}), str(result["trials"]): result}
    ran = sorted(int(k) for k in sizes)
    merged = {**previous, "scale": {**scale, "sizes": sizes, "ran": ran,
                                    "remaining": [n for n in SIZES if n not in ran]}}
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def main(argv: list[str] | None = None) -> int:
    from .common import RESULTS, machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, action="append", help=f"a size to run, repeatable (default: {SIZES})")
    p.add_argument("--concurrency", type=int, help=f"trials at once (default: min(trials, {MAX_CONCURRENCY}))")
    p.add_argument("--fold-s", type=float, default=5.0, help="seconds each stub fold sleeps")
    p.add_argument("--out", type=Path, default=RESULTS, help="results file (merged into)")
    args = p.parse_args(argv)
    # SIGTERM (timeout, a CI job's end) as an exception: the server stops and the databases go.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for n in args.trials or SIZES:
        if n < 1 or (args.concurrency is not None and args.concurrency < 1):
            p.error(f"--trials and --concurrency must be >= 1, got {n} and {args.concurrency}")
        run = ScaleRun(n, min(n, args.concurrency or MAX_CONCURRENCY), args.fold_s)
        print(f"scale: {run}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="scale") as tmp:
            result = {**run_size(run, Path(tmp)), "machine": machine()}
        write_scale(result, args.out)
        print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    from benchmarks import scale  # the importable module: trial processes unpickle stub_trainable from it

    sys.exit(scale.main())
