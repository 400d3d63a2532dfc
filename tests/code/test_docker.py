"""docker/: the Dockerfiles pass hadolint, the compose file validates against the Compose
spec (and `docker compose config` where the plugin exists), and the stack's wiring holds:
GPU reservation, config from the environment, no secrets in the repo or the images."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
COMPOSE = DOCKER / "compose.yaml"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is a dev dependency (pip install -e '.[dev]')"
    return str(path)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    done = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout


def test_compose_file_matches_the_compose_spec(tmp_path):
    spec = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    ok = subprocess.run([*spec, str(COMPOSE)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = compose()
    broken["services"]["mlflow"]["deploy"] = {"resources": {"reservations": {"gpus": 1}}}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    bad = subprocess.run([*spec, str(tmp_path / "compose.yaml")], capture_output=True, text=True)
    assert bad.returncode != 0  # the schema check has teeth


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` plugin here (the schema test above covers the file)",
)
def test_docker_compose_config_accepts_the_stack():
    done = subprocess.run(
        ["docker", "compose", "--env-file", str(DOCKER / ".env.example"), "-f", str(COMPOSE)]
        + ["config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_stack_has_the_services_and_the_gpu_reservation():
    services = compose()["services"]
    assert {"postgres", "minio", "mlflow", "prefect-server", "worker-cpu", "worker-gpu"} <= set(
        services
    )
    (gpu,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert services["worker-gpu"]["command"][-4:] == ["--pool", "gpu", "--type", "process"]
    assert services["worker-cpu"]["command"][-4:] == ["--pool", "cpu", "--type", "process"]
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--serve-artifacts" in mlflow_cmd and "s3://mlflow" in mlflow_cmd
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert (
        "postgresql"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    # the pools the workers serve are the pools prefect.yaml deploys to
    pools = {
        d["work_pool"]["name"]
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    }
    assert pools == {"cpu", "gpu"}


def test_configuration_comes_from_the_environment_and_no_secret_is_literal():
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"not in docker/.env.example: {sorted(used - example)}"
    for name, service in compose()["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key):
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/.env"], cwd=REPO, capture_output=True
    )
    assert ignored.returncode == 0, "docker/.env must be git-ignored"


def test_images_get_code_not_data_and_install_dependencies_before_code():
    allowed = {"pyproject.toml", "tasks/", "flows/", "bench/"}
    includes = {
        line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    }
    assert includes == allowed  # no data, models, stores or .env in any build context
    for dockerfile in DOCKERFILES:
        lines = dockerfile.read_text().splitlines()
        deps = next(i for i, x in enumerate(lines) if x.startswith("COPY pyproject.toml"))
        code = next(i for i, x in enumerate(lines) if x.startswith("COPY tasks"))
        assert deps < code, f"{dockerfile.name}: dependencies must be installed before the code"
        user = [x for x in lines if x.startswith("USER ")]
        assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
