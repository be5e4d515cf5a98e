"""deploy/ keeps secrets off command lines and away from the Ray pods, and every address a pod or
node calls exists and is accepted by the server behind it.

- Command lines are visible to anyone who can list processes on a node, in `kubectl get pod -o
  yaml` and in compose's `docker inspect`; secrets travel in the environment (Kubernetes Secrets,
  compose's env file) instead.
- The Ray pods run user code (the search and its trials): they get the non-admin MLflow account
  of the Secret gantune-ray, never the admin.
- MLflow answers only the Host headers in --allowed-hosts (403 otherwise, before any login), so a
  pod calling a name the server does not list fails on its first API call."""

from __future__ import annotations

import re
import shlex
import urllib.parse

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from deploy_helpers import (
    DEPLOY,
    all_containers,
    compose_with_example_env,
    containers,
    env_values,
    find,
    host_header,
    kube_objects,
    option,
    read_env_file,
    secret_refs,
)
from gantune.search.cli import build_parser

RAY_KINDS = ("RayCluster", "RayJob")
SECRET_WORDS = re.compile(r"(?i)passw|secret|token|access_key")
# A flag or an assignment that passes a secret: --password x, --db-secret=x, FOO_PASSWORD=x.
SECRET_ON_ARGV = re.compile(r"(?i)--[\w-]*(passw|secret|token)|\w*(passw|secret|token|access_key)\w*=")
K8S_SERVICE_HOST = re.compile(r"(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc\.cluster\.local")


def secrets_on_a_command_line(argv: list[str], secret_env: set[str]) -> list[str]:
    """What in `argv` is or expands to a secret: a URI with a password, a flag or word naming a
    password/secret/token, or a reference to an environment variable that holds one."""
    found = []
    for arg in argv:
        for token in arg.split():
            if urllib.parse.urlsplit(token).password:
                found.append(f"a password in the URI {token!r}")
        if SECRET_ON_ARGV.search(arg):
            found.append(f"{arg!r} passes a secret")
        for name in secret_env:
            if re.search(rf"\$\(?{{?{name}\b", arg):
                found.append(f"{arg!r} expands ${name}")
    return found


def secret_env_names(container: dict) -> set[str]:
    """Variables of the container that come from a Secret (envFrom: every key of the Secret is
    unknown here, so the names the Ray pods' Secret is documented to hold)."""
    names = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    if any("secretRef" in s for s in container.get("envFrom", [])):
        names |= {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"}
    return names


# --- No secret on a command line ---


@pytest.mark.parametrize("where, container", all_containers(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_container_has_a_secret_on_its_command_line(where, container):
    argv = container.get("command", []) + container.get("args", [])
    assert secrets_on_a_command_line(argv, secret_env_names(container)) == [], where
    # Secret-looking variables come from a Secret, never a value in the manifest.
    literal = [e["name"] for e in container.get("env", []) if "value" in e and SECRET_WORDS.search(e["name"])]
    assert literal == [], f"{where}: {literal} set from a value, not a secretKeyRef"


def test_the_rayjob_entrypoint_and_the_launcher_commands_hold_no_secret():
    entry = find("RayJob", "gantune-search-demo").doc["spec"]["entrypoint"]
    assert secrets_on_a_command_line(shlex.split(entry), {"MLFLOW_TRACKING_PASSWORD"}) == []
    cfg = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    commands = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] + cfg["docker"]["run_options"]
    assert secrets_on_a_command_line(commands, {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"}) == []


def test_compose_commands_hold_no_secret_value():
    """After interpolation with the example env file, none of its secret values is in any
    service's command, entrypoint or healthcheck (they are in `environment:` only)."""
    example = read_env_file(DEPLOY / "stack.env.example")
    secret_values = {v for k, v in example.items() if SECRET_WORDS.search(k)}
    assert len(secret_values) >= 5
    for name, svc in compose_with_example_env()["services"].items():
        argv = [str(a) for key in ("command", "entrypoint") for a in svc.get(key) or []]
        argv += [str(a) for a in svc.get("healthcheck", {}).get("test", [])]
        leaked = {v for v in secret_values for a in argv if v in a}
        assert not leaked and secrets_on_a_command_line(argv, set()) == [], f"compose.yaml {name}: {leaked}"


# --- The Ray pods and the admin ---


def admin_secret() -> str:
    """The Secret the tracking server reads its admin password from."""
    (server,) = [c for _, c in all_containers() if c["name"] == "mlflow"]
    (name,) = [s for s, key in secret_refs(server) if key == "GANTUNE_MLFLOW_ADMIN_PASSWORD"]
    return name


def ray_containers() -> list[tuple[str, dict]]:
    return [item for obj in kube_objects() if obj.doc["kind"] in RAY_KINDS for item in containers(obj)]


def test_ray_pods_use_the_service_account_secret_and_never_the_admin():
    admin = admin_secret()
    assert ray_containers()
    for where, container in ray_containers():
        names = {name for name, _ in secret_refs(container)}
        assert admin not in names, f"{where} reads the MLflow admin Secret {admin}"
        assert names == {"gantune-ray"}, f"{where}: {names}"
    # The account the Job creates is the one in the Ray pods' Secret.
    (job,) = [c for _, c in all_containers() if c["name"] == "service-user"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in job["env"] if "valueFrom" in e}
    assert refs["GANTUNE_SERVICE_USER"] == {"name": "gantune-ray", "key": "MLFLOW_TRACKING_USERNAME"}
    assert refs["GANTUNE_SERVICE_PASSWORD"] == {"name": "gantune-ray", "key": "MLFLOW_TRACKING_PASSWORD"}
    assert refs["MLFLOW_TRACKING_PASSWORD"]["name"] == admin


def test_every_secret_the_manifests_read_is_documented_with_its_keys():
    """deploy/README.md's Secrets table names each Secret and key a manifest reads, so the
    `kubectl create secret` steps create them all."""
    readme = (DEPLOY / "README.md").read_text()
    rows = {m[0]: set(re.findall(r"`(\w+)`", m[1])) for m in re.findall(r"^\| `(gantune-[\w-]+)` \| (.*)$",
                                                                     readme, flags=re.M)}  # fmt: skip
    for where, container in all_containers():
        for name, key in secret_refs(container):
            assert name in rows, f"{where}: Secret {name} is not in deploy/README.md's Secrets table"
            assert key is None or key in rows[name], f"{where}: key {key} of {name} is not documented"


# --- Host names ---


def services() -> dict[tuple[str, str], set[int]]:
    """(namespace, name) -> ports of every Service in deploy/k8s."""
    return {(o.doc["metadata"]["namespace"], o.doc["metadata"]["name"]): {p["port"] for p in o.doc["spec"]["ports"]}
            for o in kube_objects() if o.doc["kind"] == "Service"}  # fmt: skip


def server_args():
    (server,) = [c for _, c in all_containers() if c["name"] == "mlflow"]
    return build_parser().parse_args(server["args"])  # the image's entrypoint is `gantune`


def pod_tracking_uris() -> list[tuple[str, str]]:
    uris = [(where, env_values(c)["MLFLOW_TRACKING_URI"]) for where, c in all_containers()
            if "MLFLOW_TRACKING_URI" in env_values(c)]  # fmt: skip
    entry = shlex.split(find("RayJob", "gantune-search-demo").doc["spec"]["entrypoint"])
    if tracking := build_parser().parse_args(entry[1:]).tracking_uri:
        uris.append(("RayJob entrypoint", tracking))
    return uris


def pod_service_uris() -> list[tuple[str, str]]:
    """Every http(s)/postgresql URI a pod calls inside the cluster, from env values and args."""
    found = []
    for where, c in all_containers():
        words = [*env_values(c).values(), *c.get("args", []), *c.get("command", [])]
        found += [(where, w) for w in words if re.match(r"(https?|postgresql)://", w)]
    return found


def test_the_pods_call_services_that_exist_in_their_namespace():
    known = services()
    uris = pod_service_uris()
    assert len(uris) >= 6
    for where, uri in uris:
        parts = urllib.parse.urlsplit(uri.replace("$(", "").replace(")", ""))
        match = K8S_SERVICE_HOST.fullmatch(parts.hostname or "")
        assert match, f"{where}: {uri} is not a Service's cluster DNS name (<service>.<namespace>.svc.cluster.local)"
        key = (match["namespace"], match["service"])
        assert key in known, f"{where}: {uri}: no Service {key[1]} in namespace {key[0]} in deploy/k8s"
        assert parts.port in known[key], f"{where}: {uri}: Service {key[1]} has ports {known[key]}"


def test_every_host_name_the_pods_use_is_in_the_tracking_servers_allowed_hosts():
    allowed = server_args().allowed_hosts.split(",")
    uris = pod_tracking_uris()
    assert {where.split(":")[0] for where, _ in uris} >= {"kuberay/raycluster.yaml", "kuberay/rayjob.yaml",
                                                           "k8s/mlflow.yaml"}  # fmt: skip
    for where, uri in uris:
        assert is_allowed_host_header(allowed, host_header(uri)), f"{where}: {host_header(uri)} not in {allowed}"


def test_every_object_lives_in_the_namespace_its_host_names_name():
    namespaces = {o.doc["metadata"].get("namespace") for o in kube_objects()}
    named = {K8S_SERVICE_HOST.search(uri)["namespace"] for _, uri in pod_service_uris()}
    assert namespaces == named == {"gantune"}


def test_the_launcher_nodes_and_compose_clients_use_names_the_compose_server_allows():
    compose = compose_with_example_env()
    server = ["gantune", *compose["services"]["mlflow"]["command"]]
    allowed = option(server, "--allowed-hosts").split(",")
    run_options = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())["docker"]["run_options"]
    (launcher_uri,) = [o.split("=", 1)[1] for o in run_options if o.startswith("--env MLFLOW_TRACKING_URI=")]
    compose_uri = compose["services"]["mlflow-service-user"]["environment"]["MLFLOW_TRACKING_URI"]
    for where, uri in (("ray-cluster.yaml", launcher_uri), ("compose.yaml mlflow-service-user", compose_uri)):
        assert is_allowed_host_header(allowed, host_header(uri)), f"{where}: {host_header(uri)} not in {allowed}"


# --- PersistentVolumeClaims and Services ---


@pytest.mark.parametrize("name, data_dir", [("postgres", "/var/lib/postgresql/data"), ("minio", "/data")])
def test_stateful_stores_keep_their_data_on_a_volume_claim(name, data_dir):
    spec = find("StatefulSet", name).doc["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(data_dir) == claim["metadata"]["name"], f"{name}: {data_dir} is not on its PVC"


@pytest.mark.parametrize("service", [o for o in kube_objects() if o.doc["kind"] == "Service"],
                         ids=lambda o: o.name)  # fmt: skip
def test_every_service_selects_a_workload_and_its_named_ports(service):
    selector = service.doc["spec"]["selector"]
    workloads = [o for o in kube_objects() if o.doc["kind"] in ("Deployment", "StatefulSet")
                 and selector.items() <= o.doc["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
    assert len(workloads) == 1, f"{service.name}: selects {len(workloads)} workloads"
    ports = {p["name"] for c in workloads[0].doc["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    for port in service.doc["spec"]["ports"]:
        assert port["targetPort"] in ports, f"{service.name}: targetPort {port['targetPort']} is not a container port"


@pytest.mark.postgres
def test_a_store_uri_without_a_password_logs_in_with_pgpassword(postgres_db, monkeypatch):
    """What k8s/mlflow.yaml and compose.yaml rely on to keep the database password off the
    command line: the driver stack `gantune server` uses (SQLAlchemy, psycopg2 via
    with_installed_postgres_driver, libpq) sends PGPASSWORD when the URI has no password."""
    import sqlalchemy

    from gantune.mlflow_server.server import with_installed_postgres_driver

    assert urllib.parse.urlsplit(postgres_db).password is None
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    engine = sqlalchemy.create_engine(with_installed_postgres_driver(postgres_db))
    try:
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.info.password == "from-the-environment"
    finally:
        engine.dispose()
