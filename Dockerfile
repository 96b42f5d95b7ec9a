# syntax=docker/dockerfile:1
# One image for every service:
#   python -m services.dispatcher | python -m services.worker --pool product | python -m services.autoscaler
#
# Stage 1 installs the dependencies exactly as requirements.lock pins them (versions and sha256
# hashes, checked by pip: a changed or substituted file fails the build), then the project with
# --no-deps, into a virtual environment (gcc for any dependency that ships only as source).
# Stage 2 copies that environment into a clean slim image with no compiler, runs as an
# unprivileged user and writes only under /tmp, so it runs with a read-only root filesystem.
#   docker build -t odc-conveyor:dev .
# After changing dependencies in pyproject.toml: `make lock`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from the lock file alone, so that a code change reuses this layer.
COPY requirements.lock ./
RUN python -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# The project alone: every dependency is already in, from the lock (setuptools included).
RUN /opt/conveyor/bin/pip install --no-deps --no-build-isolation --no-index . \
    && /opt/conveyor/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="odc-conveyor" \
      org.opencontainers.image.description="EO product generation on an Open Data Cube with Redis Streams" \
      org.opencontainers.image.licenses="Apache-2.0"
# Read-only root filesystem: everything a library caches or spills (dask, matplotlib, GDAL,
# botocore) goes under HOME/TMPDIR, which the manifests mount as an emptyDir at /tmp.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    CONVEYOR_STATE_DIR=/tmp/conveyor \
    CONVEYOR_LOG_FORMAT=json
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin conveyor
# The environment built and hash-checked in the first stage; nothing is downloaded here.
COPY --from=builder /opt/conveyor /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH
# An empty, root-owned working directory: `python -m` puts it first on sys.path.
WORKDIR /app
USER 10001:10001
EXPOSE 9101 9102 9103
CMD ["python", "-m", "services.dispatcher"]
