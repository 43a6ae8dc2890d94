# syntax=docker/dockerfile:1
#
# docker build -t geomatch .
# docker run --rm -p 8080:8080 geomatch                      # all services, embedded mode
# docker run --rm geomatch serve --service matching          # one service (Redis mode)

# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /src

# Whole workspace in one go: every member's manifest has to be present for cargo to
# resolve the workspace, so the usual "copy manifests first" trick needs dummy sources
# for each crate and breaks as crates are added. BuildKit cache mounts keep the
# registry and the target directory between builds instead, which is what makes
# rebuilds fast, and stay correct whatever the workspace looks like.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p geomatch \
 && install -D -m 0755 target/release/geomatch /out/geomatch

# ---- run ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin geomatch

COPY --from=builder /out/geomatch /usr/local/bin/geomatch

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["geomatch"]
CMD ["serve"]
