# Sourced by scripts/test.sh and scripts/demo.sh: the shared setup of both README commands.
# Creates .venv (Python 3.11 + pip is all a fresh machine needs), installs the dependency
# groups named in "$@" with maturin, and builds the wheel into it (release profile).

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

step() { printf '\n==> %s\n' "$*"; }

venv_with_wheel() {
    step "virtualenv .venv with maturin and the dependency groups: $*"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade "pip>=25.1"
    local groups=()
    for g in "$@"; do groups+=(--group "$g"); done
    .venv/bin/python -m pip install -q "${groups[@]}" "maturin>=1,<2"

    step "build and install the wheel (release profile)"
    VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --release --quiet
}
