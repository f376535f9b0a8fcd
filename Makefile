# Benchmarks (benches/README.md). The venv is the repo's .venv: `bash scripts/test.sh` once,
# then `.venv/bin/pip install --group bench` (or -r benches/python/requirements.txt matplotlib).
PY ?= .venv/bin/python

.PHONY: bench bench-quick bench-guard bench-guard-update

# regoguard against the alternatives, full run: writes benches/results/compare.{md,json,png}
bench:
	$(PY) benches/python/compare.py

# the same, short rounds (under 2 minutes): a smoke run, not a measurement
bench-quick:
	$(PY) benches/python/compare.py --quick --out benches/results/tmp

# instructions per decision under callgrind against benches/results/instructions_baseline.json
bench-guard:
	$(PY) benches/python/guard.py

bench-guard-update:
	$(PY) benches/python/guard.py --update

# Rebuild the extension into .venv quickly while developing (the `fast` profile in Cargo.toml:
# no fat LTO, incremental); `bash scripts/test.sh` builds the release wheel as CI does.
.PHONY: dev
dev:
	VIRTUAL_ENV=$(CURDIR)/.venv PATH=$(CURDIR)/.venv/bin:$$PATH .venv/bin/maturin develop --profile fast --quiet

# Lint and format, as CI runs it (scripts/test.sh calls `make check`): rustfmt, clippy with
# warnings as errors (pedantic is on in Cargo.toml), ruff, mypy --strict, stubtest.
RUFF_PATHS = python tests benches examples

.PHONY: check lint-rust lint-python format

check: lint-rust lint-python

lint-rust:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

lint-python:
	$(PY) -m ruff check $(RUFF_PATHS)
	$(PY) -m ruff format --check $(RUFF_PATHS)
	$(PY) -m mypy
	$(PY) -m mypy.stubtest regoguard._regoguard

# Rewrites the tree into the checked formats.
format:
	cargo fmt --all
	$(PY) -m ruff format $(RUFF_PATHS)
	$(PY) -m ruff check --fix $(RUFF_PATHS)

# Fuzzing (README, "Fuzzing"). `fuzz-rust` runs every cargo-fuzz target in fuzz/ for
# FUZZ_SECONDS each on nightly (`cargo install cargo-fuzz` once); what libFuzzer discovers goes
# to fuzz/target/corpus/<target> (seeded from fuzz/corpus and fuzz/regressions, which it never
# writes), crashes to fuzz/artifacts/<target>. `fuzz-asgi` runs the Hypothesis fuzz of the
# middleware with FUZZ_EXAMPLES examples per property (CI runs it with 150). The stable corpus
# run is part of `cargo test` (crates/regoguard-core/tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60
FUZZ_EXAMPLES ?= 3000
FUZZ_TARGETS = canonical_decode canonical_round_trip request_document l2_entry pubsub_message

.PHONY: fuzz fuzz-rust fuzz-asgi

fuzz: fuzz-rust fuzz-asgi

fuzz-rust:
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t fuzz/regressions/$$t && \
		nice -n 19 cargo +nightly fuzz run --sanitizer none $$t \
			fuzz/target/corpus/$$t fuzz/corpus/$$t fuzz/regressions/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) -max_len=8192 || exit 1; \
	done

fuzz-asgi:
	REGOGUARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 19 $(PY) -m pytest -q -p no:cacheprovider \
		tests/asgi/test_fuzz_scopes.py
