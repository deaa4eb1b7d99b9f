# syntax=docker/dockerfile:1
#
# One image for every subcommand: `sendstack-bridge stream | webhooks | commands`
# (the Helm chart runs `stream` as a StatefulSet, the others as Deployments).
#
#   docker build -t sendstack-bridge .
#   docker run --rm --read-only --tmpfs /tmp -v bridge-state:/var/lib/sendstack-bridge \
#     -e BRIDGE_... sendstack-bridge stream
#
# `stream` keeps a durable journal (SQLite) in BRIDGE_JOURNAL_DIR, which the
# image sets to /var/lib/sendstack-bridge/journal. With --read-only, give it a
# volume there (-v somevol:/var/lib/sendstack-bridge, as above; a new named
# volume takes the directory's owner, UID 10001, from the image) or turn the
# journal off with -e BRIDGE_JOURNAL_ENABLED=false; otherwise the stream exits
# at start because it cannot create its journal.
#
# Stage 1 builds a wheel of the bridge and installs it with its dependencies
# into /opt/venv; stage 2 copies only that venv onto a fresh slim base. The
# runtime image has no compiler, no pip cache, no source tree and no build
# tools, runs as an unprivileged numeric user, and writes nothing to its root
# filesystem: every module is byte-compiled here, so it runs with
# readOnlyRootFilesystem (the chart mounts an emptyDir on /tmp and the
# stream's journal volume on /var/lib/sendstack-bridge/journal).

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
    BRIDGE_LOG_FORMAT=json \
    BRIDGE_JOURNAL_DIR=/var/lib/sendstack-bridge/journal

LABEL org.opencontainers.image.title="sendstack-bridge" \
      org.opencontainers.image.description="Bridges the Sendstack logistics platform and Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

# The journal's home, owned by the runtime user: a volume mounted on either
# directory starts out writable (Docker copies the owner into a new named
# volume; Kubernetes uses fsGroup instead).
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin bridge \
 && install -d -o 10001 -g 10001 -m 0750 \
      /var/lib/sendstack-bridge /var/lib/sendstack-bridge/journal

COPY --from=builder /opt/venv /opt/venv

WORKDIR /
# Numeric, so Kubernetes can verify runAsNonRoot without /etc/passwd.
USER 10001:10001

# 9095: /livez, /readyz, /metrics (every subcommand); 8080: webhooks.
EXPOSE 9095 8080

# No HEALTHCHECK: Kubernetes ignores it; the chart probes /livez and /readyz.
ENTRYPOINT ["sendstack-bridge"]
CMD ["stream"]
