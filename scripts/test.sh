#!/usr/bin/env bash
# README command 2: install everything the tests need, build the wheel, run every test.
# Works on a fresh machine with a Rust toolchain and Python 3.11 + pip; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
. scripts/_oracle.sh

# The Redis tests start their own servers on loopback: plain, TLS, a Cluster (made with
# redis-cli), a Sentinel.
step "redis-server, redis-cli (Debian packages)"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
redis-server --version

venv_with_wheel testing lint
install_opa_oracle

step "make check (rustfmt, clippy -D warnings, ruff, mypy --strict, stubtest)"
make --no-print-directory check PY=.venv/bin/python

step "cargo test"
cargo test --workspace --quiet

step "pytest"
.venv/bin/python -m pytest -q "$@"
