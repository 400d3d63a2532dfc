"""GPU work-pool job templates for the train stage, beside the `process` pools: Docker and
Kubernetes. Each is the worker type's own default template (prefect-docker, prefect-kubernetes)
with the train image, an NVIDIA GPU and the remotes' settings put in:

    python -m devtools.pools                    # rewrites docker/pools/*.json
    prefect work-pool create gpu --type docker --base-job-template docker/pools/gpu-docker.json
    prefect work-pool create gpu --type kubernetes --base-job-template docker/pools/gpu-kubernetes.json

S3 credentials are never literal: the `env` defaults reference two Prefect Secret blocks,
`receipt-llava-s3-access-key-id` and `receipt-llava-s3-secret-access-key`, which the worker
resolves when a run starts.
The train stage clones the repository into the container (prefect.yaml's `git_clone` step), so
the image needs the dependencies only. tests/code/test_pools.py checks the files against this
generator, the Prefect server's validation, and the Docker / Kubernetes schemas.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docker" / "pools"
IMAGE = "receipt-llava-train:latest"  # docker/train.Dockerfile, as compose tags it
SECRETS = {
    "AWS_ACCESS_KEY_ID": "{{ prefect.blocks.secret.receipt-llava-s3-access-key-id }}",
    "AWS_SECRET_ACCESS_KEY": "{{ prefect.blocks.secret.receipt-llava-s3-secret-access-key }}",
}
# Where the services are on compose's network (docker/compose.yaml) or in the cluster.
ENV = {
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "AWS_ENDPOINT_URL": "http://minio:9000",
    "HF_HOME": "/home/worker/.cache/huggingface",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
GPU_REQUEST = {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}  # every GPU


def _default(template: dict[str, Any], name: str, value: Any, **schema: Any) -> None:
    prop = template["variables"]["properties"][name]
    prop["default"] = value
    prop.update(schema)


def docker_template() -> dict[str, Any]:
    from prefect_docker.worker import DockerWorker

    t = copy.deepcopy(DockerWorker.get_default_base_job_template())
    _default(t, "image", IMAGE)
    _default(t, "env", ENV | SECRETS | {"RECEIPT_TRAIN_CHECKOUT": "/work/checkout"})
    # compose's network and volumes: a checkout (and its DVC cache) kept across runs
    _default(t, "networks", ["receipt-llava_default"])
    _default(
        t,
        "volumes",
        [
            "receipt-llava_gpucheckout:/work/checkout",
            "receipt-llava_hfcache:/home/worker/.cache/huggingface",
        ],
    )
    _default(t, "auto_remove", True)
    _default(t, "container_create_kwargs", {"device_requests": [GPU_REQUEST], "shm_size": "8g"})
    return t


def kubernetes_template() -> dict[str, Any]:
    from prefect_kubernetes.worker import KubernetesWorker

    t = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    job = t["job_configuration"]["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    # completions and parallelism are the Job's fields, not the pod's (the schema says so)
    for key in ("completions", "parallelism"):
        job[key] = pod.pop(key)
    (container,) = pod["containers"]
    container["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_count }}"
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    t["variables"]["properties"]["gpu_count"] = {
        "title": "GPUs",
        "description": "NVIDIA GPUs for the train stage (DDP over all of them).",
        "type": "integer",
        "minimum": 1,
        "default": 1,
    }
    _default(t, "image", IMAGE)
    _default(t, "env", ENV | SECRETS)  # a fresh pod: the run trains in its own clone
    _default(t, "finished_job_ttl", 3600)
    return t


TEMPLATES = {"gpu-docker.json": docker_template, "gpu-kubernetes.json": kubernetes_template}


def render(make: Any) -> str:
    return json.dumps(make(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in TEMPLATES.items():
        (args.out / name).write_text(render(make))
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
