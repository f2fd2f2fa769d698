# syntax=docker/dockerfile:1
#
# The Switchyard host serving the reference app (the order service).
#
#   docker build -t switchyard:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 switchyard:0.1.0
#       one replica on a SQLite file inside the container
#   docker run --rm -p 127.0.0.1:8080:8080 -e DATABASE_URL=postgres://… \
#       -e SWITCHYARD_ADMIN_TOKEN=… switchyard:0.1.0
#       a replica of several on one PostgreSQL
#   docker build --target provider-simulator -t switchyard-provider-simulator:0.1.0 .
#       the simulated providers the app's connectors deliver to
#
# Stages: `builder` builds the guest components with components/build.sh
# (the standard route: rustup's wasm32-wasip2 target) and then the host
# (release, --locked); `provider-simulator` is an optional image of the
# loadtests crate's simulator; the last stage, the default, is the host's
# runtime image: Debian bookworm-slim, a non-root user, the binary, the app's
# components in /opt/switchyard/components and deploy/switchyard.container.toml
# as /etc/switchyard/switchyard.toml.
#
# This image has not been built on the project's own machines, which have no
# container engine; scripts/lint-deploy.sh (`just lint-deploy`) lints this
# file with hadolint. See deploy/README.md.

# The toolchain the workspace asks for (rust-version 1.95), on the Debian
# release the runtime stage uses, so the binary finds the glibc it was
# linked against.
FROM rust:1.95-bookworm AS builder

# The guests' standard route. build.sh would add the target itself; doing it
# here keeps the download in its own cached layer.
RUN rustup target add wasm32-wasip2

WORKDIR /src
ENV CARGO_TARGET_DIR=/cache/target

# Guests first: they depend on wit/ and components/ only, so a change to the
# host does not rebuild them. The cache mounts keep crates and compiled
# dependencies between builds; whatever the later stages need is copied out
# of them into /out.
COPY wit/ wit/
COPY components/ components/
# The components the reference app names (deploy/switchyard.container.toml);
# scripts/lint-deploy.sh checks that the two lists agree.
ARG APP_COMPONENTS="order-handler connector-email connector-sms connector-webhook"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    SWITCHYARD_GUEST_ROUTE=standard components/build.sh \
    && mkdir -p /out/components \
    && for name in $APP_COMPONENTS; do \
        cp "components/build/$name.wasm" /out/components/ || exit 1; \
    done

COPY Cargo.toml Cargo.lock ./
COPY host/ host/
COPY loadtests/ loadtests/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    cargo build --release --locked -p switchyard \
    && install -D -m 0755 /cache/target/release/switchyard /out/switchyard

# Only `--target provider-simulator` builds this stage.
FROM builder AS simulator-builder
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/target \
    cargo build --release --locked -p switchyard-loadtests --bin provider-simulator \
    && install -D -m 0755 /cache/target/release/provider-simulator /out/provider-simulator

# What both runtime images share: CA roots for connectors that reach https
# providers, curl for HEALTHCHECK, and an unprivileged user whose numeric id
# lets Kubernetes' runAsNonRoot check it.
FROM debian:bookworm-slim AS runtime-base
# Debian's archive keeps only the current version of a package: a pinned
# version stops installing at the next security update. The base image's
# tag pins the release, and with it the versions' line.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard \
        --create-home --shell /usr/sbin/nologin switchyard

FROM runtime-base AS provider-simulator
COPY --from=simulator-builder /out/provider-simulator /usr/local/bin/provider-simulator
ENV SIMULATOR_LISTEN=0.0.0.0:9090 \
    SIMULATOR_CONTROL=0.0.0.0:9091
USER 10001:10001
# Deliveries on 9090, the control API (faults, the ledger) on 9091.
EXPOSE 9090 9091
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--max-time", "2", "--output", "/dev/null", "http://127.0.0.1:9091/health"]
ENTRYPOINT ["provider-simulator"]

# The default image: the host and the reference app.
FROM runtime-base AS switchyard
COPY --from=builder /out/switchyard /usr/local/bin/switchyard
COPY --from=builder /out/components/ /opt/switchyard/components/
COPY deploy/switchyard.container.toml /etc/switchyard/switchyard.toml
# SWITCHYARD_CONFIG names the config for `serve` and `check`; DATABASE_URL,
# SWITCHYARD_ADMIN_TOKEN, SWITCHYARD_REPLICA_ID and SWITCHYARD_ADVERTISE come
# from whoever runs the container.
ENV SWITCHYARD_CONFIG=/etc/switchyard/switchyard.toml
# The SQLite file of a container without DATABASE_URL lives here.
WORKDIR /var/lib/switchyard
USER 10001:10001
EXPOSE 8080
# SIGTERM starts the drain: the listener closes and in-flight requests get
# [server] drain_timeout_ms (30 s by default) to finish.
STOPSIGNAL SIGTERM
# Liveness only: readiness (/health/ready) depends on the database, and a
# container runtime restarting a replica whose database is down helps no one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--max-time", "2", "--output", "/dev/null", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["switchyard"]
CMD ["serve"]
