"""The Docker and Kubernetes GPU work-pool templates (docker/pools/, devtools/pools.py).

Neither a Docker daemon nor a cluster runs here, so each template is checked as far as it can
be without one: it is what the generator makes, a real `prefect server` accepts it as a work
pool of its type, the worker's own job configuration class renders it with the Secret blocks
resolved, and the result passes the runtime's schema (docker-py's HostConfig for the GPU
request; the Kubernetes Job schema, strict, through kubernetes-validate).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

from devtools import pools
from devtools.servers import QUIET, bin_path, prefect_server
from tests.conftest import REPO

SECRETS = {
    "receipt-llava-s3-access-key-id": "key-id-from-a-block",
    "receipt-llava-s3-secret-access-key": "secret-from-a-block",
}


def template(name: str) -> dict:
    return json.loads((REPO / "docker" / "pools" / name).read_text())


@pytest.mark.parametrize("name", sorted(pools.TEMPLATES))
def test_templates_are_what_the_generator_makes(name):
    assert (REPO / "docker" / "pools" / name).read_text() == pools.render(pools.TEMPLATES[name])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        prefect_server(tmp_path_factory.mktemp("prefect")) as api,
        temporary_settings({PREFECT_API_URL: api}),
    ):
        for name, value in SECRETS.items():
            Secret(value=value).save(name, overwrite=True)
        yield api


@pytest.mark.parametrize(
    ("name", "kind"), [("gpu-docker.json", "docker"), ("gpu-kubernetes.json", "kubernetes")]
)
def test_the_prefect_server_accepts_each_as_a_work_pool(server, tmp_path, name, kind):
    from prefect.client.orchestration import get_client

    env = QUIET | {"PREFECT_API_URL": server, "PREFECT_HOME": str(tmp_path), "PATH": "/usr/bin"}
    done = subprocess.run(
        [bin_path("prefect"), "work-pool", "create", f"gpu-{kind}", "--type", kind]
        + ["--base-job-template", str(REPO / "docker" / "pools" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(f"gpu-{kind}")
    assert pool.type == kind and pool.base_job_template == template(name)


def _render(config_class, name: str):
    """The job configuration a worker of that type builds for a flow run of the train stage."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun

    async def build():
        async with get_client() as client:
            config = await config_class.from_template_and_values(template(name), {}, client=client)
        run = FlowRun(id=uuid.uuid4(), name="train-stage-run", flow_id=uuid.uuid4())
        config.prepare_for_flow_run(run)
        return config

    return asyncio.run(build())


def test_docker_template_asks_for_the_gpus_and_gets_its_secrets_from_blocks(server):
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from docker.types import HostConfig
    from prefect_docker.worker import DockerWorkerJobConfiguration

    config = _render(DockerWorkerJobConfiguration, "gpu-docker.json")
    assert config.image == pools.IMAGE
    assert config.env["AWS_ACCESS_KEY_ID"] == SECRETS["receipt-llava-s3-access-key-id"]
    assert config.env["AWS_SECRET_ACCESS_KEY"] == SECRETS["receipt-llava-s3-secret-access-key"]
    assert config.env["AWS_ENDPOINT_URL"] and config.env["RECEIPT_TRAIN_CHECKOUT"]
    # ... which the template names, never holds
    default_env = template("gpu-docker.json")["variables"]["properties"]["env"]["default"]
    assert default_env["AWS_SECRET_ACCESS_KEY"] == pools.SECRETS["AWS_SECRET_ACCESS_KEY"]
    assert not set(SECRETS.values()) & set(json.dumps(template("gpu-docker.json")).split('"'))
    # what docker-py makes of the request (HostConfig validates it against the Engine API)
    host = HostConfig(version=DEFAULT_DOCKER_API_VERSION, **config.container_create_kwargs)
    (gpus,) = host["DeviceRequests"]
    assert gpus["Driver"] == "nvidia" and gpus["Count"] == -1 and gpus["Capabilities"] == [["gpu"]]
    assert host["ShmSize"] == 8 * 1024**3


def test_kubernetes_template_is_a_valid_job_with_one_gpu(server):
    import kubernetes_validate
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = _render(KubernetesWorkerJobConfiguration, "gpu-kubernetes.json")
    manifest = config.job_manifest
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"] == pools.IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == SECRETS["receipt-llava-s3-secret-access-key"]
    assert env["MLFLOW_TRACKING_URI"] and "PREFECT__FLOW_RUN_ID" in env
    # the worker's default template puts these in the pod spec, where the schema refuses them
    default = json.loads(json.dumps(config.job_manifest))
    pod = default["spec"]["template"]["spec"]
    pod["completions"] = default["spec"].pop("completions")
    with pytest.raises(kubernetes_validate.ValidationError, match="completions"):
        kubernetes_validate.validate(default, kubernetes_validate.latest_version(), strict=True)
