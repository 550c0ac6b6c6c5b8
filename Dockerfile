# ---- build stage -----------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# 1) Build the dependency graph alone against placeholder sources, so that this
#    (slow) layer is reused as long as Cargo.toml and Cargo.lock are unchanged.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin spektr-server \
 && rm -rf src \
           target/release/spektr-server* \
           target/release/deps/spektr_server-* \
           target/release/deps/libspektr_server-* \
           target/release/.fingerprint/spektr-server-*

# 2) Build the real crate. migrations/ must be present: sqlx embeds it at
#    compile time. touch makes sure cargo never trusts the placeholder build.
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin spektr-server \
 && cp target/release/spektr-server /usr/local/bin/spektr-server

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 spektr \
 && useradd --system --uid 10001 --gid spektr --home-dir /app \
            --no-create-home --shell /usr/sbin/nologin spektr

WORKDIR /app
# The default SQLite database lives in ./data/ (i.e. /app/data).
RUN mkdir -p /app/data && chown spektr:spektr /app/data

COPY --from=builder /usr/local/bin/spektr-server /usr/local/bin/spektr-server

ENV BIND_ADDR=0.0.0.0:8080
EXPOSE 8080

USER 10001:10001
ENTRYPOINT ["/usr/local/bin/spektr-server"]
