#!/usr/bin/env bash
# README command 1: the example service under uvicorn with a short, bounded load (~30 s).
# Works on a fresh machine with a Rust toolchain and Python 3.11 + pip; idempotent.
# Arguments go to examples/run_demo.py (--seconds, --requests, --concurrency, --seed, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

step() { printf '\n==> %s\n' "$*"; }

step "virtualenv .venv with maturin and the example's dependencies (fastapi, uvicorn, httpx)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q --group examples "maturin>=1,<2"

step "build and install the wheel (release profile)"
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release --quiet

step "examples/run_demo.py $*"
exec .venv/bin/python examples/run_demo.py "$@"
