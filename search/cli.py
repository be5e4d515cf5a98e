"""`gantune`: search GAN augmentation for a small medical image dataset.

Resolve, print, persist, then run: every command validates its inputs before it starts Ray or
touches MLflow, and `search --dry-run` stops after printing the resolved configuration."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from gantune.api import UsageError as UserError  # bad input: printed without a traceback, exit 2

from .options import FLAGS, SearchOptions, default, field_help

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command stopped with Ctrl-C."""


def parse_override(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def add_option(p, name: str, **kwargs) -> None:
    """A SearchOptions field as a `gantune search` flag: its default and help come from the
    dataclass, so they are written once (search/options.py)."""
    value = default(name)
    text = help_text(name)
    if value is not None and value is not False:
        text += f" (default: {value})"
    if isinstance(value, bool):
        kwargs.setdefault("action", "store_true")
    p.add_argument(FLAGS[name], dest=name, default=value, help=text, **kwargs)


def help_text(name: str) -> str:
    """A SearchOptions field's docstring as flag help: argparse style (lower case, no full stop)."""
    text = field_help()[name].rstrip(".")
    return text[0].lower() + text[1:] if text[1:2].islower() else text


def resume_value(text: str) -> str:
    """--resume's value: 'auto', or the parent run id (8+ hex digits) of the search to continue."""
    if text in ("yes", "auto") or re.fullmatch(r"[0-9a-f]{8,32}", text):
        return text
    raise argparse.ArgumentTypeError(f"expected 'auto' or a parent run id (hex), got {text!r}")


def concurrency_value(text: str) -> int | str:
    """--max-concurrent: a whole number (checked with the space's other settings) or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="search space YAML file (see spaces/)")
    p.add_argument("--data", help="dataset path; overrides data.path of the space file")
    add_option(p, "experiment")
    p.add_argument("--num-samples", type=int, help="number of trials, baselines included")
    add_option(p, "storage_path")
    add_option(p, "address")
    add_option(p, "cpus_per_trial", type=float)
    add_option(p, "gpus_per_trial", type=float)
    p.add_argument("--max-concurrent", type=concurrency_value, metavar="N|auto",
                   help="trials running at once; 'auto': as many as the cluster's nodes can place (CPUs and GPUs per "
                        "trial against each node's), the natural choice on a cluster")
    add_option(p, "seed", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a value of the space, e.g. --set gan.steps=100 (repeatable)")
    p.add_argument(
        "--smoke-test", action="store_true", help="shrink every budget so the search takes a couple of minutes"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved configuration and exit without starting Ray"
    )
    add_option(p, "quiet")
    add_option(p, "verbose")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable image files (listed on the parent run) instead of stopping",
    )
    add_option(p, "resume", nargs="?", const="yes", type=resume_value, metavar="auto|PARENT_RUN_ID")
    add_option(p, "max_failures", type=int)
    add_option(p, "keep_artifacts", choices=("complete", "best", "all"))
    cache = p.add_mutually_exclusive_group()
    add_option(cache, "gan_cache", metavar="URI")
    add_option(cache, "no_gan_cache")
    add_option(p, "optuna_storage", metavar="URL")


def resolve_space(args):
    from gantune import api

    overrides = dict(parse_override(o) for o in args.overrides)
    return api.resolve_space(args.space, overrides, args.smoke_test, args.data, args.num_samples, args.max_concurrent)


def search_options(args, space) -> SearchOptions:
    """The flags as SearchOptions (gantune.api.search_options: the defaults the API has too)."""
    from gantune import api

    return api.search_options(space, **{f.name: getattr(args, f.name) for f in fields(SearchOptions)})


def space_summary(resolved: dict) -> str:
    """The few lines of a resolved space a person checks before a search starts (the whole of
    it is on the parent run as config/resolved_space.json; --dry-run / --verbose print it)."""
    search, fixed = resolved["search"], resolved["fixed"]
    domains = "; ".join(f"{k} {next(iter(d))} {next(iter(d.values()))}" for k, d in resolved["searched"].items())
    return "\n".join([
        f"search '{resolved['name']}' ({resolved['space_file']}): {search['num_samples']} trials, "
        f"{search['metric']} ({search['mode']}), {search['sampler']} + {search['scheduler']}",
        f"  data: {fixed.get('data.path')}, {fixed.get('data.folds')} folds; baselines: "
        f"{', '.join(search['baselines']) or 'none'}",
        f"  searched: {domains}",
        "  (the whole configuration: --dry-run or --verbose)",
    ])


def search_main(args) -> int:
    space = resolve_space(args)
    options = search_options(args, space)
    resolved = {**space.resolved(), "options": options.to_dict()}
    if args.dry_run or args.verbose:
        print(json.dumps(resolved, indent=2, default=str))
    else:
        print(space_summary(resolved))
    if args.dry_run:
        from gantune.trainables.data.datasets import DatasetError

        from .dataset import check_data_path

        try:  # what the real run would refuse first, without loading the images
            check_data_path(space)
        except DatasetError as exc:
            raise UserError(str(exc)) from exc
        return 0
    from gantune import api

    from .tuner import SearchFailed, SearchInterrupted

    try:
        result = api.run_search(space, options, args.skip_bad)
    except SearchFailed as exc:  # not a usage error: the search ran, and its runs are closed
        print(f"gantune: error: {exc}", file=sys.stderr)
        return 1
    except SearchInterrupted as stop:
        # The parent run id: the experiment may have other unfinished searches.
        again = shlex.join(["gantune", *args.argv, *([] if args.resume else ["--resume", stop.parent_run_id])])
        print(f"\ngantune: {stop}; Tune saved its state. Continue it with:\n  {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(space, result)
    return 0 if result.leaderboard else 1


def check_store(tracking_uri: str) -> None:
    """For a command that reads a finished search: the store exists (a local one is not created
    by looking into it) and a server answers (gantune.api.store)."""
    from gantune import api

    api.store(tracking_uri)


def print_summary(space, result) -> None:
    """A SearchResult as `gantune search` ends: the leaderboard, then where to see the runs."""
    from .leaderboard import format_table, gan_cache_line, leaderboard_columns

    rows = result.leaderboard
    print(f"\nLeaderboard ({len(rows)} trials, {result.seconds:.0f} s), parent run {result.parent_run_id}:")
    print(format_table(rows, leaderboard_columns(space)))
    print(gan_cache_line(rows))
    if result.ui_command:
        print(f"\nOpen the MLflow UI on this experiment's runs:\n  {result.ui_command}\n"
              f"  then browse {result.runs_url}")
    else:
        print(f"\nMLflow UI, this experiment's runs: {result.runs_url}")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
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
    c.add_argument(
        "--folds", type=int, help="folds the search will use (a class needs at least this many images; default 5)"
    )
    c.add_argument("--space", help="take 'preprocess' settings and data.folds from this space file")
    c.add_argument(
        "--skip-bad",
        action="store_true",
        help="judge the dataset as `search --skip-bad` would: unreadable files skipped",
    )


def data_main(args) -> int:
    return {"check": data_check_command}[args.data_command](args)


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
    folds = cfg.data.folds if args.folds is None else args.folds
    if folds < 2:  # `args.folds or ...` once turned --folds 0 into 5 silently
        raise UserError(f"--folds must be >= 2 (k of the k-fold cross-validation), got {folds}")
    return data_check_main(
        argparse.Namespace(
            path=args.path, folds=folds, skip_bad=args.skip_bad, seed=cfg.data.seed, preprocess=cfg.preprocess,
            footer=lambda report: test_power_lines(report, cfg.data.merge),
        )
    )


def test_power_lines(report, merge) -> str:
    """What the dataset's test split can resolve: the smallest paired AUC difference detectable at
    80 % power (as `gantune evaluate` prints it before refitting), binary tasks only."""
    from .stats import MDE_CORRELATION, MDE_POWER, min_detectable_auc_delta

    test = [total - pool for total, pool in zip(report.counts, report.pool_counts)]
    names = list(report.class_names)
    if merge is not None:
        test = [sum(test[c] for c in group) for group in merge]
        names = ["+".join(names[c] for c in group) for group in merge]
    if len(test) != 2 or min(test) < 1:
        return (f"Test split power: not computed ({len(test)} classes; binary tasks only, data.merge in a space "
                "file given with --space makes one)")
    at = ", ".join(f"{min_detectable_auc_delta(a, test[1], test[0]):.3f} at AUC {a:.2f}" for a in (0.8, 0.85, 0.9))
    return (f"Test split power: {test[0]} {names[0]} + {test[1]} {names[1]} images; the smallest paired AUC "
            f"difference it can show at {MDE_POWER:.0%} power (two-sided alpha 0.05, correlation {MDE_CORRELATION} "
            "between two models' AUCs): "
            f"{at}. Smaller differences need a bigger test split, not more seeds.")


@dataclass(frozen=True)
class Entry:
    """What a command's module exposes: its parser-builder, its main, its bad-input errors."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]
    """Runs the command; returns the exit code."""
    errors: tuple[type[Exception], ...] = ()
    """Printed without a traceback, exit 2."""


@dataclass(frozen=True)
class Command:
    """One `gantune` subcommand."""

    help: str
    """Its line in `gantune --help`'s command list."""
    description: str
    example: str
    load: Callable[[], Entry]
    """Imports the command's module. Called only for the command that runs (or whose --help is
    shown), so `gantune --help` imports no command module, and no command pays for another's
    imports (evaluate's torch, report's matplotlib)."""
    tracking: bool = False
    """Takes --tracking-uri (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db, resolved before main)."""
    check_tracking: bool = False
    """Reads a finished search: the store must exist (none is created) and a server answer before main runs."""


def search_entry() -> Entry:
    return Entry(add_search_arguments, search_main)


def promote_entry() -> Entry:
    from . import promote

    return Entry(promote.add_arguments, promote.promote_main, (promote.PromoteError,))


def generate_entry() -> Entry:
    from . import generate

    return Entry(generate.add_arguments, generate.generate_main, (generate.GenerateError,))


def report_entry() -> Entry:
    from . import report

    return Entry(report.add_arguments, report.report_main, (report.ReportError,))


def dashboard_entry() -> Entry:
    from . import dashboard

    return Entry(dashboard.add_arguments, dashboard.dashboard_main, (dashboard.DashboardError,))


def evaluate_entry() -> Entry:
    from . import evaluate

    return Entry(evaluate.add_arguments, evaluate.evaluate_main, (evaluate.EvaluateError,))


def data_entry() -> Entry:
    return Entry(add_data_arguments, data_main)


def cache_entry() -> Entry:
    from . import gan_cache

    return Entry(gan_cache.add_arguments, gan_cache.cache_main, (gan_cache.CacheError,))


def gc_entry() -> Entry:
    from . import gc

    return Entry(gc.add_arguments, gc.gc_main, (gc.GcError,))


def server_entry() -> Entry:
    from gantune.mlflow_server import cli

    return Entry(cli.add_server_arguments, cli.server_main)


COMMANDS: dict[str, Command] = {
    "search": Command(
        "run a search over GAN augmentation pipelines",
        "Run a Ray Tune + Optuna search defined by a space file; every trial is an MLflow run.",
        "gantune search spaces/demo.yaml --num-samples 6 --experiment demo",
        search_entry, tracking=True,
    ),
    "promote": Command(
        "register the best trial's generator as <experiment>-generator@champion",
        "Register the best trial's generator of the experiment's latest search, if it beats the real-only baseline.",
        "gantune promote --experiment demo --metric val_auc",
        promote_entry, tracking=True, check_tracking=True,
    ),
    "generate": Command(
        "write N synthetic images per class from a registered generator",
        "Write N synthetic images per class (png, npz or mha) from a registered or logged generator.",
        "gantune generate models:/demo-generator@champion --num 100 --out synthetic/ --format png",
        generate_entry, tracking=True, check_tracking=True,
    ),
    "report": Command(
        "leaderboard, plots and an HTML summary of an experiment's latest search",
        "Print the leaderboard of the experiment's latest search and log plots (optimisation history, "
        "hyperparameter importances, parallel coordinates, ratio vs metric) and report.html on its parent run.",
        "gantune report --experiment demo --top 5",
        report_entry, tracking=True, check_tracking=True,
    ),
    "dashboard": Command(
        "open the Optuna study of an experiment's latest search in optuna-dashboard",
        "Serve optuna-dashboard on the Optuna study of the experiment's latest search (running or ended): trials, "
        "per-fold intermediate values, history, importances. Listens on 127.0.0.1 unless --host says otherwise.",
        "gantune dashboard --experiment demo --port 8080",
        dashboard_entry, tracking=True, check_tracking=True,
    ),
    "evaluate": Command(
        "refit the best config and both baselines, score them once on the test split",
        "Refit the best trial's configuration, real-only and classic augmentation on the training pool "
        "and score each once on the untouched test split over paired seeds; logged as a gantune.role=evaluation run.",
        "gantune evaluate --experiment demo --split test --seeds 5",
        evaluate_entry, tracking=True, check_tracking=True,
    ),
    "data": Command(
        "inspect a dataset before searching it",
        "Inspect a dataset before searching it.",
        "gantune data check data/breastmnist.npz --folds 3",
        data_entry,
    ),
    "cache": Command(
        "list or prune the generator cache that trials share",
        "List the trained GANs the searches on a storage path share, or delete old ones / cap the size.",
        "gantune cache ls\n         gantune cache prune --older-than 30d --max-size 2G",
        cache_entry,
    ),
    "gc": Command(
        "delete the generator models of an experiment's trials outside each search's top N",
        "Delete the heavy artifacts (generator models) of the trials outside each search's top N, as promote ranks "
        "them; registered models and running searches are kept. A dry run unless --yes: it says what it deletes "
        "and the bytes freed.",
        "gantune gc --experiment demo --keep-top 3\n         gantune gc --experiment demo --keep-top 3 --yes",
        gc_entry, tracking=True, check_tracking=True,
    ),
    "server": Command(
        "start an MLflow tracking server (SQLite by default; PostgreSQL + S3 for production)",
        "Start `mlflow server` bound to 127.0.0.1 with a SQLite store and proxied artifacts by default; "
        "options for a PostgreSQL backend store, S3/MinIO artifacts and basic auth.",
        "gantune server --port 5000\n         gantune server --backend-store-uri postgresql://mlflow@db/mlflow "
        "--artifacts-destination s3://gantune/mlflow --auth",
        server_entry,
    ),
}
"""Every subcommand, in `gantune --help` order."""


def add_tracking_uri(p: argparse.ArgumentParser) -> None:
    """--tracking-uri, the one declaration every MLflow command shares."""
    p.add_argument("--tracking-uri", help=help_text("tracking_uri"))


def build_parser(load: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; only the commands in `load` (default: all) get their arguments, which
    imports their modules."""
    parser = argparse.ArgumentParser(
        prog="gantune",
        description="Find the GAN augmentation that most improves a classifier on a small medical image dataset.",
        epilog="example: gantune search spaces/demo.yaml --smoke-test",
    )
    from gantune import __version__

    parser.add_argument("--version", action="version", version=f"gantune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.help, description=command.description, epilog=f"example: {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if load is None or name in load:
            command.load().add_arguments(p)
            if command.tracking:
                add_tracking_uri(p)
    return parser


def run_command(command: Command, args) -> int:
    """Resolve the tracking URI (and check the server answers), run; the command's own errors -> exit 2."""
    entry = command.load()
    if command.tracking:
        from .tracking import default_tracking_uri

        args.tracking_uri = args.tracking_uri or default_tracking_uri()
        if command.check_tracking:
            check_store(args.tracking_uri)
    try:
        return entry.main(args)
    except entry.errors as exc:
        raise UserError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .logs import quiet_libraries

    # First: building the parser imports the command's module, and MLflow reads its level on import.
    quiet_libraries(verbose="--verbose" in argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # the command comes first
    parser = build_parser(load=(chosen,) if chosen in COMMANDS else ())
    args = parser.parse_args(argv)
    args.argv = argv  # to print a command to run again
    try:
        return run_command(COMMANDS[args.command], args)
    except UserError as exc:
        print(f"gantune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
