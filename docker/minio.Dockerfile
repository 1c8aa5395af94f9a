# MinIO built from source: MinIO publishes source only (no minio/minio images any more).
# The version is the one tools/servers.py pins for the tests; docker-compose.yml passes it and
# tests/test_compose.py checks both against the pin.
#   docker build -f docker/minio.Dockerfile docker
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

FROM golang:1.26 AS build
ARG MINIO_VERSION
# Static binary: the runtime image needs no Go or C libraries. -mod=mod as tools/servers.py.
ENV CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN=/out
RUN go install -trimpath -ldflags="-s -w" "github.com/minio/minio@${MINIO_VERSION}"

FROM debian:bookworm-slim
ARG MINIO_VERSION
# curl: the compose healthcheck probes /minio/health/ready (the image has no `mc`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --home-dir /data minio \
 && mkdir -p /data /var/lib/minio-events \
 && chown minio /data /var/lib/minio-events
COPY --from=build /out/minio /usr/local/bin/minio
LABEL org.opencontainers.image.source="https://github.com/minio/minio" \
      org.opencontainers.image.version="${MINIO_VERSION}"
# Fresh named volumes take these folders' owner; volumes written by the old root-run
# minio/minio image need `chown -R 10002` once (docs/operations.md).
USER minio
EXPOSE 9000 9001
ENTRYPOINT ["minio"]
CMD ["server", "/data", "--console-address", ":9001"]
