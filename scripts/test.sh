#!/usr/bin/env bash
# README command 2: install everything the tests need, build the wheel, run every test.
# Works on a fresh machine with a Rust toolchain and Python 3.11 + pip; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

step() { printf '\n==> %s\n' "$*"; }

step "redis-server (Debian package; the Redis tests start their own on loopback)"
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

step "virtualenv .venv with maturin, pytest and the test dependencies"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q --group testing "maturin>=1,<2"

step "build and install the wheel (release profile)"
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release --quiet

step "cargo test"
cargo test --quiet

step "pytest"
.venv/bin/python -m pytest -q "$@"
