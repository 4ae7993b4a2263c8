# syntax=docker/dockerfile:1
# The image serves the API and, with the `ray` extra installed, runs Ray cluster nodes too.
# CPU image (default):
#   docker build -t tensorlens .
# CUDA image: a CUDA runtime base and the matching torch wheel index, e.g.
#   docker build -t tensorlens:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# CUDA base images carry no Python; the python:* images already do.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 tensorlens \
    && mkdir -p /data && chown tensorlens /data

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    TENSORLENS_HOST=0.0.0.0 \
    TENSORLENS_PORT=8000 \
    TENSORLENS_DATA_DIR=/data

WORKDIR /app
COPY constraints.txt ./
# torch first, from the index that matches the base image, so the project install reuses it.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY tensorlens ./tensorlens
RUN pip install --no-cache-dir -c constraints.txt '.[ray]'

USER tensorlens
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["python", "-m", "service"]
