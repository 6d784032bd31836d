# vitserve: the HTTP service (BentoML + ONNX Runtime) with the shipped digits model. docs/deploy.md.
#
#   make image                 # CPU variant, vitserve:0.1.0-cpu
#   make image VARIANT=gpu     # GPU variant (CUDA 13 / cuDNN 9), vitserve:0.1.0
#
# Both stages install from build/wheelhouse/ only (no package index): `make image` fills it first
# (deploy/wheelhouse.sh: the project's wheel and the hash-pinned deploy/requirements/$VARIANT.txt).
# A bare `docker build .` works once the wheelhouse is filled, and builds the CPU variant too.

# The GPU variant takes CUDA 13 / cuDNN 9 from onnxruntime-gpu's [cuda,cudnn] pip extras on a slim
# Python base instead of an nvidia/cuda:13-cudnn-runtime base: the extras carry only the libraries
# ONNX Runtime declares (cuBLAS, cuDNN, cuFFT, cuRAND, cudart, NVRTC), the CUDA base every CUDA
# runtime library and no Python. Pin by digest in production (docs/deploy.md, "Base image").
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG VARIANT=cpu
SHELL ["/bin/sh", "-eu", "-c"]
# Dependencies first, in their own layer: they change rarely and take minutes to install. The
# requirements are COPY'd (content-hashed, so the cache notices a change) and pin every wheel by
# hash; the wheels themselves are bind-mounted, not copied, so that the 1.6 GB of the GPU variant
# never become a layer, not even in this stage.
# pip compiles every module to .pyc here, because the runtime's root filesystem is read-only.
COPY deploy/requirements/${VARIANT}.txt /tmp/requirements.txt
RUN --mount=type=bind,source=build/wheelhouse,target=/wheelhouse \
    python3 -m venv /opt/vitserve \
    && /opt/vitserve/bin/pip install --no-cache-dir --no-index --find-links=/wheelhouse \
        --require-hashes -r /tmp/requirements.txt
# The project wheel (code and the shipped model) changes with every commit: its own small layer.
COPY build/wheelhouse/vitserve-*.whl /tmp/wheels/
RUN /opt/vitserve/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/vitserve-*.whl \
    && /opt/vitserve/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="vitserve" \
      org.opencontainers.image.description="Vision Transformer classifier over HTTP (BentoML + ONNX Runtime)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT" \
      io.vitserve.variant="${VARIANT}"

# A fixed numeric id, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
# The working directory is made here, root's and read-only: WORKDIR alone leaves it to the engine
# (buildah does not create it in the image; podman then makes it at start, owned by the user).
RUN groupadd --system --gid 10001 vitserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin vitserve \
    && mkdir --mode=0555 /srv/vitserve

COPY --from=builder /opt/vitserve /opt/vitserve

# /tmp is the only writable path the service needs (a tmpfs / emptyDir with a read-only root):
# BentoML's home and its Prometheus multiprocess files, BentoML's inter-worker Unix sockets,
# ONNX Runtime's ~/.cache, Python's tempfiles.
# The CUDA libraries of the [cuda,cudnn] extras are found through LD_LIBRARY_PATH (the wheels set no
# RPATH); the CPU variant lacks those folders and the entries are inert.
ENV PATH=/opt/vitserve/bin:$PATH \
    HOME=/tmp \
    BENTOML_HOME=/tmp/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LD_LIBRARY_PATH=/opt/vitserve/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/vitserve/lib/python3.11/site-packages/nvidia/cudnn/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VITSERVE_HOST=0.0.0.0 \
    VITSERVE_PORT=3000 \
    VITSERVE_GRPC_PORT=8001

# Read-only and empty: nothing may rely on writing to the working directory.
WORKDIR /srv/vitserve
USER 10001:10001
EXPOSE 3000
# The Open Inference Protocol's gRPC service (VITSERVE_GRPC_PORT; 0 turns it off).
EXPOSE 8001

# For `docker run`; Kubernetes uses the probes in deploy/k8s instead. /readyz turns 200 only after the
# model is loaded and warmed up, hence the start period. No curl in the image: Python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VITSERVE_PORT', '3000') + '/readyz', timeout=4)"]

# `vitserve serve` validates the VITSERVE_* settings, then execs BentoML: it is PID 1 and receives
# SIGTERM itself, no shell in between, and drains the requests in flight before exiting
# (service/bento/shutdown.py).
CMD ["vitserve", "serve"]
