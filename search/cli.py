"""`gantune`: search GAN augmentation for a small medical image dataset.

Resolve, print, persist, then run: every command validates its inputs before it starts Ray or
touches MLflow, and `search --dry-run` stops after printing the resolved configuration."""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command stopped with Ctrl-C."""


class UserError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def parse_override(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_search_parser(sub) -> None:
    p = sub.add_parser(
        "search",
        help="run a search over GAN augmentation pipelines",
        description="Run a Ray Tune + Optuna search defined by a space file; every trial is an MLflow run.",
        epilog="example: gantune search spaces/demo.yaml --num-samples 6 --experiment demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("space", help="search space YAML file (see spaces/)")
    p.add_argument("--data", help="dataset path; overrides data.path of the space file")
    p.add_argument("--experiment", help="MLflow experiment name (default: the space's name)")
    p.add_argument("--num-samples", type=int, help="number of trials, baselines included")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)")
    p.add_argument("--storage-path", default="ray_results", help="Ray Tune storage: a local/shared path or s3:// URI")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. 'auto' or 'ray://head:10001')")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; fractions pack trials on a GPU")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's training")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a value of the space, e.g. --set gan.steps=100 (repeatable)")
    p.add_argument("--smoke-test", action="store_true", help="shrink every budget so the search takes a couple of minutes")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit without starting Ray")
    p.add_argument("--quiet", action="store_true", help="no live progress view, one line per finished trial (for CI logs)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable image files (listed on the parent run) instead of stopping")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment's killed search (same space, --set values, --storage-path, --experiment)")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a trial that raised (diverged / out-of-memory trials are never retried)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="keep the Optuna study in this database (e.g. postgresql://user@host/optuna)")
    p.set_defaults(func=search_main)


def resolve_space(args):
    from .space import SMOKE_TEST, load_space

    space = load_space(args.space)
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.smoke_test:
        # One baseline only, so a 2-trial smoke search still trains a GAN pipeline.
        first_baseline = list(space.search.baselines[:1])
        overrides = {**SMOKE_TEST, "search.num_samples": 2, "search.baselines": first_baseline, **overrides}
    if args.data:
        overrides["data.path"] = args.data
    if args.num_samples is not None:
        overrides["search.num_samples"] = args.num_samples
    if args.max_concurrent is not None:
        overrides["search.max_concurrent"] = args.max_concurrent
    return space.with_overrides(overrides)


def search_main(args) -> int:
    from gantune.trainables.data.datasets import DatasetError

    from .space import SpaceError
    from .tracking import default_tracking_uri

    try:
        space = resolve_space(args)
    except SpaceError as exc:
        raise UserError(str(exc)) from exc
    experiment = args.experiment or space.name
    tracking_uri = args.tracking_uri or default_tracking_uri()
    resolved = {**space.resolved(), "experiment": experiment, "tracking_uri": tracking_uri}
    print(json.dumps(resolved, indent=2, default=str))
    if args.dry_run:
        return 0
    check_tracking(tracking_uri)
    from .dataset import load_data

    try:
        data, skipped = load_data(space, args.skip_bad)
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    from .tuner import RunOptions, run_search

    options = RunOptions(
        experiment=experiment, tracking_uri=tracking_uri, storage_path=args.storage_path,
        address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        seed=args.seed, verbose=0 if args.quiet else 1,
        resume=args.resume, max_failures=args.max_failures, optuna_storage=optuna_storage_uri(args.optuna_storage),
    )
    from .resume import ResumeError
    from .tuner import ClusterError, SearchInterrupted

    start = time.monotonic()
    try:
        rows, parent_run_id = run_search(space, data, options, skipped_files=skipped)
    except (ResumeError, ClusterError) as exc:
        raise UserError(str(exc)) from exc
    except SearchInterrupted as stop:
        again = shlex.join(["gantune", *args.argv, *([] if args.resume else ["--resume"])])
        print(f"\ngantune: {stop}; Tune saved its state. Continue it with:\n  {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(space, rows, parent_run_id, tracking_uri, time.monotonic() - start)
    return 0 if rows else 1


def optuna_storage_uri(uri: str | None) -> str | None:
    """A bare postgresql:// URL with the PostgreSQL driver gantune installs (see the server's)."""
    if uri is None:
        return None
    from gantune.mlflow_server.server import ServerError, with_installed_postgres_driver

    try:
        return with_installed_postgres_driver(uri)
    except ServerError as exc:
        raise UserError(f"--optuna-storage {exc}") from exc


def check_tracking(tracking_uri: str) -> None:
    """Fail before Ray starts (exit 2) when the tracking server does not answer."""
    from gantune.mlflow_server import TrackingUnreachableError, check_tracking_reachable

    try:
        check_tracking_reachable(tracking_uri)
    except TrackingUnreachableError as exc:
        raise UserError(str(exc)) from exc


TRACKING_COMMANDS = {
    "promote": (
        "register the best trial's generator as <experiment>-generator@champion",
        "Register the best trial's generator of the experiment's latest search, if it beats the real-only baseline.",
        "gantune promote --experiment demo --metric val_auc",
    ),
    "generate": (
        "write N synthetic images per class from a registered generator",
        "Write N synthetic images per class (png, npz or mha) from a registered or logged generator.",
        "gantune generate models:/demo-generator@champion --num 100 --out synthetic/ --format png",
    ),
    "report": (
        "leaderboard, plots and an HTML summary of an experiment's latest search",
        "Print the leaderboard of the experiment's latest search and log plots (optimisation history, "
        "hyperparameter importances, parallel coordinates, ratio vs metric) and report.html on its parent run.",
        "gantune report --experiment demo --top 5",
    ),
    "evaluate": (
        "refit the best config and both baselines, score them once on the test split",
        "Refit the best trial's configuration, real-only and classic augmentation on the training pool "
        "and score each once on the untouched test split over paired seeds; logged as a gantune.role=evaluation run.",
        "gantune evaluate --experiment demo --split test --seeds 5",
    ),
}
"""Commands that read an experiment from MLflow: name -> (help, description, example). Each lives
in search/<name>.py with `add_arguments(parser)`, `<name>_main(args)` and `<Name>Error`."""


def add_tracking_parser(sub, name: str) -> None:
    help_text, description, example = TRACKING_COMMANDS[name]
    p = sub.add_parser(
        name, help=help_text, description=description, epilog=f"example: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    importlib.import_module(f"gantune.search.{name}").add_arguments(p)
    p.set_defaults(func=functools.partial(tracking_command, name))


def tracking_command(name: str, args) -> int:
    """Resolve the tracking URI, check the server answers, run; the module's own error -> exit 2."""
    module = importlib.import_module(f"gantune.search.{name}")
    args.tracking_uri = args.tracking_uri or default_uri()
    check_tracking(args.tracking_uri)
    try:
        return getattr(module, f"{name}_main")(args)
    except getattr(module, f"{name.capitalize()}Error") as exc:
        raise UserError(str(exc)) from exc


def default_uri() -> str:
    from .tracking import default_tracking_uri

    return default_tracking_uri()


def print_summary(space, rows, parent_run_id: str, tracking_uri: str, seconds: float) -> None:
    from .leaderboard import format_table, leaderboard_columns

    print(f"\nLeaderboard ({len(rows)} trials, {seconds:.0f} s), parent run {parent_run_id}:")
    print(format_table(rows, leaderboard_columns(space)))
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        mlflow_exe = Path(sys.executable).with_name("mlflow")
        print(f"\nOpen the MLflow UI:\n  {mlflow_exe} ui --backend-store-uri {tracking_uri} --port 5000\n  then browse http://127.0.0.1:5000")
    else:
        print(f"\nMLflow UI: {tracking_uri}")


def add_data_parser(sub) -> None:
    p = sub.add_parser(
        "data", help="inspect a dataset before searching it", description="Inspect a dataset before searching it.",
        epilog="example: gantune data check data/breastmnist.npz --folds 3", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = data_sub.add_parser(
        "check",
        help="summarise a dataset and list every unreadable or suspicious file",
        description="Summarise classes, counts, imbalance, sizes, spacings and channels; list every unreadable "
        "or suspicious file with the reason. Exit 1 when the dataset cannot be used as it is.",
        epilog="example: gantune data check ./t1maps --folds 5\n         gantune data check data/breastmnist.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("path", help="a folder with one sub-folder per class, a CSV manifest, or a MedMNIST .npz")
    c.add_argument("--folds", type=int, help="folds the search will use (a class needs at least this many images; default 5)")
    c.add_argument("--space", help="take 'preprocess' settings and data.folds from this space file")
    c.add_argument("--skip-bad", action="store_true", help="judge the dataset as `search --skip-bad` would: unreadable files skipped")
    c.set_defaults(func=data_check_command)


def data_check_command(args) -> int:
    from gantune.trainables.config import TrialConfig
    from gantune.trainables.data.check import data_check_main

    from .space import SpaceError, load_space

    cfg = TrialConfig()
    if args.space:
        try:
            cfg = TrialConfig.from_flat(load_space(args.space).fixed)
        except SpaceError as exc:
            raise UserError(str(exc)) from exc
    if not Path(args.path).exists():
        raise UserError(f"{args.path}: no such file or folder")
    folds = args.folds or cfg.data.folds
    return data_check_main(argparse.Namespace(path=args.path, folds=folds, skip_bad=args.skip_bad, seed=cfg.data.seed, preprocess=cfg.preprocess))


def add_server_parser(sub) -> None:
    from gantune.mlflow_server import add_server_arguments, server_main

    p = sub.add_parser(
        "server",
        help="start an MLflow tracking server (SQLite by default; PostgreSQL + S3 for production)",
        description="Start `mlflow server` bound to 127.0.0.1 with a SQLite store and proxied artifacts by default; "
        "options for a PostgreSQL backend store, S3/MinIO artifacts and basic auth.",
        epilog="example: gantune server --port 5000\n         gantune server --backend-store-uri postgresql://mlflow@db/mlflow "
        "--artifacts-destination s3://gantune/mlflow --auth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_arguments(p)
    p.set_defaults(func=server_main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantune",
        description="Find the GAN augmentation that most improves a classifier on a small medical image dataset.",
        epilog="example: gantune search spaces/demo.yaml --smoke-test",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_search_parser(sub)
    for name in TRACKING_COMMANDS:
        add_tracking_parser(sub, name)
    add_data_parser(sub)
    add_server_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print a command to run again
    if not sys.stderr.isatty():
        # Logs get the commands' own lines, not MLflow's download bars (ours turn off alike).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"gantune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
