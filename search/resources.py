"""Refuse, before anything starts, a search whose trials no node of the Ray cluster can ever run.

Ray only warns about an infeasible trial ("Ignore this message if the cluster is autoscaling"),
every 60 s, forever; `--gpus-per-trial 5` on a CPU machine would hang the search. A trial fits
when one node (a live one, or a node type the autoscaler may start) has its CPUs and GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import yaml

AUTOSCALING_ENV = "GANTUNE_WAIT_FOR_AUTOSCALER"
"""Set to 1 on an autoscaling cluster whose node types gantune cannot read (KubeRay, custom
autoscalers): the search then waits for nodes that do not exist yet, as Ray would."""
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
"""Where the Ray cluster launcher leaves the autoscaler's config on the head node (Tune's own
cluster_info._is_ray_cluster looks for the same file)."""


def node_types(path: Path = BOOTSTRAP_CONFIG) -> dict[str, dict[str, float] | None]:
    """{node type: its declared resources, or None when it declares none (detected at launch)}
    of the cluster launcher's autoscaler; {} without one."""
    path = path.expanduser()
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    return {
        name: (dict(t["resources"]) if t.get("resources") else None)
        for name, t in types.items()
        if name == head or t.get("max_workers", 1) > 0  # a type capped at 0 workers never starts
    }


def fits(resources: Mapping[str, float], need: Mapping[str, float]) -> bool:
    return all(resources.get(key, 0) >= amount for key, amount in need.items() if amount > 0)


def describe(resources: Mapping[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"


def unfit_reason(
    nodes: list[Mapping[str, float]], types: Mapping[str, Mapping[str, float] | None], cpus: float, gpus: float
) -> str | None:
    """Why no trial can ever be placed, or None when some node or node type fits one."""
    need = {"CPU": cpus, "GPU": gpus}
    if any(fits(n, need) for n in nodes) or any(r is None or fits(r, need) for r in types.values()):
        return None
    seen = "; ".join(sorted({describe(n) for n in nodes})) or "none alive"
    kinds = f"; autoscaler node types: {', '.join(f'{k} ({describe(r)})' for k, r in types.items())}" if types else ""
    return (
        f"--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: no node of the Ray cluster can ever run one trial "
        f"(nodes: {seen}{kinds}). Lower --gpus-per-trial / --cpus-per-trial, join a cluster with such nodes "
        f"(--address), or, if it autoscales to node types gantune cannot read (KubeRay), set {AUTOSCALING_ENV}=1 "
        "to wait for them"
    )


def trial_unfit(cpus: float, gpus: float, environ: Mapping[str, str] = os.environ) -> str | None:
    """`unfit_reason` for the cluster `ray.init` joined (call after it)."""
    import ray

    if environ.get(AUTOSCALING_ENV) == "1":
        return None
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return unfit_reason(nodes, node_types(), cpus, gpus)


def schedulable_slots(nodes: list[Mapping[str, float]], cpus: float, gpus: float) -> int:
    """How many trials of `cpus` CPUs and `gpus` GPUs the nodes can run at once, node by node (a
    trial never spans nodes, so 3 + 3 CPUs hold two 2-CPU trials, not three); at least 1."""
    def per_node(resources: Mapping[str, float]) -> int:
        counts = [int(resources.get(key, 0) // amount) for key, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0]
        return min(counts) if counts else 0

    return max(1, sum(per_node(n) for n in nodes))


def cluster_slots(cpus: float, gpus: float) -> int:
    """`schedulable_slots` of the live nodes of the cluster `ray.init` joined (an autoscaling
    cluster's nodes as they are now; nodes it adds later get no extra trials)."""
    import ray

    return schedulable_slots([n["Resources"] for n in ray.nodes() if n.get("Alive")], cpus, gpus)
