# streams image: the worker, `streams topics apply` and the HTTP API (one entry point).
# Multi-stage: the build stage installs the package (the same `pip install .` of
# pyproject.toml that `make install` does, without the dev extras) into a venv; the final
# stage copies only that venv, the catalog and the schemas, and runs as a non-root user.
# The Helm chart (helm/streams) defaults to this image: docker build -t streams:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# wheels exist for every pinned dependency on linux/amd64 and arm64: no compiler needed
RUN python -m venv /opt/streams
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/streams/bin/pip install --no-input . && /opt/streams/bin/streams --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="streams" \
      org.opencontainers.image.description="Kafka-native background-job pipeline"
ENV PATH=/opt/streams/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMS_CATALOG_PATH=/app/topics.yaml \
    STREAMS_SCHEMAS_DIR=/app/schemas \
    STREAMS_HOME=/var/lib/streams
RUN groupadd --system --gid 10001 streams \
 && useradd --system --uid 10001 --gid streams --home-dir /var/lib/streams --no-create-home streams \
 && mkdir -p /var/lib/streams && chown streams:streams /var/lib/streams
COPY --from=build /opt/streams /opt/streams
WORKDIR /app
COPY topics.yaml ./topics.yaml
COPY schemas ./schemas
USER 10001:10001
EXPOSE 6066 8080
ENTRYPOINT ["streams"]
CMD ["worker"]
