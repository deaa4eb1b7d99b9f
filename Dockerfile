# syntax=docker/dockerfile:1
#
# One image for every subcommand: `sendstack-bridge stream | webhooks | commands`
# (the Helm chart runs each as its own Deployment from this image).
#
#   docker build -t sendstack-bridge .
#   docker run --rm --read-only --tmpfs /tmp -e BRIDGE_... sendstack-bridge stream
#
# Stage 1 builds a wheel of the bridge and installs it with its dependencies
# into /opt/venv; stage 2 copies only that venv onto a fresh slim base. The
# runtime image has no compiler, no pip cache, no source tree and no build
# tools, runs as an unprivileged numeric user, and writes nothing to its root
# filesystem: every module is byte-compiled here, so it runs with
# readOnlyRootFilesystem (the chart mounts an emptyDir on /tmp).

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Dependencies first, in their own layer: it is rebuilt only when
# pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

# Then the application, as a wheel (what a release would publish).
COPY README.md ./
COPY bridge ./bridge
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv


FROM python:3.11-slim AS runtime

# PYTHONDONTWRITEBYTECODE: everything is compiled already and / is read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    BRIDGE_LOG_FORMAT=json

LABEL org.opencontainers.image.title="sendstack-bridge" \
      org.opencontainers.image.description="Bridges the Sendstack logistics platform and Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin bridge

COPY --from=builder /opt/venv /opt/venv

WORKDIR /
# Numeric, so Kubernetes can verify runAsNonRoot without /etc/passwd.
USER 10001:10001

# 9095: /livez, /readyz, /metrics (every subcommand); 8080: webhooks.
EXPOSE 9095 8080

# No HEALTHCHECK: Kubernetes ignores it; the chart probes /livez and /readyz.
ENTRYPOINT ["sendstack-bridge"]
CMD ["stream"]
