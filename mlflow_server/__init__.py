"""Starting an MLflow tracking server for gantune: SQLite by default, PostgreSQL + S3 for teams."""

from gantune.mlflow_server.cli import add_server_arguments, config_from_args, server_main
from gantune.mlflow_server.server import (
    AdminCredentials,
    ServerConfig,
    ServerError,
    TrackingAuthError,
    TrackingUnreachableError,
    build_command,
    build_env,
    check_tracking_reachable,
    free_port,
    load_credentials,
    resolve,
    running_server,
    server_url,
    start_server,
    stop_server,
    wait_for_health,
)

__all__ = [
    "AdminCredentials",
    "ServerConfig",
    "ServerError",
    "TrackingAuthError",
    "TrackingUnreachableError",
    "add_server_arguments",
    "build_command",
    "build_env",
    "check_tracking_reachable",
    "free_port",
    "config_from_args",
    "load_credentials",
    "resolve",
    "running_server",
    "server_main",
    "server_url",
    "start_server",
    "stop_server",
    "wait_for_health",
]
