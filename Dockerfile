# mcp-taskqueue as a team server (docs/deployment.md). Two stages: build a virtualenv with the
# package installed, then copy only that venv into a slim runtime that runs as a non-root user.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mcp_taskqueue ./mcp_taskqueue
COPY prompts ./prompts
COPY schemas ./schemas
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ".[postgres,secrets,tracing]"

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKQUEUE_DB=/data/tasks.db \
    TASKQUEUE_SERVER__TRANSPORT=http \
    TASKQUEUE_SERVER__HOST=0.0.0.0 \
    TASKQUEUE_SERVER__PORT=8765 \
    TASKQUEUE_LOGGING__FORMAT=json \
    TASKQUEUE_LOGGING__LEVEL=INFO
RUN groupadd --system --gid 10001 taskqueue \
    && useradd --system --uid 10001 --gid taskqueue --home-dir /data --shell /usr/sbin/nologin taskqueue \
    && mkdir -p /data \
    && chown taskqueue:taskqueue /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8765
# /healthz answers in milliseconds without touching the store lock; python is all the image has
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TASKQUEUE_SERVER__PORT', '8765'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
# Settings come from TASKQUEUE_* (above), a mounted mcp-taskqueue.toml (TASKQUEUE_CONFIG) or flags.
ENTRYPOINT ["mcp-taskqueue", "serve"]
