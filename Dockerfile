# vadvisor: monitors every VM on a libvirt host (successor of vAdvisor). See docs/docker.md.
#
#   docker build -t vadvisor .
#   docker run --volume=/var/run/libvirt/libvirt-sock-ro:/var/run/libvirt/libvirt-sock-ro:Z \
#     --name vadvisor --publish 8181:8181 --detach=true vadvisor
#
# Arguments after the image name go to the agent (e.g. --statsd-host H, -v).

# ---- manifests: only what dependency resolution needs ------------------------------------
# Copies every Cargo.toml and Cargo.lock of the context (every workspace member, whatever
# the members are), so the dependency layer below is rebuilt only when one of them changes.
FROM debian:bookworm-slim AS manifests
WORKDIR /src
COPY . .
RUN mkdir /manifests \
 && find . \( -name Cargo.toml -o -name Cargo.lock -o -name rust-toolchain -o -name rust-toolchain.toml \
             -o -path ./.cargo/config.toml \) -type f -exec cp -p --parents {} /manifests/ \;

# ---- build stage ------------------------------------------------------------------------
FROM rust:1-bookworm AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# 1. The dependencies, in their own cached layer: every package gets stub sources, the
#    build compiles all crates.io dependencies of vadvisor, then the stubs are removed.
COPY --from=manifests /manifests/ ./
RUN echo 'fn main() {}' > /tmp/main.rs \
 && find . -name Cargo.toml -execdir mkdir -p src \; -execdir touch src/lib.rs \; -execdir cp /tmp/main.rs src/ \; \
 && cargo build --release --locked -p vadvisor \
 && find . -path ./target -prune -o -type d -name src -prune -exec rm -rf {} + \
 && rm /tmp/main.rs

# 2. The workspace itself. COPY keeps the context's mtimes, which may be older than the
#    stub build: touch the sources so cargo rebuilds every workspace crate.
COPY . .
RUN find . -path ./target -prune -o -type f -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p vadvisor \
 && install -m 0755 target/release/vadvisor /usr/local/bin/vadvisor \
 && /usr/local/bin/vadvisor --version

# ---- run stage --------------------------------------------------------------------------
FROM debian:bookworm-slim

# libvirt0 is the client library; the agent talks to the host's libvirtd through the
# bind-mounted read-only socket. No TLS is used, so no ca-certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /usr/local/bin/vadvisor /usr/local/bin/vadvisor
# The built-in defaults, as a file to read or replace (-v my.yaml:/etc/vadvisor/config.yaml:ro).
COPY config.example.yaml /etc/vadvisor/config.yaml
# cAdvisor "application metrics": cAdvisor reads this file inside the container and scrapes
# the endpoint it names (vAdvisor's label and file).
COPY docker/cadvisor_config.json /var/vadvisor/cadvisor_config.json
# Licences: the agent's own and those of every crate linked into it.
COPY LICENSE NOTICE THIRD-PARTY-LICENSES.md /usr/share/doc/vadvisor/

LABEL io.cadvisor.metric.prometheus-vadvisor="/var/vadvisor/cadvisor_config.json" \
      org.opencontainers.image.title="vadvisor" \
      org.opencontainers.image.description="Monitors every VM on a libvirt host and exports what it sees (REST, Prometheus, StatsD); successor of vAdvisor" \
      org.opencontainers.image.licenses="GPL-3.0-or-later"

EXPOSE 8181

# Runs as root: the libvirt read-only socket is root-owned (0777 on Debian, often
# restricted elsewhere). See docs/docker.md.

# Probes http://127.0.0.1:<port of http.listen in /etc/vadvisor/config.yaml>/healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/vadvisor", "--healthcheck"]

# The agent is PID 1 and exits 0 within ~4 s of SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vadvisor"]
