"""`gantune server`: the argparse glue around `server.py`, mounted by search/cli.py."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from gantune.mlflow_server.server import (
    PASSWORD_ENV,
    USER_ENV,
    ServerConfig,
    ServerError,
    build_command,
    exposure_warning,
    load_credentials,
    redact,
    resolve,
    server_url,
    start_server,
    stop_server,
    wait_for_health,
)

_D = ServerConfig()


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The `gantune server` flags; the storage and network ones keep `mlflow server`'s names."""
    parser.add_argument("--host", default=_D.host, help=f"interface to bind (default {_D.host})")
    parser.add_argument("--port", type=int, default=_D.port, help=f"port to listen on (default {_D.port})")
    parser.add_argument("--workers", type=int, default=_D.workers, help=f"server workers (default {_D.workers})")
    parser.add_argument(
        "--backend-store-uri",
        help="sqlite:///path.db or postgresql://user@host:5432/db (default: sqlite mlflow.db in --workdir)",
    )
    parser.add_argument(
        "--artifacts-destination",
        help="local directory or s3://bucket/prefix for proxied artifacts (default: mlartifacts/ in --workdir)",
    )
    parser.add_argument("--s3-endpoint-url", help="S3-compatible endpoint such as MinIO, e.g. http://minio:9000")
    parser.add_argument("--allowed-hosts", help="comma-separated Host headers to accept (mlflow --allowed-hosts)")
    parser.add_argument(
        "--auth", action="store_true", help=f"enable MLflow basic auth; admin from {USER_ENV}/{PASSWORD_ENV}"
    )
    parser.add_argument(
        "--auth-credentials-file", type=Path, help=f"file with {USER_ENV}=... and {PASSWORD_ENV}=... lines"
    )
    parser.add_argument(
        "--auth-cache-ttl", type=int, default=_D.auth_cache_ttl_seconds,
        help=f"seconds a verified password stays trusted per worker (default {_D.auth_cache_ttl_seconds}; 0 = off)",
    )  # fmt: skip
    parser.add_argument("--auth-database-uri", help="users/permissions database (default: sqlite basic_auth.db)")
    parser.add_argument("--workdir", type=Path, default=_D.workdir, help="where the default stores live (default .)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved command and exit")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """A resolved ServerConfig from parsed `gantune server` arguments."""
    return resolve(
        ServerConfig(
            host=args.host,
            port=args.port,
            workers=args.workers,
            backend_store_uri=args.backend_store_uri,
            artifacts_destination=args.artifacts_destination,
            s3_endpoint_url=args.s3_endpoint_url,
            allowed_hosts=args.allowed_hosts,
            auth=args.auth,
            auth_credentials_file=args.auth_credentials_file,
            auth_database_uri=args.auth_database_uri,
            auth_cache_ttl_seconds=args.auth_cache_ttl,
            workdir=args.workdir,
        )
    )


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def server_main(args: argparse.Namespace) -> int:
    """Resolve, print, start `mlflow server`, wait until it is healthy, then serve until stopped."""
    try:
        cfg = config_from_args(args)
        if cfg.auth:
            load_credentials(cfg)  # fail before anything starts, --dry-run included
    except ServerError as e:
        print(f"gantune server: error: {e}", file=sys.stderr)
        return 2
    print("gantune server:", " ".join(map(redact, build_command(cfg))), flush=True)
    if warning := exposure_warning(cfg):
        print(f"gantune server: warning: {warning}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    url = server_url(cfg)
    # Stopping the container or the RayJob sends SIGTERM; take the same path as Ctrl-C so the
    # mlflow process group never outlives us.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        proc = start_server(cfg)  # refuses a taken port before mlflow starts
    except ServerError as e:
        print(f"gantune server: error: {e}", file=sys.stderr)
        return 2
    try:
        wait_for_health(url, proc=proc)
        print(f"gantune server: ready; use --tracking-uri {url} (or MLFLOW_TRACKING_URI={url})", flush=True)
        return proc.wait()
    except ServerError as e:
        print(f"gantune server: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)
