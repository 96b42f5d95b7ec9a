# syntax=docker/dockerfile:1
# One image for every service:
#   python -m services.dispatcher | python -m services.worker --pool product | python -m services.autoscaler
#
# Stage 1 builds wheels for the project and all its dependencies (gcc for any that ship only as
# source). Stage 2 installs those wheels into a clean slim image with no compiler, runs as an
# unprivileged user and writes only under /tmp, so it runs with a read-only root filesystem.
#   docker build -t odc-conveyor:dev .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip wheel --wheel-dir /wheels . \
    && rm -f /wheels/odc_conveyor-*.whl
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-deps --wheel-dir /wheels .

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
# Wheels come in through a bind mount, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels odc-conveyor
# An empty, root-owned working directory: `python -m` puts it first on sys.path.
WORKDIR /app
USER 10001:10001
EXPOSE 9101 9102 9103
CMD ["python", "-m", "services.dispatcher"]
