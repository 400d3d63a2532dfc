# CPU image for orchestration and evaluation: the Prefect server and its cpu-pool worker,
# the MLflow server (PostgreSQL + S3 artifacts), and CPU evaluation / the tiny default.
#   docker build -f docker/cpu.Dockerfile -t receipt-llava-cpu .
FROM python:3.11.14-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# git: DVC and the lineage tags read the repository; curl: health checks.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group --shell /bin/bash worker
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1

# Layers from least to most often changed: torch (CPU build), the pinned stack, then our code.
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /opt/receipt-llava
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir tasks flows bench && pip install --no-cache-dir ".[server]"  # exact pins: pyproject.toml
COPY tasks ./tasks
COPY flows ./flows
COPY bench ./bench
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

USER 10001:10001
WORKDIR /home/worker
CMD ["prefect", "worker", "start", "--pool", "cpu", "--type", "process"]
