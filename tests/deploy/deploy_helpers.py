"""Reading deploy/: the Kubernetes objects of deploy/k8s and deploy/kuberay, their pod specs and
containers, the compose file after `${VAR}` interpolation, and the Host header a client sends."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE_DIRS = ("k8s", "kuberay")


@dataclass(frozen=True)
class KubeObject:
    path: str
    """The file under deploy/ that holds it."""
    doc: dict

    @property
    def name(self) -> str:
        return f"{self.path}:{self.doc['kind']}/{self.doc['metadata']['name']}"


def kube_objects() -> list[KubeObject]:
    """Every document of every YAML file in deploy/k8s and deploy/kuberay."""
    found = []
    for sub in KUBE_DIRS:
        for path in sorted((DEPLOY / sub).glob("*.yaml")):
            rel = str(path.relative_to(DEPLOY))
            found += [KubeObject(rel, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def find(kind: str, name: str) -> KubeObject:
    (obj,) = [o for o in kube_objects() if o.doc["kind"] == kind and o.doc["metadata"]["name"] == name]
    return obj


def pod_specs(obj: KubeObject) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template in a workload, RayCluster or RayJob."""
    spec, kind = obj.doc.get("spec", {}), obj.doc["kind"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield obj.name, spec["template"]["spec"]
    cluster = spec if kind == "RayCluster" else spec.get("rayClusterSpec") if kind == "RayJob" else None
    if cluster:
        yield f"{obj.name} head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{obj.name} {group['groupName']}", group["template"]["spec"]


def containers(obj: KubeObject) -> Iterator[tuple[str, dict]]:
    for where, pod in pod_specs(obj):
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            yield f"{where} container {c['name']}", c


def all_containers() -> list[tuple[str, dict]]:
    return [item for obj in kube_objects() for item in containers(obj)]


def is_ray_object(obj: KubeObject) -> bool:
    return obj.doc["apiVersion"].startswith("ray.io/")


def env_values(container: dict) -> dict[str, str]:
    """The container's plain `value:` variables (not those from Secrets)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def secret_refs(container: dict) -> set[tuple[str, str | None]]:
    """(Secret name, key) the container reads; key None for a whole Secret via envFrom."""
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    refs |= {(s["secretRef"]["name"], None) for s in container.get("envFrom", []) if "secretRef" in s}
    return refs


def host_header(uri: str) -> str:
    """The Host header an HTTP client sends for `uri` (host, plus the port unless it is the default)."""
    parts = urllib.parse.urlsplit(uri)
    default = {"http": 80, "https": 443}[parts.scheme]
    return parts.hostname if parts.port in (None, default) else f"{parts.hostname}:{parts.port}"


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --- compose ---

COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (`$$` stays a literal `$`)."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        assert op != "?", f"compose.yaml: {name} is required ({arg}) and not set"
        return arg or ""

    return COMPOSE_VAR.sub(sub, text)


def compose_with_example_env() -> dict:
    """deploy/compose.yaml as `docker compose --env-file deploy/stack.env.example` reads it."""
    env = read_env_file(DEPLOY / "stack.env.example")
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), env))
