"""`gantune`: search GAN augmentation for a small medical image dataset.

Resolve, print, persist, then run: every command validates its inputs before it starts Ray or
touches MLflow, and `search --dry-run` stops after printing the resolved configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_USAGE = 2


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
    p.add_argument("--quiet", action="store_true", help="no Ray progress tables (for CI logs)")
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


def load_data(space, base_dir: Path):
    from gantune.trainables.data.datasets import load_medmnist_npz

    path = Path(space.fixed.get("data.path", "data/breastmnist.npz"))
    if not path.is_absolute() and not path.exists():
        path = base_dir / path
    if not path.exists():
        raise UserError(f"{space.path}: 'data.path' {str(path)!r} does not exist")
    return load_medmnist_npz(path)


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
    try:
        data = load_data(space, Path(args.space).resolve().parent.parent)
    except DatasetError as exc:
        raise UserError(str(exc)) from exc
    from .tuner import RunOptions, run_search

    options = RunOptions(
        experiment=experiment, tracking_uri=tracking_uri, storage_path=args.storage_path,
        address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        seed=args.seed, verbose=0 if args.quiet else 1,
    )
    start = time.monotonic()
    rows, parent_run_id = run_search(space, data, options)
    print_summary(space, rows, parent_run_id, tracking_uri, time.monotonic() - start)
    return 0 if rows else 1


def print_summary(space, rows, parent_run_id: str, tracking_uri: str, seconds: float) -> None:
    from .tracking import format_table
    from .tuner import leaderboard_columns

    print(f"\nLeaderboard ({len(rows)} trials, {seconds:.0f} s), parent run {parent_run_id}:")
    print(format_table(rows, leaderboard_columns(space)))
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        print(f"\nOpen the MLflow UI:\n  mlflow ui --backend-store-uri {tracking_uri} --port 5000\n  then browse http://127.0.0.1:5000")
    else:
        print(f"\nMLflow UI: {tracking_uri}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gantune",
        description="Find the GAN augmentation that most improves a classifier on a small medical image dataset.",
        epilog="example: gantune search spaces/demo.yaml --smoke-test",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_search_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"gantune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
