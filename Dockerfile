# gitops-flow's container image (docs/deploy.md, "Container"), built from the project's wheel:
#   python -m build --wheel && docker build -t gitops-flow .
# The release workflow (.github/workflows/release.yml) builds the same wheel it publishes, then this image from it.
# Settings come from the environment (GITOPS_FLOW_REPO, GITOPS_FLOW_STATE, ...; `gitops-flow settings` lists them),
# secrets too (mounted files: GITOPS_FLOW_GIT_TOKEN_FILE, GITOPS_FLOW_GITHUB_TOKEN_FILE). The root filesystem may be
# read-only: the server writes only under /var/lib/gitops-flow (its clone and SQLite file) and /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- install: the wheel and its dependencies into a virtual environment (wheels only: no compiler is needed) ---
FROM ${PYTHON_IMAGE} AS install
ARG EXTRAS=redis
COPY dist/ /tmp/dist/
# one wheel in dist/ (the version the workflow just built); the redis extra: several replicas share Redis
RUN python3 -m venv /opt/gitops-flow \
    && set -- /tmp/dist/gitops_flow-*-py3-none-any.whl \
    && test "$#" -eq 1 -a -f "$1" \
    && /opt/gitops-flow/bin/pip install --no-cache-dir --only-binary=:all: "gitops-flow[${EXTRAS}] @ file://$1"

# --- the image: Python, git (the server clones the flow repository with it) and the virtual environment ---
FROM ${PYTHON_IMAGE}
# git from Debian's bookworm suite, which takes only security fixes: a pinned version would stop building at the next
# fix, so the version is the suite's current one
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/gitops-flow --create-home gitops-flow
COPY --from=install /opt/gitops-flow /opt/gitops-flow
ENV PATH=/opt/gitops-flow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/gitops-flow \
    GITOPS_FLOW_HOST=0.0.0.0 \
    GITOPS_FLOW_PORT=8000 \
    GITOPS_FLOW_DATA_DIR=/var/lib/gitops-flow/data
USER 10001:10001
WORKDIR /var/lib/gitops-flow
EXPOSE 8000
# /healthz answers while the process serves (docs/server.md); no curl in the image, so Python asks (python3: Debian-based images name it so)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GITOPS_FLOW_PORT', '8000'), timeout=4)"]
# SIGTERM (docker stop, Kubernetes) drains: workers finish their requests, 30 s at most, then the process exits
STOPSIGNAL SIGTERM
ENTRYPOINT ["gitops-flow", "serve"]
