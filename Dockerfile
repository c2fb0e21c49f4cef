# syntax=docker/dockerfile:1
#
# Sluice and the bundled demo origin in one image (used by docker-compose.yml).
#
#   docker build -t sluice:local .
#   docker run --rm -p 8080:8080 sluice:local sluice run --policy /usr/local/share/sluice/policies/default.toml
#     (default.toml listens on 127.0.0.1 inside the container; docker-compose.yml uses
#      deploy/policy.compose.toml, which listens on 0.0.0.0)
#
# Layout of the runtime image:
#   /usr/local/bin/sluice, /usr/local/bin/sluice-origin
#   /usr/local/share/sluice/filters/out/*.wasm    the guest filters (filters/build.sh)
#   /usr/local/share/sluice/policies/             policies/ (their ../filters/out paths resolve)
#   /etc/sluice/policy.toml                       deploy/policy.compose.toml
#   /srv/www                                      origin/www, the demo origin's files
#   /var/lib/sluice/cache                         compiled-module cache (SLUICE_CACHE_DIR)

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build

# cmake: Pingora's build; python3: filters/build.sh reads `cargo metadata`. The wasm targets come from rustup, so filters/build.sh takes
# its normal path (`cargo build --target ...`), not the Debian offline one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake python3 \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-unknown-unknown wasm32-wasip1

WORKDIR /src

# The workspace first: every member's manifest must be present (bench/ is not built), and
# filters/build.sh runs tools/componentize, a member, to make the component guests.
COPY Cargo.toml Cargo.lock ./
COPY proxy/ proxy/
COPY origin/ origin/
COPY host/ host/
COPY bench/ bench/
COPY tools/ tools/

# The guest filters: Proxy-Wasm modules (their own workspace) and components.
COPY filters/ filters/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/filters/target \
    --mount=type=cache,target=/src/target \
    filters/build.sh

# The proxy and the demo origin.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice -p sluice-origin \
 && install -D -m 0755 -t /out/bin target/release/sluice target/release/sluice-origin

# ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# curl: health checks and `docker compose exec sluice curl ...` against the admin port.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sluice --create-home \
        --shell /usr/sbin/nologin sluice

COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /src/filters/out/ /usr/local/share/sluice/filters/out/
COPY policies/ /usr/local/share/sluice/policies/
COPY origin/www/ /srv/www/
COPY deploy/policy.compose.toml /etc/sluice/policy.toml

ENV SLUICE_CACHE_DIR=/var/lib/sluice/cache
# The `sluice` user, by number (runAsNonRoot-friendly).
USER 10001:10001
WORKDIR /var/lib/sluice

# Smoke test of the image itself: the binary runs, every filter module loads, starts
# and configures (this also fills the compiled-module cache).
RUN sluice check --policy /usr/local/share/sluice/policies/default.toml

# 8080 traffic, 9901 admin (/metrics), 8081 the demo origin.
EXPOSE 8080 9901 8081
CMD ["sluice", "run", "--policy", "/etc/sluice/policy.toml"]
