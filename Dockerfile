# airlock in a container. Not built in this project's CI (its machines have
# no Docker engine); see docs/agents.md for how to run it.
#
#   docker build -t airlock .
#   docker run -d --name airlock -p 127.0.0.1:8080:8080 -v airlock-data:/data airlock
#
# /data is AIRLOCK_HOME: the CA, airlock.toml, the secret store and the
# audit log. Inside the container the config must listen on 0.0.0.0:8080.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p airlock

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /data airlock
COPY --from=build /src/target/release/airlock /usr/local/bin/airlock
ENV AIRLOCK_HOME=/data
VOLUME /data
USER airlock
EXPOSE 8080
ENTRYPOINT ["airlock"]
CMD ["serve"]
