#!/usr/bin/env bash
# The whole test suite: installs what the end-to-end tests drive (curl,
# openssl, python3, git, node and npm, go (the conformance suite builds a
# net/http client), unshare and ip for the network
# namespace test, a D-Bus session with gnome-keyring for the keychain
# source; requests, httpx (with h2), grpcio, websockets, Authlib and google-auth in target/test-venv; undici and the MCP
# TypeScript SDK from tests/node/package-lock.json in target/test-node), then runs
# `cargo test --workspace`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool → the Debian package that provides it.
declare -A package=(
    [curl]=curl [openssl]=openssl [python3]="python3 python3-venv" [git]=git
    [node]=nodejs [npm]=npm [go]=golang-go [unshare]=util-linux [ip]=iproute2
    [dbus-run-session]=dbus-daemon [gnome-keyring-daemon]=gnome-keyring [secret-tool]=libsecret-tools
)
missing=() packages=()
for tool in "${!package[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing+=("$tool")
        read -ra more <<<"${package[$tool]}"
        packages+=("${more[@]}")
    fi
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates "${packages[@]}"
    else
        echo "missing: ${missing[*]}; install the Debian packages ${packages[*]} (or your system's equivalents) and re-run" >&2
        exit 1
    fi
fi

venv=target/test-venv
if ! "$venv/bin/python" -c 'import requests, httpx, h2, grpc, websockets, authlib, google.auth, boto3' >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check requests 'httpx[http2]' grpcio "websockets>=15" Authlib google-auth boto3
fi
export AIRLOCK_TEST_PYTHON="$PWD/$venv/bin/python"

# undici and the MCP SDK, pinned by the committed lockfile; reinstalled when it changes.
node_dir=target/test-node
if ! cmp -s tests/node/package-lock.json "$node_dir/package-lock.json" || [ ! -f "$node_dir/node_modules/undici/package.json" ] \
    || [ ! -f "$node_dir/node_modules/@modelcontextprotocol/sdk/package.json" ]; then
    mkdir -p "$node_dir"
    cp tests/node/package.json tests/node/package-lock.json "$node_dir/"
    npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
fi
export AIRLOCK_TEST_NODE_MODULES="$PWD/$node_dir/node_modules"

cargo test --workspace --locked "$@"

# The README's set-up and walkthrough, as written, in a fresh clone.
python3 scripts/readme-check.py
