# GPU training worker: CUDA base matching the pinned torch (2.13.0, cu128 build), flash-attn,
# bitsandbytes and the project; runs a Prefect worker on the `gpu` work pool (docker/compose.yaml).
#   docker build -f docker/train.Dockerfile -t receipt-llava-train .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# --- builder: the flash-attn wheel needs nvcc and torch; only the wheel leaves this stage
FROM ${CUDA_IMAGE} AS flash-attn
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG FLASH_ATTN_VERSION=2.8.3
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev python3-venv git ninja-build \
 && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && pip install --no-cache-dir packaging==25.0 wheel==0.45.1 psutil==7.1.3
# flash-attn's setup fetches a prebuilt wheel matching torch/CUDA when one exists, else compiles.
RUN MAX_JOBS=8 pip wheel --no-cache-dir --no-deps --no-build-isolation \
      -w /wheels "flash-attn==${FLASH_ATTN_VERSION}"

# --- runtime
FROM ${CUDA_RUNTIME_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group --shell /bin/bash worker
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 DO_NOT_TRACK=true DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HOME=/home/worker/.cache/huggingface

# Layers from least to most often changed: torch, flash-attn, the pinned stack, then our code.
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY --from=flash-attn /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /opt/receipt-llava
# Dependencies alone first (empty package dirs), so a code change reuses this layer.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN mkdir tasks flows bench && pip install --no-cache-dir ".[server]"  # exact pins: pyproject.toml
COPY tasks ./tasks
COPY flows ./flows
COPY bench ./bench
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info \
 && mkdir -p /work/checkout && chown 10001:10001 /work/checkout  # the train stage's own checkout

USER 10001:10001
WORKDIR /home/worker
CMD ["prefect", "worker", "start", "--pool", "gpu", "--type", "process"]
