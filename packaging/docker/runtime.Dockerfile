# syntax=docker/dockerfile:1
#
# The runtime, assessing a file system image mounted read-only at /assess:
# `assessment-runtime run --once`, findings on stdout, then it exits.
#
# Build from the repository root (the context is the whole workspace):
#   docker build -f packaging/docker/runtime.Dockerfile -t assessment-runtime .
# Run against an unpacked image (a container's root file system, a mounted
# disk image), with the agent configuration and its plugins:
#   docker run --rm \
#     -v /srv/images/web-1:/assess:ro \
#     -v "$PWD/agent.toml:/etc/assessment-runtime/agent.toml:ro" \
#     -v "$PWD/plugins:/etc/assessment-runtime/plugins:ro" \
#     assessment-runtime
# Relative plugin paths in agent.toml are relative to the file. Add
# `--output json` or `--fail-on-findings` after the image name. Files of the
# image readable only by root (/etc/shadow) need `--user 0`; the mount stays
# read-only either way.

# BINARIES=prebuilt takes the binary from prebuilt/assessment-runtime in the
# build context instead of building it (the suite builds the images from
# the binaries it tested; BuildKit skips the unused stage).
ARG BINARIES=source

FROM rust:1.95-bookworm AS binaries-source
WORKDIR /src
COPY . .
# Only the runtime and its dependencies are built: the guest plugins (built
# by the test suite's build script) are not.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p assessment-runtime \
    && install -D -m 0755 target/release/assessment-runtime /out/assessment-runtime

FROM scratch AS binaries-prebuilt
COPY prebuilt/assessment-runtime /out/assessment-runtime

FROM binaries-${BINARIES} AS binaries

FROM debian:bookworm-slim
# CA certificates for registry downloads (the operating system's store, see
# `[network] system_roots`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A user of its own; the state directory (the plugin store) is its only
# writable place.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/assessment-runtime \
        --shell /usr/sbin/nologin assessment \
    && install -d -m 0700 -o assessment -g assessment /var/lib/assessment-runtime \
    && install -d -m 0755 /etc/assessment-runtime /assess
COPY --from=binaries /out/assessment-runtime /usr/local/bin/assessment-runtime
USER assessment
VOLUME ["/var/lib/assessment-runtime"]
ENTRYPOINT ["assessment-runtime", "run", "--once", "--root", "/assess", "--config", "/etc/assessment-runtime/agent.toml"]
