# Mnemo in one image: `python -m service run` by default (API + learner + embedded Valkey);
# docker-compose.yml runs `serve` and `learn` from it against a real Redis.
#   docker build -t mnemo .                                  # CPU torch (default)
#   docker build -t mnemo:cuda --build-arg TORCH_VARIANT=cu130 .   # CUDA 13.0 torch
FROM python:3.11-slim

# cpu, or a CUDA tag of https://download.pytorch.org/whl/ that has the torch pyproject.toml
# pins: cu130 (the CUDA build PyPI's torch 2.13 ships; NVIDIA driver >= 580). Older tags
# (cu124, ...) stop at older torch releases. The CUDA runtime comes in torch's wheels; the
# driver from the host (NVIDIA Container Toolkit, or Kubernetes' NVIDIA device plugin).
ARG TORCH_VARIANT=cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MNEMO_HOST=0.0.0.0 \
    MNEMO_DATA_DIR=/var/lib/mnemo

# Dependency layer: only pyproject.toml, so editing the source does not reinstall torch.
# torch comes first from PyTorch's own index (the CPU build is ~200 MB, the PyPI one ships
# CUDA); the rest then finds it already satisfied. `report` adds matplotlib for the PNG report.
WORKDIR /build
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py pyproject.toml report > requirements.txt \
 && pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
      "$(grep -E '^torch[^a-z_-]' requirements.txt)" \
 && pip install --no-cache-dir -r requirements.txt

# Source layer: the package itself, installed without touching the dependencies.
COPY README.md LICENSE ./
COPY models ./models
COPY service ./service
COPY mnemo_client ./mnemo_client
RUN pip install --no-cache-dir --no-deps . && rm -rf /build

RUN useradd --create-home --uid 10001 mnemo \
 && mkdir -p /var/lib/mnemo && chown mnemo:mnemo /var/lib/mnemo
USER mnemo
WORKDIR /var/lib/mnemo

# API (MNEMO_PORT) and the learner's /metrics (MNEMO_LEARNER_METRICS_PORT).
EXPOSE 8000 9101
# Liveness of the API on MNEMO_PORT's default (a container run with another port, or as the
# learner, overrides it, as docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python", "-m", "service", "run"]
