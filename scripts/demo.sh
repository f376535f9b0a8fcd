#!/usr/bin/env bash
# README command 1: the example service under uvicorn with a short, bounded load (~30 s).
# Works on a fresh machine with a Rust toolchain and Python 3.11 + pip; idempotent.
# Arguments go to examples/run_demo.py (--seconds, --requests, --concurrency, --seed, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

venv_with_wheel examples

step "examples/run_demo.py $*"
exec .venv/bin/python examples/run_demo.py "$@"
