"""The cluster preflight of `gantune search --address ...` (and of a `ray job submit` entrypoint):
before any trial starts, prove that every node can reach the tracking server and the storage
path, or exit 2 naming what failed and what to do instead.

Two layers:
- static: when the cluster has nodes on other machines than the driver, a tracking URI or storage
  path that only means something on this machine (sqlite:, file:, a plain path, http on
  loopback) is refused outright; a one-machine cluster keeps the local defaults;
- on the nodes: one tiny Ray task pinned to each alive node makes an authenticated MLflow API call
  with that node's own credentials (MLFLOW_TRACKING_USERNAME/PASSWORD in its environment) and
  reads a probe the driver wrote under the storage path, then writes its own, which the driver
  reads back: a local folder that is not shared, or a bucket a node has no key for, fails here.

Nodes an autoscaler has not started yet cannot be probed; they share the image and the
environment of the nodes that can."""

from __future__ import annotations

import ipaddress
import posixpath
import secrets
import socket
from urllib.parse import urlsplit

PROBE_DIR = ".gantune-preflight"
"""Folder under the storage path the probes are written to (removed afterwards)."""
NODE_TIMEOUT_S = 180.0
"""How long the driver waits for every node's probe task (a busy node may queue it)."""
LOCAL_SCHEMES = ("sqlite", "file", "")


class PreflightError(RuntimeError):
    """A node cannot reach the tracking server or the storage path; the message says which and
    what to use instead."""


# --- what only this machine can reach ---------------------------------------------------------


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_only_problems(tracking_uri: str, storage_path: str) -> list[str]:
    """Why `tracking_uri` / `storage_path` cannot be reached from another machine ([] if they can
    be, as far as their text tells; a local folder may still be a shared mount, which the node
    probes decide)."""
    problems = []
    parts = urlsplit(tracking_uri)
    if parts.scheme in LOCAL_SCHEMES:
        problems.append(
            f"--tracking-uri {tracking_uri} is a store on this machine: trials on other nodes would each log to "
            "their own empty copy. Run a tracking server every node reaches (`gantune server --host 0.0.0.0 --auth`, "
            "or deploy/compose.yaml) and pass --tracking-uri http://<its host name>:5000"
        )
    elif parts.scheme in ("http", "https") and is_loopback_host(parts.hostname):
        problems.append(
            f"--tracking-uri {tracking_uri} names the loopback interface, which on another node is that node itself: "
            "pass the server's host name or address as the nodes resolve it "
            "(and list it in the server's --allowed-hosts)"
        )
    # A local storage folder is not refused here: it may be a mount every node shares (NFS, EFS);
    # the node probes find out.
    return problems


# --- the probes --------------------------------------------------------------------------------


def _filesystem(storage_uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(storage_uri)


def write_probe(storage_uri: str, token: str, name: str, text: str) -> None:
    fs, base = _filesystem(storage_uri)
    folder = posixpath.join(base, PROBE_DIR, token)
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(posixpath.join(folder, name)) as f:
        f.write(text.encode())


def read_probe(storage_uri: str, token: str, name: str) -> str | None:
    import pyarrow.fs

    fs, base = _filesystem(storage_uri)
    path = posixpath.join(base, PROBE_DIR, token, name)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def remove_probes(storage_uri: str, token: str) -> None:
    fs, base = _filesystem(storage_uri)
    try:
        fs.delete_dir(posixpath.join(base, PROBE_DIR, token))
    except OSError:  # best effort: a leftover probe folder is a few bytes
        pass


def check_node(tracking_uri: str, storage_uri: str, token: str, node_id: str) -> list[str]:
    """What one node finds wrong (run on that node): the tracking server with this process's
    credentials, then the driver's probe under the storage path, then a probe of its own."""
    from gantune.mlflow_server import TrackingUnreachableError, check_tracking_reachable

    problems = []
    try:
        check_tracking_reachable(tracking_uri)
    except TrackingUnreachableError as exc:
        problems.append(str(exc))
    try:
        seen = read_probe(storage_uri, token, "driver")
        if seen is None:
            problems.append(
                f"--storage-path {storage_uri}: the driver's probe file is not there, so this node sees another "
                "folder (not a shared filesystem): use an s3:// URI (e.g. MinIO with AWS_ENDPOINT_URL) or a path "
                "mounted on every node"
            )
        write_probe(storage_uri, token, node_id, "ok")
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... for a missing bucket or key
        problems.append(f"--storage-path {storage_uri}: cannot write there ({type(exc).__name__}: {exc})")
    return problems


def node_label(node: dict) -> str:
    return f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def driver_host(address: str | None) -> str | None:
    """The address of the driver's own node (None for Ray Client, whose driver is not on one)."""
    import ray

    if address and address.startswith("ray://"):
        return None  # this process is outside the cluster: every node is another machine
    return ray.util.get_node_ip_address()


def other_machines(nodes: list[dict], own_host: str | None) -> list[dict]:
    """Nodes on other machines than the driver's: several Ray nodes started on one machine (the
    loopback test cluster) share its files and its loopback."""
    if own_host is None:
        return list(nodes)
    own = {own_host, socket.gethostname()}
    return [n for n in nodes if n["NodeManagerAddress"] not in own and n.get("NodeManagerHostname") not in own]


def probe_nodes(nodes: list[dict], tracking_uri: str, storage_uri: str) -> list[str]:
    """Run `check_node` once on every node; returns "node ...: problem" lines."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    problems = []
    try:
        write_probe(storage_uri, token, "driver", "ok")
    except Exception as exc:
        return [f"--storage-path {storage_uri}: the driver cannot write there ({type(exc).__name__}: {exc})"]
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(check_node)
        pending = {
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                tracking_uri, storage_uri, token, node["NodeID"]
            ): node
            for node in nodes
        }
        ready, not_ready = ray.wait(list(pending), num_returns=len(pending), timeout=NODE_TIMEOUT_S)
        for ref in ready:
            node = pending[ref]
            try:
                found = ray.get(ref)
            except Exception as exc:  # the task itself could not run there (import error, dead node)
                found = [f"the probe task failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
            if not found and read_probe(storage_uri, token, node["NodeID"]) is None:
                found = [
                    f"--storage-path {storage_uri}: the node's probe file is not visible to the driver "
                    "(not a shared filesystem)"
                ]
            problems += [f"{node_label(node)}: {p}" for p in found]
        for ref in not_ready:
            ray.cancel(ref, force=True)
            problems.append(f"{node_label(pending[ref])}: its probe task did not finish within {NODE_TIMEOUT_S:.0f} s")
    finally:
        remove_probes(storage_uri, token)
    return problems


def preflight(address: str | None, tracking_uri: str, storage_uri: str) -> None:
    """Raise PreflightError unless every node of the joined cluster reaches `tracking_uri` and
    `storage_uri`. A search on a fresh local cluster (no address) needs no preflight."""
    if not address:
        return
    nodes = alive_nodes()
    others = other_machines(nodes, driver_host(address))
    problems = local_only_problems(tracking_uri, storage_uri) if others else []
    if not problems:  # the static refusal already says what to change; probing would only repeat it
        problems = probe_nodes(nodes, tracking_uri, storage_uri)
    if problems:
        where = f"{len(nodes)} node(s), {len(others)} on other machines than this driver"
        raise PreflightError(
            f"the cluster at --address {address} ({where}) cannot run this search; nothing was started:\n  - "
            + "\n  - ".join(problems)
        )
