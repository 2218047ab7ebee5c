# syntax=docker/dockerfile:1
#
# The reference control plane: `assessment-control-plane serve` over mutual
# TLS on 8443, with /metrics, /healthz and /readyz over plain HTTP on 9465.
#
# Build from the repository root (the context is the whole workspace):
#   docker build -f packaging/docker/control-plane.Dockerfile -t assessment-control-plane .
# Run (the database and the CA live in the volume; back it up):
#   docker run -d -p 8443:8443 -p 127.0.0.1:9465:9465 \
#     -e ACP_ADMIN_TOKEN="$(openssl rand -hex 32)" \
#     -v acp-data:/var/lib/assessment-control-plane \
#     assessment-control-plane --tls-name cp.example.com
# Arguments after the image name are added to `serve` (see `serve --help`);
# `--listen` is already given.

# BINARIES=prebuilt takes the binary from prebuilt/assessment-control-plane in the
# build context instead of building it (the suite builds the images from
# the binaries it tested; BuildKit skips the unused stage).
ARG BINARIES=source

FROM rust:1.95-bookworm AS binaries-source
WORKDIR /src
COPY . .
# Only the control plane and its dependencies are built (no other member's
# build script runs). The caches keep crates and build output between
# builds; the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p assessment-control-plane \
    && install -D -m 0755 target/release/assessment-control-plane /out/assessment-control-plane

FROM scratch AS binaries-prebuilt
COPY prebuilt/assessment-control-plane /out/assessment-control-plane

FROM binaries-${BINARIES} AS binaries

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A user of its own; the data directory is its only writable place.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/assessment-control-plane \
        --shell /usr/sbin/nologin acp \
    && install -d -m 0700 -o acp -g acp /var/lib/assessment-control-plane
COPY --from=binaries /out/assessment-control-plane /usr/local/bin/assessment-control-plane
USER acp
# The database, and the CA beside it in ca/ (its key never leaves this volume).
ENV ACP_DATABASE=/var/lib/assessment-control-plane/control-plane.db \
    ACP_METRICS_LISTEN=0.0.0.0:9465 \
    ACP_LOG_FORMAT=json
VOLUME ["/var/lib/assessment-control-plane"]
# 8443: the API (mutual TLS). 9465: metrics and health (plain HTTP; publish
# it only to the monitoring network).
EXPOSE 8443 9465
# The slim image has no curl or wget: bash's /dev/tcp asks the metrics
# listener for /healthz (the API port speaks only TLS).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9465 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["assessment-control-plane", "serve", "--listen", "0.0.0.0:8443"]
