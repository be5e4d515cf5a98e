"""deploy/: every manifest parses, has the fields its tool needs, and runs only real gantune commands.

Docker, Kubernetes and the cluster launcher cannot run here, so these tests read the files."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet

from gantune.search.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = f"gantune:{PYPROJECT['project']['version']}"
# Docker Hub has no library/gantune: manifests that nodes pull from name a registry (a placeholder).
PULLED_IMAGE = f"registry.example.org/{IMAGE}"
# The Dockerfile's WORKDIR: where the image holds the repository's spaces/ and data/.
IMAGE_WORKDIR = "/opt/gantune"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


def load(rel: str) -> dict:
    (doc,) = list(yaml.safe_load_all((DEPLOY / rel).read_text()))
    return doc


def assert_is_cli_command(argv: list[str], where: str) -> None:
    """`argv` (starting with 'gantune') parses with the real CLI parser; search spaces exist."""
    assert argv[0] == "gantune", f"{where}: not a gantune command: {argv}"
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is rejected by gantune's CLI parser (exit {e.code})")
    if argv[1] == "search":
        space = args.space.removeprefix(IMAGE_WORKDIR + "/")  # a path inside the image
        assert (ROOT / space).is_file(), f"{where}: space file {args.space} is not in the repository"


def readme_shell_lines() -> list[str]:
    """The lines of deploy/README.md's bash blocks, continuations joined, comments dropped."""
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("  #")[0] for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def gantune_argv(line: str) -> list[str] | None:
    """The `gantune ...` command a shell line runs, alone or after `--` (ray job submit)."""
    match = re.search(r"(?:^|\s--\s)(gantune\s.*)$", line.strip())
    return shlex.split(match.group(1)) if match else None


def readme_commands() -> list[list[str]]:
    return [argv for line in readme_shell_lines() if (argv := gantune_argv(line))]


# --- Every YAML file ---


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses_into_mappings(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"


def test_the_expected_manifests_exist():
    names = {str(p.relative_to(DEPLOY)) for p in MANIFESTS}
    assert {"compose.yaml", "ray-cluster.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml",
            "k8s/postgres.yaml", "k8s/minio.yaml", "k8s/mlflow.yaml"} <= names  # fmt: skip


# --- KubeRay ---


def test_raycluster_has_a_cpu_head_and_a_gpu_worker_group():
    rc = load("kuberay/raycluster.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = rc["spec"]
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["image"] == PULLED_IMAGE
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265, 10001}
    env = {e["name"]: e["value"] for e in head_container["env"]}
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")

    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["image"] == PULLED_IMAGE
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker["env"] == head_container["env"] and worker["envFrom"] == head_container["envFrom"]


def test_rayjob_runs_a_resumable_gantune_search_on_a_cluster_like_raycluster_yaml():
    """A retry (backoffLimit > 0) re-runs the entrypoint on a new cluster: `--resume auto` with
    Tune's state on S3 makes that a resume, not a new search."""
    job = load("kuberay/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"] == load("kuberay/raycluster.yaml")["spec"], "the two cluster specs drifted"
    assert job["spec"]["backoffLimit"] > 0 and job["spec"]["shutdownAfterJobFinishes"] is True
    argv = shlex.split(job["spec"]["entrypoint"])
    assert_is_cli_command(argv, "kuberay/rayjob.yaml")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "search" and args.resume == "auto"
    # The driver's cwd on the head is not the image's WORKDIR under HTTPMode: an absolute space.
    assert args.space.startswith(IMAGE_WORKDIR + "/")
    assert args.address == "auto" and args.storage_path.startswith("s3://") and args.gpus_per_trial == 0.25


# --- Ray cluster launcher ---


def test_cluster_launcher_config():
    cfg = load("ray-cluster.yaml")
    assert cfg["docker"]["image"] == PULLED_IMAGE
    assert cfg["provider"]["type"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] <= cfg["max_workers"] for t in workers)
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    # The image's entrypoint is gantune; the launcher needs it cleared to run its own shell.
    assert "--entrypoint=" in cfg["docker"]["run_options"]


# --- Dockerfile ---


def dockerfile_lines() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_pins_a_cuda_base_and_the_project_versions():
    lines = dockerfile_lines()
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    name, _, tag = base.partition(":")
    assert name == "nvidia/cuda" and tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+-", tag), base
    args = dict(line[4:].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(args["PYTHON_VERSION"] + ".0")
    (torch_req,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert SpecifierSet(torch_req.removeprefix("torch")).contains(args["TORCH_VERSION"])


def test_dockerfile_installs_the_project_and_runs_gantune():
    lines = dockerfile_lines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    copied = {src.rstrip("/") for srcs in copies for src in srcs}
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    # Every source folder of the package, and the pyproject that carries the pins.
    package_dirs = {d.split("/")[0] for d in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert package_dirs | {"pyproject.toml"} <= copied
    build_inputs = {PYPROJECT["project"]["readme"], *PYPROJECT["project"].get("license-files", [])}
    assert build_inputs <= copied, f"`pip install .` reads {build_inputs - copied}, which the image does not copy"
    assert any(re.search(r"pip install \.( |$)", line) for line in lines), "the image must pip install the project"
    assert 'ENTRYPOINT ["gantune"]' in lines
    ignored = {line.strip().rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()}
    assert not copied & ignored, f"copied but excluded from the build context: {copied & ignored}"


# --- compose: PostgreSQL + MinIO + MLflow ---


def test_compose_has_postgres_minio_and_an_authenticated_mlflow_server():
    compose = load("compose.yaml")
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"compose.yaml: {name} image {image} is not pinned"
    mlflow = services["mlflow"]
    assert mlflow["image"] == IMAGE and mlflow["build"]["dockerfile"] == "deploy/Dockerfile"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    argv = ["gantune", *mlflow["command"]]
    assert_is_cli_command(argv, "compose.yaml mlflow")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "server"
    assert args.backend_store_uri.startswith("postgresql://") and "@postgres:5432/" in args.backend_store_uri
    assert args.artifacts_destination.startswith("s3://") and args.s3_endpoint_url == "http://minio:9000"
    assert args.auth and args.auth_database_uri.startswith("postgresql://") and args.allowed_hosts
    # Secrets have no defaults: compose refuses to start until each is set.
    env = mlflow["environment"]
    for key in ("GANTUNE_MLFLOW_ADMIN_USER", "GANTUNE_MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert re.fullmatch(r"\$\{" + key + r":\?[^}]*\}", env[key]), f"compose.yaml: {key} must be required"


def test_the_buckets_compose_creates_are_the_ones_the_manifests_use():
    init = " ".join(load("compose.yaml")["services"]["minio-init"]["command"])
    buckets = set(re.findall(r"local/([a-z0-9-]+)", init))
    entry = shlex.split(load("kuberay/rayjob.yaml")["spec"]["entrypoint"])
    storage = build_parser().parse_args(entry[1:]).storage_path
    mlflow_cmd = load("compose.yaml")["services"]["mlflow"]["command"]
    artifacts = mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1]
    for uri in (storage, artifacts):
        assert uri.removeprefix("s3://").split("/")[0] in buckets, f"{uri}: bucket not created by minio-init"


# --- deploy/README.md ---


def test_readme_commands_exist_in_the_cli():
    commands = readme_commands()
    assert {c[1] for c in commands} >= {"search", "server"}, commands
    for argv in commands:
        assert_is_cli_command(argv, "deploy/README.md")


def test_readme_documents_ray_job_submit_for_the_cluster_case():
    lines = [line for line in readme_shell_lines() if line.lstrip().startswith("ray job submit")]
    submits = [gantune_argv(line) for line in lines]
    assert submits and submits[0], "deploy/README.md: no `ray job submit ... -- gantune search` example"
    # The space files and data travel with the job from the submitting folder.
    assert "--working-dir ." in lines[0].split(" -- ")[0], lines[0]
    args = build_parser().parse_args(submits[0][1:])
    assert args.resume == "auto", "the documented command must be safe to re-run (a retry resumes)"
    assert args.command == "search" and args.address
    assert args.storage_path.startswith("s3://") and args.gpus_per_trial == 0.25
    assert args.tracking_uri.startswith("http")


# AWS's public SSM parameter of the Deep Learning Base OSS Nvidia Driver GPU AMI (a driver for
# CUDA 12.8), which EC2 resolves in RunInstances (`resolve:ssm:`), in every region.
DLAMI_SSM = r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-2[24]\.04/"


def test_cluster_launcher_config_is_valid_pins_an_ami_and_sets_up_nothing():
    """Against the schema the installed Ray validates `ray up` configs with; every node type pins
    its machine image (Ray's default AMI has CUDA 11.2); no setup commands, so Ray merges in none
    of its AWS defaults (a pip install of another Ray wheel)."""
    import json

    import jsonschema

    cfg = load("ray-cluster.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    for name, node_type in cfg["available_node_types"].items():
        image_id = node_type["node_config"].get("ImageId", "")
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", image_id) or re.match(DLAMI_SSM, image_id), (
            f"ray-cluster.yaml: node type {name}: ImageId {image_id!r} is neither an AMI id nor AWS's "
            "parameter of a current NVIDIA-driver DLAMI"
        )
    assert cfg["setup_commands"] == cfg["head_setup_commands"] == cfg["worker_setup_commands"] == []


def test_the_image_can_be_a_cluster_launcher_head_and_a_ray_node():
    """The launcher's autoscaler, inside the head's container, sets workers up with ssh and rsync;
    `ray job submit` and KubeRay's probes need ray[default] (the dashboard and agent)."""
    installs = " ".join(line for line in dockerfile_lines() if "apt-get install" in line)
    assert "openssh-client" in installs.split() and "rsync" in installs.split()
    # The autoscaler's AWS node provider (on the head, in the container) launches EC2 workers with boto3.
    assert any(line.startswith("RUN pip install .") and "boto3" in line for line in dockerfile_lines())
    (ray_req,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")]
    extras = set(ray_req.split("[")[1].split("]")[0].split(","))
    assert {"default", "tune", "client"} <= extras
