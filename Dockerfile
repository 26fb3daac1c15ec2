# syntax=docker/dockerfile:1
# zipIQ in a container: a Rust stage builds the release `zipiq` binary from the committed Cargo.lock (--locked), and
# a small Debian runtime stage runs it as an unprivileged user. See README "Containers" (and compose.yaml for a
# cluster of an origin and two edges on one PostgreSQL).
#
#   docker build -t zipiq:local .          (or: podman build -t zipiq:local .)
#   docker run --rm -p 8080:8080 -p 8189:8189/udp -e ZIPIQ_MEDIA__PUBLIC_IPS='["203.0.113.7"]' zipiq:local
#
# The binary needs only the C library and libgcc_s at run time (SQLite is built in, TLS is rustls with its own
# root certificates, jemalloc is linked statically), so the runtime stage installs no package.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-trixie
ARG RUNTIME_IMAGE=docker.io/library/debian:trixie-slim

FROM ${RUST_IMAGE} AS build
# jemalloc's build runs make; gcc and libc6-dev (ring, bundled SQLite) are in the Rust image already. Not pinned:
# a build tool of a throwaway stage, whose version in a Debian stable release moves only with fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds (BuildKit, and podman/buildah).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p zipiq --bin zipiq \
    && install -D -m 0755 target/release/zipiq /out/zipiq

FROM ${RUNTIME_IMAGE} AS runtime
# The same user the systemd unit uses, with a fixed uid so volume and secret ownership can be set from the host.
ARG ZIPIQ_UID=10001
RUN groupadd --system --gid "${ZIPIQ_UID}" zipiq \
    && useradd --system --uid "${ZIPIQ_UID}" --gid zipiq --home-dir /var/lib/zipiq --no-create-home \
        --shell /usr/sbin/nologin zipiq \
    && install -d -o zipiq -g zipiq -m 0750 /var/lib/zipiq /var/lib/zipiq-shared \
    && install -d -m 0755 /etc/zipiq
COPY --from=build /out/zipiq /usr/local/bin/zipiq
# Every key with its default and comment (the same text is built into the binary); mount your own file over it, or
# set keys as ZIPIQ_<SECTION>__<KEY> variables.
COPY config.toml /etc/zipiq/config.toml
COPY docker/healthcheck.sh /usr/local/bin/zipiq-healthcheck
ENV ZIPIQ_CONFIG=/etc/zipiq/config.toml
# Relative paths of the configuration (./data/zipiq.db, ./data/ipfs, ./data/jwt-key, ./data/wallets) land here.
WORKDIR /var/lib/zipiq
VOLUME ["/var/lib/zipiq"]
USER ${ZIPIQ_UID}:${ZIPIQ_UID}
# http.listen and media.udp_listen of config.toml (the UDP port must be published under the same number, and
# media.public_ips set to the address clients reach, because ICE candidates carry it).
EXPOSE 8080/tcp 8189/udp
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/zipiq-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/zipiq"]
CMD ["serve"]
