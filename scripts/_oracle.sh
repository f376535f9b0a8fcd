# Sourced by scripts/test.sh: the OPA Go engine as the tests' oracle (tests/opa_oracle.py).
# PyPI's opa-golib-python-bindings wheel declares Python >= 3.14 but its Go c-shared library
# and ctypes wrapper work on 3.11, so it is downloaded for 3.14 and unzipped, not installed.
# Unreachable registry: the oracle tests skip with a message saying so (never silently).

ORACLE_VERSION=0.4.4
ORACLE_DIR="$PWD/.venv/opa-oracle-$ORACLE_VERSION"

install_opa_oracle() {
    step "OPA oracle: opa-golib-python-bindings==$ORACLE_VERSION into $ORACLE_DIR"
    if [ ! -f "$ORACLE_DIR/opa_bindings/engine.py" ]; then
        local tmp
        tmp=$(mktemp -d)
        if .venv/bin/python -m pip download -q --no-deps --python-version 3.14 --only-binary=:all: \
            "opa-golib-python-bindings==$ORACLE_VERSION" -d "$tmp"; then
            .venv/bin/python -m zipfile -e "$tmp"/opa_golib_python_bindings-*.whl "$ORACLE_DIR"
        else
            echo "OPA oracle could not be downloaded: the oracle tests will skip"
        fi
        rm -rf "$tmp"
    fi
    export REGOGUARD_OPA_ORACLE="$ORACLE_DIR"
}
