"""`SearchOptions`: where and how a search runs, everything that is not the space itself. The one
place of the run options' defaults and help: `gantune search`'s flags are built from it, the
resolved options are printed with the resolved space, logged as `options.*` params on the
search's parent run, kept in the search record, and compared on `--resume`."""

from __future__ import annotations

import ast
import functools
import inspect
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class SearchOptions:
    experiment: str
    """MLflow experiment name (default: the space's name)."""
    tracking_uri: str
    """MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)."""
    storage_path: str = "ray_results"
    """Ray Tune storage: a local/shared path or s3:// URI."""
    address: str | None = None
    """Join an existing Ray cluster (e.g. 'auto' or 'ray://head:10001'); unset: the cluster of the `ray job submit`
    that runs gantune, else a fresh local one."""
    cpus_per_trial: float = 1.0
    """CPUs reserved per trial."""
    gpus_per_trial: float = 0.0
    """GPUs per trial; fractions pack trials on a GPU."""
    seed: int = 0
    """Seed of the sampler and of every trial's training."""
    max_failures: int | None = None
    """Retries of a trial that raised or lost its node (diverged / out-of-memory trials are never retried); default 1,
    or 3 on a cluster (--address or ray job submit), where an abrupt node loss (spot kill, pod eviction) counts as one
    failure of each trial on it and a preemption Ray was told of (an autoscaler drain) does not."""
    optuna_storage: str | None = None
    """Keep the Optuna study in this database (e.g. postgresql://user@host/optuna); default: optuna.db beside a SQLite
    MLflow store, else in the storage path (in memory when that is remote, e.g. s3://)."""
    gan_cache: str | None = None
    """Generator cache shared by trials, resumes and later searches (default: STORAGE_PATH/gan_cache)."""
    no_gan_cache: bool = False
    """Train every GAN, reuse none."""
    resume: str | None = None
    """Continue the experiment's killed or stopped search (give the same space, --set values, --storage-path,
    --experiment, --seed and resources as its first run), or the one whose parent run id is given when several are
    unfinished; `--resume auto`: continue the newest unfinished one with this space and options that Tune can
    restore, else start a new search (an entrypoint a RayJob retry or a re-created head can simply run again)."""
    keep_artifacts: str = "complete"
    """Which trials keep their generator model (the heavy artifact): 'complete' (logged once, at a trial's last fold;
    a trial stopped early keeps none), 'best' (as complete, then only the best trial's is kept when the search ends)
    or 'all' (logged at every fold, so stopped trials keep their last one). `gantune gc` cleans up afterwards."""
    quiet: bool = False
    """No live progress view, one line per finished trial (for CI logs)."""
    verbose: bool = False
    """Also print Ray's, MLflow's and Optuna's INFO logs, the trial processes' output and the whole resolved
    configuration as JSON (as --dry-run does)."""

    def __post_init__(self) -> None:
        if self.max_failures is None:
            # On a cluster nodes come and go, and each abrupt loss is a failure of every trial on the
            # node; on a local cluster a failure is the code's, and retrying it once is enough.
            object.__setattr__(self, "max_failures", CLUSTER_MAX_FAILURES if self.address else 1)
        if self.optuna_storage is None:  # persisted, so `gantune dashboard` can open it
            object.__setattr__(self, "optuna_storage", default_optuna_storage(self.tracking_uri, self.storage_path))

    @property
    def tune_verbosity(self) -> int:
        """Tune's verbosity: 0 for --quiet, else 1 (the live view; --verbose adds library logs, not Tune's)."""
        return 0 if self.quiet else 1

    def to_dict(self) -> dict:
        """The options as printed, logged and kept in the search record: URLs without passwords."""
        return {k: redact(v) if isinstance(v, str) else v for k, v in asdict(self).items()}


STUDY_DB = "optuna.db"


def default_optuna_storage(tracking_uri: str, storage_path: str) -> str | None:
    """The study's SQLite database: beside a SQLite MLflow store, else in a local storage path;
    None (the study in memory) for a remote storage path, where SQLite cannot live."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    elif "://" not in storage_path or storage_path.startswith("file://"):
        folder = Path(storage_path.removeprefix("file://")).resolve()
    else:
        return None
    return f"sqlite:///{folder / STUDY_DB}"


def redact(value: str) -> str:
    """A URL with its password replaced by ***; anything else unchanged."""
    parts = urlsplit(value)
    if "://" not in value or not parts.password:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


CLUSTER_MAX_FAILURES = 3
"""--max-failures when the search joins a cluster and the flag is not given."""

RESUME_KEYS = ("seed", "cpus_per_trial", "gpus_per_trial", "max_failures", "optuna_storage")
"""Options a `--resume` must repeat: another seed would mix seeds within one search; Tune
restores the first run's resources, retries and study storage and would ignore new ones."""

FLAGS = {name: "--" + name.replace("_", "-") for name in (f.name for f in fields(SearchOptions))}
"""Field -> its `gantune search` flag."""


def default(name: str):
    """A field's default (None for a field without one, resolved by `gantune search`)."""
    value = next(f.default for f in fields(SearchOptions) if f.name == name)
    return None if value is MISSING else value


@functools.cache
def field_help() -> dict[str, str]:
    """Field -> its docstring, read from this module's source: the flags' help is the field docs."""
    tree = ast.parse(inspect.getsource(SearchOptions))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
