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
