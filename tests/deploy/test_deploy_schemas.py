"""Every Kubernetes object in deploy/ is valid against the schema the API server would apply,
offline: Kubernetes' own (from the kubernetes-validate package) for built-in kinds, KubeRay's
CRD openAPIV3Schema (vendored in kuberay_crd_schemas.json) for RayCluster/RayJob/RayService.

Both checks are strict, like `kubectl apply`'s default server-side field validation: an unknown
or misspelt field is an error, not silently dropped."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from deploy_helpers import KubeObject, find, is_ray_object, kube_objects

# The newest Kubernetes whose schemas kubernetes-validate bundles (its version follows them).
KUBERNETES_VERSION = "1.37.0"
VENDORED = json.loads((Path(__file__).parent / "kuberay_crd_schemas.json").read_text())

OBJECTS = kube_objects()


def strict(schema: dict) -> dict:
    """`schema` with unknown fields refused wherever the API server would refuse them: objects
    that list their properties, unless marked x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):  # fmt: skip
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


STRICT_CRDS = {kind: strict(entry["openAPIV3Schema"]) for kind, entry in VENDORED["schemas"].items()}


def crd_errors(doc: dict) -> list[str]:
    kind = doc["kind"]
    assert kind in STRICT_CRDS, f"no vendored KubeRay schema for {kind}"
    assert doc["apiVersion"] == VENDORED["schemas"][kind]["apiVersion"], doc["apiVersion"]
    validator = jsonschema.Draft7Validator(STRICT_CRDS[kind])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def kubernetes_errors(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"]
    return []


def schema_errors(doc: dict) -> list[str]:
    return crd_errors(doc) if doc["apiVersion"].startswith("ray.io/") else kubernetes_errors(doc)


def test_the_schemas_are_current_and_vendored_with_their_source():
    assert KUBERNETES_VERSION.rsplit(".", 1)[0] in {v.rsplit(".", 1)[0] for v in all_versions()}
    source = VENDORED["_vendored"]
    assert "ray-project/kuberay" in source["source"] and "commit " in source["source"]
    assert source["license"].startswith("Apache-2.0")
    assert set(VENDORED["schemas"]) == {"RayCluster", "RayJob", "RayService"}


def test_deploy_has_the_tracking_stack_and_the_ray_objects():
    kinds = {(o.doc["kind"], o.doc["metadata"]["name"]) for o in OBJECTS}
    assert {("StatefulSet", "postgres"), ("StatefulSet", "minio"), ("Deployment", "mlflow"),
            ("Service", "postgres"), ("Service", "minio"), ("Service", "mlflow"),
            ("Job", "minio-buckets"), ("Job", "mlflow-service-user"),
            ("RayCluster", "gantune"), ("RayJob", "gantune-search-demo")} <= kinds  # fmt: skip


@pytest.mark.parametrize("obj", [o for o in OBJECTS if not is_ray_object(o)], ids=lambda o: o.name)
def test_kubernetes_objects_match_kubernetes_schemas(obj: KubeObject):
    assert schema_errors(obj.doc) == [], obj.name


@pytest.mark.parametrize("obj", [o for o in OBJECTS if is_ray_object(o)], ids=lambda o: o.name)
def test_kuberay_objects_match_the_kuberay_crd_schemas(obj: KubeObject):
    assert schema_errors(obj.doc) == [], obj.name


def broken(doc: dict, path: list, value) -> dict:
    """A copy of `doc` with the field at `path` set to `value`."""
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    "kind, name, path, value",
    [
        ("Deployment", "mlflow", ["spec", "replicas"], "one"),  # wrong type
        ("Deployment", "mlflow", ["spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"], "5000"),
        ("Deployment", "mlflow", ["spec", "template", "spec", "containers", 0, "envFrom"], {"secretRef": "x"}),
        ("StatefulSet", "postgres", ["spec", "serviceNme"], "postgres"),  # misspelt field
        ("Job", "mlflow-service-user", ["spec", "backoffLimit"], "3"),
        ("RayJob", "gantune-search-demo", ["spec", "backofLimit"], 3),
        ("RayJob", "gantune-search-demo", ["spec", "backoffLimit"], "3"),
        ("RayCluster", "gantune", ["spec", "headGroupSpec", "template", "spec", "containers", 0, "imag"], "x"),
        ("RayCluster", "gantune", ["spec", "workerGroupSpecs", 0, "maxReplicas"], "four"),
    ],
)
def test_the_validators_refuse_unknown_fields_and_wrong_types(kind, name, path, value):
    """The validation above can fail: a typo or a wrong type in any manifest is caught."""
    assert schema_errors(broken(find(kind, name).doc, path, value)), f"{kind}/{name}: {path}={value!r} passed"


# --- KubeRay's own rules beyond the schema (ray-operator/controllers/ray/utils/validation.go) ---


def rayjob_rule_violations(spec: dict) -> list[str]:
    """The checks of KubeRay v1.7's ValidateRayJobSpec that these manifests could break."""
    problems = []
    backoff = spec.get("backoffLimit", 0)
    if spec.get("clusterSelector") and backoff > 0:
        problems.append("backoffLimit is incompatible with ClusterSelector mode")
    if not spec.get("clusterSelector") and not spec.get("rayClusterSpec"):
        problems.append("one of rayClusterSpec or clusterSelector must be set")
    if spec.get("submissionMode") == "InteractiveMode" and backoff > 0:
        problems.append("backoffLimit is incompatible with InteractiveMode")
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        problems.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    return problems


def test_the_rayjob_passes_kuberays_spec_rules():
    spec = find("RayJob", "gantune-search-demo").doc["spec"]
    assert rayjob_rule_violations(spec) == []
    # The rules bite: the same job retried on a selected cluster is refused by the operator.
    assert rayjob_rule_violations({**spec, "clusterSelector": {"ray.io/cluster": "gantune"}})
