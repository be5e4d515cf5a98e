"""Checks of command-line values that need only the standard library, so every command refuses a
bad value in about a second, before torch, MLflow, MONAI or Ray are imported (importing those
takes 5 to 9 s on a loaded machine). Each check takes the value as typed (or as argparse already
converted it) and returns None or raises UsageError with a message that names the flag.

search/cli.py runs them twice: on the raw argv before the command's module is imported, and on
the parsed arguments (which also catches abbreviated flags such as `--track`). gantune.api runs
the tracking-URI check for the Python API's callers too."""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

from gantune.api import UsageError


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest of `options` to `word` (difflib), or ""."""
    lowered = {option.lower(): option for option in options}  # PNG -> png
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.5)  # s4 -> s3
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


# --- numbers ----------------------------------------------------------------------------------


def whole_number(flag: str, value: object, low: int, high: int | None = None, meaning: str = "") -> int:
    """`value` as an int in [low, high], or UsageError naming `flag` (a bool or 2.5 is no whole number)."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
        raise UsageError(f"{flag} expects a whole number{meaning}, got {value!r}")
    number = int(text)
    if number < low or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise UsageError(f"{flag} must be {bounds}{meaning}, got {number}")
    return number


def at_least(low: int, meaning: str = "") -> Callable[[str, object], None]:
    """A check: a whole number >= low."""

    def check(flag: str, value: object) -> None:
        whole_number(flag, value, low, meaning=meaning)
    return check


def port(flag: str, value: object) -> None:
    whole_number(flag, value, 1, 65535, " (a TCP port)")


def seed(flag: str, value: object) -> None:
    # NumPy and torch take seeds in [0, 2**32): a negative one is a traceback deep in a trial.
    whole_number(flag, value, 0, 2**32 - 1, " (a random seed)")


def one_of(choices: Iterable[str]) -> Callable[[str, object], None]:
    """A check: one of `choices`, with a suggestion for a near miss."""
    options = tuple(choices)

    def check(flag: str, value: object) -> None:
        if value not in options:
            raise UsageError(f"{flag} must be one of {', '.join(options)}, got {value!r}{did_you_mean(value, options)}")
    return check


# --- names MLflow would refuse (mlflow/utils/validation.py, 3.17) ------------------------------------

MAX_EXPERIMENT_NAME = 500
MAX_ALIAS = 255
ALIAS_CHARACTERS = re.compile(r"^[\w\-]+$")


def control_characters(name: str) -> str | None:
    bad = sorted({repr(c) for c in name if ord(c) < 32 or ord(c) == 127})
    return f"contains control character(s) {', '.join(bad)}" if bad else None


def experiment(flag: str, value: object) -> None:
    """An experiment name MLflow accepts: not empty, at most 500 characters (no control characters:
    they cannot be typed back to find it)."""
    name = str(value)
    problem = ("is empty" if not name.strip() else
               f"is {len(name)} characters long; MLflow allows {MAX_EXPERIMENT_NAME}" if len(name) > MAX_EXPERIMENT_NAME
               else control_characters(name))
    if problem:
        raise UsageError(f"{flag} {name!r} {problem}")


def model_name(flag: str, value: object) -> None:
    """A registered model name MLflow accepts: not empty, no '/' or ':', a normalised relative path."""
    name = str(value)
    norm = posixpath.normpath(name)
    problem = ("is empty" if not name.strip() else
               "contains '/' or ':', which MLflow refuses in a model name" if "/" in name or ":" in name else
               "is not a plain name ('.', '..' or a path MLflow would normalise)"
               if norm != name or norm == "." or norm.startswith("..") else control_characters(name))
    if problem:
        raise UsageError(f"{flag} {name!r} {problem}")


def alias(flag: str, value: object) -> None:
    """A model alias MLflow accepts: letters, digits, '_' and '-'; not 'latest' nor a version (v3)."""
    name = str(value)
    problem = ("is empty" if not name else
               "may hold only letters, digits, '_' and '-'" if not ALIAS_CHARACTERS.match(name) else
               f"is longer than MLflow's {MAX_ALIAS} characters" if len(name) > MAX_ALIAS else
               "is reserved by MLflow (it always means the newest version)" if name.lower() == "latest" else
               "is reserved by MLflow (v<N> means version N)" if re.fullmatch(r"[vV]\d+", name) else None)
    if problem:
        raise UsageError(f"{flag} {name!r} {problem}")


def trial_id(flag: str, value: object) -> None:
    """--trial: 'best-gan' or a gantune trial id (hex, as the leaderboard prints it)."""
    text = str(value)
    if text != "best-gan" and not re.fullmatch(r"[0-9a-f]{4,32}", text):
        raise UsageError(f"{flag} expects 'best-gan' or a trial id as the leaderboard prints it (e.g. 0e7a80bc), "
                         f"got {text!r}{did_you_mean(text, ['best-gan'])}")


# --- tracking URIs ----------------------------------------------------------------------------

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
OTHER_SCHEMES = ("databricks", "databricks-uc", "uc")
"""MLflow's own tracking-store schemes (mlflow/tracking/_tracking_service/utils.py), besides the
file store, which MLflow 3.17 refuses unless MLFLOW_ALLOW_FILE_STORE is set."""
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


def file_store_allowed() -> bool:
    return os.environ.get(FILE_STORE_ENV, "").strip().lower() in ("true", "1")


def tracking_uri(flag: str, value: object) -> None:
    """A tracking URI MLflow can open: sqlite:///FILE, postgresql://..., http(s)://HOST[:PORT]; a
    plain path or file: URI only where MLflow's file store is allowed."""
    uri = str(value).strip()
    scheme = (urlsplit(uri).scheme if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) else "").lower().split("+")[0]
    if scheme in ("", "file") or len(scheme) == 1:  # a plain path (C: on Windows), or file:
        if not file_store_allowed():
            raise UsageError(f"{flag} {uri!r} is a path, not a tracking URI (MLflow 3.17 refuses its file store): "
                             f"for a SQLite store write sqlite:///{sqlite_suggestion(uri)}; for a server "
                             "http://HOST:PORT (see `gantune server`)")
        return
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise UsageError(f"{flag} {uri!r}: a SQLite store is sqlite:/// followed by the file's path "
                             "(sqlite:///mlflow.db in this folder, sqlite:////abs/path/mlflow.db)")
        return
    if scheme in SERVER_SCHEMES:
        server_address(flag, uri)
        return
    if scheme in DATABASE_SCHEMES + OTHER_SCHEMES:
        return
    known = DATABASE_SCHEMES + SERVER_SCHEMES + OTHER_SCHEMES
    raise UsageError(f"{flag} {uri!r}: MLflow has no tracking store for scheme '{scheme}:'"
                     f"{did_you_mean(scheme, known)} (use sqlite:///FILE, http://HOST:PORT or postgresql://...)")


def sqlite_suggestion(path: str) -> str:
    """The sqlite:/// tail for a path someone wrote as a tracking URI ('mlflow.db', '/abs/x.db')."""
    path = path.removeprefix("file://").removeprefix("file:")
    return path if path.endswith(".db") else str(Path(path) / "mlflow.db")


def server_address(flag: str, uri: str) -> None:
    """http(s)://HOST[:PORT]: a host and, when given, a port in range."""
    parts = urlsplit(uri)
    try:
        number = parts.port
    except ValueError:
        number = -1
    if not parts.hostname or number == -1 or number == 0:
        raise UsageError(f"{flag} {uri!r} is not a server address: expected http(s)://HOST[:PORT] with a port in "
                         "1..65535 (e.g. http://127.0.0.1:5000)")


# --- folders and storage ------------------------------------------------------------------------

STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "file", "memory")
"""What pyarrow/fsspec (and so Ray Tune's storage_path) open; 'memory' is for tests."""


def nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def writable_folder(flag: str, value: object) -> None:
    """A folder that exists or can be created, and can be written."""
    path = Path(os.path.expanduser(str(value)))
    if not str(value).strip():
        raise UsageError(f"{flag} is empty")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {value} is a file, not a folder")
    base = nearest_existing(path.absolute())
    if not base.is_dir():
        raise UsageError(f"{flag} {value}: {base} is a file, so no folder can be made under it")
    try:  # a real probe: access() says yes to root even where nothing can be made (/proc, a read-only mount)
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"{flag} {value}: cannot write in {base} ({reason}); pick another folder") from None


def storage(flag: str, value: object, writable: bool = True) -> None:
    """A local folder that can be written (`writable`; else one that is not a file), or a URL of a
    storage pyarrow/fsspec opens (s3://BUCKET/...)."""
    text = str(value).strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):(/*)(.*)$", text)
    if not match:
        local_folder = writable_folder if writable else not_a_file
        local_folder(flag, text)
        return
    scheme, slashes, rest = match.group(1).lower(), match.group(2), match.group(3)
    if scheme not in STORAGE_SCHEMES:
        raise UsageError(f"{flag} {text!r}: no storage for scheme '{scheme}:'{did_you_mean(scheme, STORAGE_SCHEMES)} "
                         f"(use a folder, or one of {', '.join(s + '://' for s in STORAGE_SCHEMES[:4])}...)")
    if slashes != "//" and scheme != "file":
        raise UsageError(f"{flag} {text!r} is not a URL: write {scheme}://{rest or 'BUCKET/PREFIX'}")
    if scheme == "file":
        (writable_folder if writable else not_a_file)(flag, "/" + rest.lstrip("/"))
    elif not rest.split("/")[0]:
        raise UsageError(f"{flag} {text!r} names no bucket or host: write {scheme}://BUCKET/PREFIX")


def storage_to_read(flag: str, value: object) -> None:
    """storage() for a command that may only read there (`cache ls`): a folder need not be writable."""
    storage(flag, value, writable=False)


def not_a_file(flag: str, value: object) -> None:
    """A folder, or a path where one could be: neither it nor a parent is a file."""
    path = Path(os.path.expanduser(str(value))).absolute()
    base = nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{flag} {value}: {base} is a file, not a folder")


def existing_path(flag: str, value: object) -> None:
    if not Path(os.path.expanduser(str(value))).exists():
        raise UsageError(f"{flag} {value}: no such file or folder")


def database(flag: str, value: object) -> None:
    """An SQLAlchemy database URL (Optuna's study storage, an MLflow server's backend store):
    sqlite:///FILE, postgresql://USER@HOST/DB, mysql://..."""
    text = str(value).strip()
    scheme = text.split("://", 1)[0].split("+")[0].lower() if "://" in text else ""
    if scheme not in DATABASE_SCHEMES:
        raise UsageError(f"{flag} {text!r} is not a database URL: use sqlite:///FILE.db or "
                         "postgresql://USER@HOST/DB" + (did_you_mean(scheme, DATABASE_SCHEMES) if scheme else ""))
    if scheme == "sqlite" and (not text.startswith("sqlite:///") or text == "sqlite:///"):
        raise UsageError(f"{flag} {text!r}: a SQLite database is sqlite:/// followed by the file's path")


ARTIFACT_SCHEMES = ("s3", "gs", "wasbs", "abfss", "hdfs", "ftp", "sftp", "file")
"""Artifact repositories `mlflow server --artifacts-destination` takes (besides a folder)."""


def artifacts_destination(flag: str, value: object) -> None:
    text = str(value).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        writable_folder(flag, text)
    elif scheme not in ARTIFACT_SCHEMES:
        raise UsageError(f"{flag} {text!r}: MLflow stores no artifacts at scheme '{scheme}:'"
                         f"{did_you_mean(scheme, ARTIFACT_SCHEMES)} (use a folder or s3://BUCKET/PREFIX)")


# --- hosts and addresses --------------------------------------------------------------------------


def tracking_server_answers(label: str, uri: str, timeout: float = 5.0) -> None:
    """An http(s) tracking URI's /health answers within `timeout` s (a name that does not resolve
    is refused in 3 s, not after DNS's own timeouts). The login is checked later, with MLflow."""
    if urlsplit(uri).scheme.lower() not in SERVER_SCHEMES:
        return
    import urllib.error

    from gantune.mlflow_server.server import _get_health  # stdlib only

    resolvable_host(label, urlsplit(uri).hostname or "")
    try:
        _get_health(uri, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise UsageError(f"{label}: MLflow tracking server at {uri} is not reachable: {reason}; start one with "
                         "`gantune server` or use a sqlite:/// URI") from None


def resolvable_host(flag: str, host: str, timeout: float = 3.0) -> None:
    """The host name resolves within `timeout` s (a dead DNS must not hang a command)."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(socket.getaddrinfo, host, None)
    try:
        future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise UsageError(f"{flag} {host}: the name did not resolve within {timeout:.0f} s") from None
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"{flag} {host}: cannot resolve it ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        pool.shutdown(wait=False)


def host(flag: str, value: object) -> None:
    """An interface to listen on: a name that resolves, or an IP address."""
    text = str(value).strip()
    if not text or any(c in text for c in "/ :") and not re.fullmatch(r"[0-9A-Fa-f:]+", text):
        raise UsageError(f"{flag} {value!r} is not a host name or IP address (e.g. 127.0.0.1 or 0.0.0.0)")
    resolvable_host(flag, text)


def reachable(flag: str, host_name: str, port_number: int, timeout: float = 3.0) -> None:
    """Something listens on host:port (a TCP connect within `timeout` s)."""
    try:
        with socket.create_connection((host_name, port_number), timeout=timeout):
            return
    except TimeoutError:
        reason = f"no answer within {timeout:.0f} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise UsageError(f"{flag} {host_name}:{port_number}: nothing answers there ({reason}); is the Ray head running "
                     "and the address right?")


def ray_address(flag: str, value: object) -> None:
    """'auto', 'local', HOST:PORT (a head's GCS) or ray://HOST:PORT (Ray Client): well formed, and a
    given host and port answer, so a wrong address is an error in seconds rather than Ray's long wait."""
    text = str(value).strip()
    if text in ("auto", "local"):
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/:]+|[0-9A-Fa-f:]+)\]?:(\d+)/?", text)
    if not match:
        raise UsageError(f"{flag} {text!r}: expected 'auto', HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT "
                         "(Ray Client, port 10001)")
    host_name, number = match.group(1), whole_number(flag, match.group(2), 1, 65535, " (the port of the Ray head)")
    resolvable_host(flag, host_name)
    reachable(flag, host_name, number)


# --- where a command runs -------------------------------------------------------------------------

DEFAULT_TRACKING_DB = "mlflow.db"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri(workdir: str | os.PathLike = ".") -> str:
    """MLFLOW_TRACKING_URI, else a SQLite file in the working directory (absolute: Ray workers
    run in other directories)."""
    if os.environ.get(TRACKING_ENV):
        return os.environ[TRACKING_ENV]
    return f"sqlite:///{Path(workdir).resolve() / DEFAULT_TRACKING_DB}"


RAY_WORKING_DIR_PARTS = ("runtime_resources", "working_dir_files")
"""Ray unpacks a job's --working-dir to <session>/runtime_resources/working_dir_files/_ray_pkg_<hash>
and runs the entrypoint there (ray/_private/runtime_env/working_dir.py)."""


def ray_job_copy(cwd: Path | None = None) -> Path | None:
    """The root of Ray's temporary copy of a job's working directory when gantune runs in one, else None."""
    parts = (cwd or Path.cwd()).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i:i + 2] == RAY_WORKING_DIR_PARTS:
            return Path(*parts[:i + 3])
    return None


def inside_folder(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def job_copy_error(tracking: str | None, storage_path: str | None, cwd: Path | None = None) -> str | None:
    """Why a command in a Ray job's working-dir copy would lose what it writes, or None: a local
    tracking store or storage path inside that copy is deleted with the Ray session, never seen by
    the user's `mlflow ui`, and a restarted head runs the job in a new copy (so --resume finds nothing)."""
    copy = ray_job_copy(cwd)
    if copy is None:
        return None
    lost = []
    if tracking:
        local = tracking.removeprefix("sqlite:///") if tracking.startswith("sqlite:///") else None
        if local is not None and inside_folder(Path(local), copy):
            lost.append(f"the MLflow store {tracking} (pass --tracking-uri http://MLFLOW-SERVER:5000, or "
                        "sqlite:////ABSOLUTE/PATH/mlflow.db on a shared disk)")
    if storage_path and "://" not in storage_path and inside_folder(Path(storage_path), copy):
        lost.append(f"--storage-path {storage_path} (pass --storage-path s3://BUCKET/PREFIX or an absolute folder "
                    "every node shares)")
    if not lost:
        return None
    return (f"gantune runs inside Ray's temporary copy of the job's working directory ({copy}), so "
            f"{' and '.join(lost)} would be written there: your `mlflow ui` would never see it, it is deleted with "
            "the Ray session, and `--resume auto` after a head restart would not find it")


# --- the table cli.py applies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """One flag of a command and the check of its value."""

    flag: str
    """As typed, e.g. '--tracking-uri'."""
    check: Callable[[str, object], None]
    """(flag, value) -> None, or UsageError naming the flag."""
    required: bool = False
    """argparse requires it too; checked early so its absence is reported before the imports."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def apply(guards: Iterable[Guard], values: dict[str, object]) -> None:
    """Run each guard on its value in `values` (dest -> value); None (not given) passes."""
    for guard in guards:
        value = values.get(guard.dest)
        if value is not None:
            guard.check(guard.flag, value)
