"""Quiet by default: what Ray, MLflow and Optuna may print around gantune's own lines.

Without `--verbose` their loggers stop at WARNING (so no "Started a local Ray instance", no
MLflow table-creation lines, no "A new study created", no trial processes' "Checkpoint
successfully created"), and trial processes' output is not forwarded to the driver (it stays in
Ray's session logs; a trial's error still reaches the driver through Tune). In a log (stdout or
stderr not a terminal) Ray's forwarded lines carry no colour codes, with or without --verbose.

Some of these settings are environment variables that MLflow and Ray read when they are imported
or when Ray starts its processes, so `quiet_libraries` runs first in `gantune`'s main."""

from __future__ import annotations

import logging
import os
import sys

LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic")
"""The loggers `--verbose` opens to INFO (alembic: MLflow's database migrations)."""


def library_level(verbose: bool) -> str:
    return "INFO" if verbose else "WARNING"


def is_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def quiet_libraries(verbose: bool = False) -> None:
    """Set the libraries' log levels and colour before (and, for loggers already imported, after)
    they are imported. A level the user set in MLFLOW_LOGGING_LEVEL is kept."""
    level = library_level(verbose)
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)  # read when mlflow is imported
    if not sys.stderr.isatty():
        # Logs get the commands' own lines, not MLflow's download bars (ours turn off alike).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not is_terminal():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # "(trainable pid=…)" without ANSI colour
        # The deduplicator's "[repeated 3x across cluster]" is always green: print repeats instead.
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in LIBRARY_LOGGERS:  # loggers of libraries a test (or the API) already imported
        logging.getLogger(name).setLevel(level)
    if "optuna" in sys.modules:
        optuna_quiet(verbose)


def optuna_quiet(verbose: bool) -> None:
    """Optuna keeps its own level (set_verbosity), not only its logger's."""
    import optuna

    optuna.logging.set_verbosity(getattr(logging, library_level(verbose)))


def ray_logging_config(verbose: bool):
    """ray.init(logging_config=...): WARNING for the "ray" logger in the driver and in every trial
    process of the job (Tune's "Checkpoint successfully created" is an INFO line of the trial
    processes); None with --verbose, Ray's own (INFO, without the extra fields a LoggingConfig adds)."""
    import ray

    return None if verbose else ray.LoggingConfig(log_level=library_level(verbose))
