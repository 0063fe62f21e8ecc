#!/usr/bin/env bash
# The whole test suite: installs what the end-to-end tests drive (curl,
# openssl, python3; requests and httpx in target/test-venv), then runs
# `cargo test --workspace`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in curl openssl python3 git; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl openssl python3 python3-venv git ca-certificates
    else
        echo "missing: ${missing[*]}; install them and re-run" >&2
        exit 1
    fi
fi

venv=target/test-venv
if ! "$venv/bin/python" -c 'import requests, httpx' >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check requests httpx
fi
export AIRLOCK_TEST_PYTHON="$PWD/$venv/bin/python"

cargo test --workspace --locked "$@"
