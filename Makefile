# The developer's front door. `make demo` and `make test` do all the set-up on a fresh machine
# (Python >= 3.10 and a Rust toolchain): a virtualenv in .venv, the dev tools, the extension.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: install build-dev demo test test-rust test-python lint format mypy wheel bench all

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

# stubtest compares _core.pyi with the compiled module, so lint builds it first. The win32 pass
# keeps POSIX-only calls (os.register_at_fork) behind platform checks for the Windows wheel.
lint: build-dev
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/mypy --strict python/workhorse
	$(VENV)/bin/mypy --strict --platform win32 python/workhorse
	$(PY) -m mypy.stubtest workhorse._core


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
