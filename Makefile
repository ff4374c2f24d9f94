# The developer's front door. `make demo` and `make test` do all the set-up on a fresh machine
# (Python >= 3.10 and a Rust toolchain): a virtualenv in .venv, the dev tools, the extension.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: install build-dev demo test test-rust test-python lint format mypy wheel bench bench-queue all

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q "maturin>=1.7,<2" "pytest>=7" "pytest-timeout>=2" "ruff>=0.5" "mypy>=1.10" \
		"prometheus-client>=0.17" "opentelemetry-api>=1.20" "opentelemetry-sdk>=1.20"

build-dev: install
	$(VENV)/bin/maturin develop --release --quiet

demo: build-dev
	$(PY) -m workhorse.demo

test-rust: install
	cargo test --quiet

test-python: build-dev
	$(PY) -m pytest -q

test: test-rust test-python

lint: install
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/mypy --strict python/workhorse

format: install
	cargo fmt
	$(VENV)/bin/ruff check --fix python tests benches

wheel: install
	$(VENV)/bin/maturin build --release --out dist

bench: build-dev
	$(PY) -m pip install -q "apscheduler>=3.10,<4"
	$(PY) benches/bench_burst.py
	$(PY) benches/bench_interval.py
	$(PY) benches/bench_scale.py
	$(PY) benches/bench_latency.py

all: lint test

# The queue benchmark against dramatiq, huey, arq, saq, rq and celery on one redis-server that
# the script starts itself. The peers go into their own virtualenv, never into workhorse's
# dependencies. `make bench-queue BENCH_ARGS="--quick --skip celery"` passes options through.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

$(BENCH_PY):
	python3 -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip

bench-queue: $(BENCH_PY)
	$(BENCH_PY) -m pip install -q "maturin>=1.7,<2" "dramatiq[redis]" huey arq saq rq \
		"celery[redis]" redis
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) PYO3_PYTHON=$(abspath $(BENCH_PY)) \
		$(BENCH_VENV)/bin/maturin develop --release --quiet
	$(BENCH_PY) benches/bench_queue.py $(BENCH_ARGS)
