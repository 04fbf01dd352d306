"""The cluster definitions in cluster/ parse and use only fields that Ray and KubeRay know.

- The launcher YAML goes through Ray's own prepare_config + validate_config, which
  check it against the ray-schema.json shipped in the ray wheel.
- KubeRay manifests are checked key by key against the documented v1 fields in
  tests/unit/data/kuberay_v1_fields.yaml (the CRD schema would prune unknown keys
  silently), with types and required fields.
- runtime_env recipes are built into ray.runtime_env.RuntimeEnv, which type-checks
  the known fields; unknown top-level keys are refused here (RuntimeEnv would take
  them as plugin names).
No Ray cluster is started.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
FIELDS = yaml.safe_load((Path(__file__).parent / "data" / "kuberay_v1_fields.yaml").read_text())
LAUNCHER = CLUSTER / "ray-cluster.yaml"
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))
RUNTIME_ENVS = sorted(CLUSTER.glob("runtime_env*.yaml"))
ALL_YAML = sorted(CLUSTER.rglob("*.yaml"))


def load_one(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one YAML document"
    assert isinstance(docs[0], dict)
    return docs[0]


# --- a compact checker for the documented-field allow-list ---------------------------


def check_fields(value, type_name: str, path: str = "") -> list[str]:
    """Errors of ``value`` against ``type_name`` of FIELDS (empty when it conforms)."""
    if type_name.startswith("list[") and type_name.endswith("]"):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        errors = []
        for i, item in enumerate(value):
            errors += check_fields(item, type_name[5:-1], f"{path}[{i}]")
        return errors
    scalar = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "quantity": lambda v: isinstance(v, (int, str)) and not isinstance(v, bool),
        "strmap": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "intmap": lambda v: (
            isinstance(v, dict)
            and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v.values())
        ),
        "any": lambda v: True,
    }
    if type_name in scalar:
        return [] if scalar[type_name](value) else [f"{path}: not of type {type_name}: {value!r}"]
    spec = FIELDS[type_name]
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping, got {type(value).__name__}"]
    errors = [f"{path}.{k}: unknown field of {type_name}" for k in value if k not in spec]
    for name, field_type in spec.items():
        required = field_type.endswith("!")
        field_type = field_type.rstrip("!")
        if name not in value:
            if required:
                errors.append(f"{path}.{name}: required field of {type_name} missing")
            continue
        errors += check_fields(value[name], field_type, f"{path}.{name}")
    return errors


def test_allow_list_refers_only_to_defined_types():
    scalars = {"string", "integer", "number", "boolean", "quantity", "strmap", "intmap", "any"}
    for type_name, spec in FIELDS.items():
        for name, field_type in spec.items():
            base = field_type.rstrip("!")
            base = base[5:-1] if base.startswith("list[") else base
            assert base in scalars or base in FIELDS, f"{type_name}.{name}: {field_type}"


def test_checker_reports_unknown_missing_and_mistyped_fields():
    cluster = load_one(CLUSTER / "kuberay" / "raycluster.yaml")
    assert check_fields(cluster, "RayCluster") == []
    bad = copy.deepcopy(cluster)
    bad["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}  # typo
    del bad["spec"]["workerGroupSpecs"][0]["groupName"]
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "8"
    bad["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    errors = "\n".join(check_fields(bad, "RayCluster"))
    assert "headGroupSpec.rayStartParam: unknown field" in errors
    assert "workerGroupSpecs[0].groupName: required field" in errors
    assert "workerGroupSpecs[0].maxReplicas: not of type integer" in errors
    assert "rayStartParams: not of type strmap" in errors


# --- every file parses ---------------------------------------------------------------


def test_cluster_folder_has_the_expected_definitions():
    names = {p.relative_to(CLUSTER).as_posix() for p in ALL_YAML}
    assert {
        "ray-cluster.yaml",
        "runtime_env.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
    } <= names
    assert (CLUSTER / "local.sh").stat().st_mode & 0o111, "local.sh must be executable"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_yaml_parses(path):
    assert load_one(path)


# --- Ray cluster launcher ------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher() -> dict:
    return load_one(LAUNCHER)


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


def test_launcher_validates_against_ray_schema(launcher):
    full = prepared(launcher)
    assert full["head_node_type"] in full["available_node_types"]


def test_launcher_schema_check_is_live(launcher):
    import jsonschema

    bad = copy.deepcopy(launcher)
    bad["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        prepared(bad)
    bad = copy.deepcopy(launcher)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError):
        prepared(bad)


def test_launcher_gcp_variant_from_the_header_validates(launcher):
    # The header says: replace provider and auth, give each node type a GCP node_config.
    gcp = copy.deepcopy(launcher)
    gcp["provider"] = {
        "type": "gcp",
        "region": "us-west1",
        "availability_zone": "us-west1-b",
        "project_id": "your-project",
    }
    gcp["auth"] = {"ssh_user": "ubuntu"}
    disks = [{"boot": True, "autoDelete": True, "initializeParams": {"diskSizeGb": 200}}]
    gcp["available_node_types"]["head"]["node_config"] = {
        "machineType": "n2-standard-8",
        "disks": disks,
    }
    gcp["available_node_types"]["gpu_worker"]["node_config"] = {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "scheduling": [{"onHostMaintenance": "TERMINATE"}],
        "disks": disks,
    }
    assert prepared(gcp)["provider"]["type"] == "gcp"


def test_launcher_head_is_cpu_only_and_gpu_workers_scale(launcher):
    types = launcher["available_node_types"]
    assert types[launcher["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for name, t in types.items() if name != launcher["head_node_type"]]
    gpu = [t for t in workers if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu, "a GPU worker type"
    assert all(0 <= t["min_workers"] <= t["max_workers"] for t in gpu)
    assert sum(t["min_workers"] for t in workers) <= launcher["max_workers"]


def test_launcher_docker_image_and_shm(launcher):
    docker = launcher["docker"]
    assert docker["image"] == "rayproject/ray:2.60.0-py311-gpu"
    assert "--shm-size=16g" in docker["run_options"]


def test_launcher_installs_cdiflow_and_uses_token_auth(launcher):
    setup = " ".join(launcher["setup_commands"])
    assert "pip install" in setup and "cdiflow" in setup
    token_mounts = [remote for remote in launcher["file_mounts"] if "auth_token" in remote]
    assert token_mounts, "the token file goes to the nodes through file_mounts"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(launcher[key])
        assert "RAY_AUTH_MODE=token" in start
        assert f"RAY_AUTH_TOKEN_PATH={token_mounts[0]}" in start
    assert "--dashboard-host=127.0.0.1" in " ".join(launcher["head_start_ray_commands"])


# --- KubeRay -------------------------------------------------------------------------


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest_uses_documented_fields(path):
    doc = load_one(path)
    assert doc["kind"] in FIELDS, f"{path.name}: unexpected kind {doc.get('kind')}"
    expected_api = "v1" if doc["kind"] == "PersistentVolumeClaim" else "ray.io/v1"
    assert doc["apiVersion"] == expected_api
    assert check_fields(doc, doc["kind"], doc["kind"]) == []


def cluster_specs() -> list[tuple[str, dict]]:
    cluster = load_one(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]
    job = load_one(CLUSTER / "kuberay" / "rayjob.yaml")["spec"]["rayClusterSpec"]
    return [("RayCluster", cluster), ("RayJob", job)]


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=["RayCluster", "RayJob"])
def test_kuberay_cluster_shape(name, spec):
    pvc = load_one(CLUSTER / "kuberay" / "shared-pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == "2.60.0"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pods = [spec["headGroupSpec"]["template"]["spec"]]
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups, f"{name}: a GPU worker group"
    for group in gpu_groups:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        pod = group["template"]["spec"]
        pods.append(pod)
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
        limits = pod["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        shared = [v for v in volumes.values() if "persistentVolumeClaim" in v]
        assert shared[0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert shared[0]["name"] in mounts.values()


def test_rayjob_entrypoint_runtime_env_and_cleanup():
    from ray.runtime_env import RuntimeEnv

    job = load_one(CLUSTER / "kuberay" / "rayjob.yaml")["spec"]
    assert job["entrypoint"].startswith("python jobs/train.py")
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert set(runtime_env) <= RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0


# --- runtime_env recipes -------------------------------------------------------------


@pytest.mark.parametrize("path", RUNTIME_ENVS, ids=lambda p: p.name)
def test_runtime_env_is_accepted_by_ray(path):
    from ray.runtime_env import RuntimeEnv

    data = load_one(path)
    unknown = set(data) - RuntimeEnv.known_fields
    assert not unknown, f"{path.name}: unknown runtime_env keys {sorted(unknown)}"
    RuntimeEnv(**data)  # raises TypeError / ValueError on a wrong type
    for module in data.get("py_modules", []):
        if "://" not in module:
            assert (REPO / module / "__init__.py").is_file(), f"py_modules entry {module}"
    assert "MLFLOW_TRACKING_URI" in data["env_vars"]


def test_runtime_env_check_is_live():
    from ray.runtime_env import RuntimeEnv

    with pytest.raises(TypeError):
        RuntimeEnv(env_vars={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": 300})
