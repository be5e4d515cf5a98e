"""`gantune dashboard`: optuna-dashboard on the Optuna study of an experiment's latest search.

A search keeps its study in a database by default (search/options.py default_optuna_storage) and
logs where as the parent run's `options.optuna_storage` param; the study is named after the
search's Tune directory (search/resume.py tune_name). So the experiment's name is enough to find
it, and `--optuna-storage` is needed only when that param hides a password or the database moved."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class DashboardError(ValueError):
    """No such experiment or search, a study kept in memory, or a study not in its database."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True,
                   help="MLflow experiment whose latest search (running or ended) to show")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="the study's database (default: the one the search logged as options.optuna_storage)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; "
                   "0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")


def find_study(client, experiment: str, storage: str | None = None) -> tuple[str, str, str]:
    """(storage URL, study name, the search's parent run id) of the experiment's latest search."""
    from .resume import tune_name
    from .runs import experiment_not_found, latest_search

    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise DashboardError(experiment_not_found(client, experiment))
    search = latest_search(client, found.experiment_id, finished=False)
    if search is None:
        raise DashboardError(f"experiment '{experiment}' has no search (tag gantune.role=search)")
    run_id = search.info.run_id
    logged = search.data.params.get("options.optuna_storage", "None")
    storage = storage or (None if logged == "None" else logged)
    if storage is None:
        raise DashboardError(f"search run {run_id} kept its Optuna study in memory (a remote --storage-path and no "
                             "--optuna-storage); nothing to show")
    if ":***@" in storage:
        raise DashboardError(f"search run {run_id} logged its study database without its password ({storage}); "
                             "give it with --optuna-storage URL")
    return storage, tune_name(experiment, run_id), run_id


def study_id(storage: str, study_name: str) -> int:
    """The study's id in `storage` (the dashboard's URL holds it); DashboardError when it is not there."""
    import optuna

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise DashboardError(f"{storage.removeprefix('sqlite:///')}: no such study database (the search's "
                             "options.optuna_storage); give its database with --optuna-storage URL")
    try:
        rdb = optuna.storages.RDBStorage(storage, skip_table_creation=True)
        return rdb.get_study_id_from_name(study_name)
    except Exception as exc:  # noqa: BLE001 - a missing file, table or study: all mean "not there"
        raise DashboardError(f"no Optuna study '{study_name}' in {storage} ({type(exc).__name__}); "
                             "give its database with --optuna-storage URL") from exc


def listen(storage: str, host: str, port: int):
    """optuna-dashboard's WSGI app on a bound server (so the URL printed next answers), single
    threaded as optuna-dashboard's own `run_server` is, without a log line per request."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    try:
        return make_server(host, port, optuna_dashboard.wsgi(storage), handler_class=QuietHandler)
    except OSError as exc:  # the port is taken, or the host is not this machine's
        raise DashboardError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                             "choose another --port or --host") from exc


def dashboard_main(args) -> int:
    from mlflow.tracking import MlflowClient

    from gantune.api import optuna_storage_uri

    storage, name, run_id = find_study(MlflowClient(args.tracking_uri), args.experiment,
                                       optuna_storage_uri(args.optuna_storage))
    number = study_id(storage, name)
    server = listen(storage, args.host, args.port)
    url = f"http://{args.host}:{args.port}/dashboard/studies/{number}"
    print(f"Optuna dashboard of search run {run_id} (study '{name}' in {storage}):\n  {url}\n"
          "(Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
