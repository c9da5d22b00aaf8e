# syntax=docker/dockerfile:1
#
# Image of the arb-orchestration code location. The Dagster Helm chart runs it twice:
#   - as the code server of `dagster-user-deployments` (the chart passes
#     `dagster code-server start -h 0.0.0.0 -p 3030 -m arb_orchestration.definitions` as args);
#   - as every run pod the K8sRunLauncher starts (args `dagster api execute_run ...`).
# The chart sets only `args`, never `command`, so the ENTRYPOINT below (tini) stays and the args
# follow it. The webserver and the daemon use Dagster's own image (helm-values/).
#
# Base image: exact Python patch release and Debian release, pinned by digest. Refresh both
# together (docker buildx imagetools inspect python:3.11.14-slim-bookworm) and keep the Python
# minor in step with `requires-python` in pyproject.toml.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---------------------------------------------------------------------------------------------
# build: a virtualenv with the dependencies, then the package. Only this stage talks to PyPI.
FROM ${PYTHON_IMAGE} AS build

# pip compiles every installed module to bytecode here, so the read-only runtime never has to.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# The package's two native parts, build stage only (the runtime stage has no compiler):
# a C compiler for the funding sensor's chunk scanner (arb_orchestration/domain/_fastfunding.c), and
# Debian's cargo/rustc (1.63 in bookworm; the crate uses the standard library only and is checked to build
# with it) for the route planner's branch-and-bound (arb_orchestration/domain/routing_bnb_rust/).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev cargo \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependency layer. Only pyproject.toml is copied, so a code change does not reinstall the
# dependencies. `pip install .` needs a package to build: an empty stub of the same name (and an
# empty README, which pyproject.toml names) stands in for it, and is uninstalled afterwards so
# the layer holds the dependencies only.
COPY pyproject.toml ./
RUN mkdir arb_orchestration \
    && touch arb_orchestration/__init__.py README.md \
    && pip install . \
    && pip uninstall --yes arb-orchestration \
    && rm -rf arb_orchestration README.md build ./*.egg-info

# Code layer: the real package, without touching the dependencies.
COPY README.md ./
COPY arb_orchestration ./arb_orchestration
# Both native parts are optional in pyproject.toml (an install without a compiler or cargo still works,
# slower); the image must have them, so their absence fails the build here.
RUN pip install --no-deps . \
    && DAGSTER_DEPLOYMENT=local python -c "import arb_orchestration.definitions" \
    && python -c "from arb_orchestration.domain.events import FAST_CHUNK_SCAN; assert FAST_CHUNK_SCAN, 'not built'" \
    && python -c "from arb_orchestration.domain.routing_bnb import library; assert library(), 'not built'"

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv, tini as PID 1, a non-root user; no compilers, no source tree, no pip
# cache, no secrets (they arrive at run time from Kubernetes Secrets as environment variables).
FROM ${PYTHON_IMAGE} AS runtime

# tini reaps the step subprocesses of the multiprocess executor and forwards SIGTERM, so a run
# terminated from the UI (or a pod deleted by the launcher) shuts down cleanly.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# Numeric UID/GID 10001 (also podSecurityContext.runAsUser in helm-values/): Kubernetes can only
# verify `runAsNonRoot` against a numeric USER.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home \
       --shell /usr/sbin/nologin app \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/app \
    && chown -R 10001:10001 /opt/dagster

COPY --from=build /opt/venv /opt/venv

# DAGSTER_HOME matches the chart's global.dagsterHome. The pods mount emptyDir volumes on it and
# on /tmp so the root filesystem can be read-only; matplotlib's cache goes to /tmp as well.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/dagster/app
USER 10001:10001
EXPOSE 3030

ENTRYPOINT ["/usr/bin/tini", "--"]
# Default: serve the code location (what the chart's user deployment runs, given explicitly).
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "arb_orchestration.definitions"]
