# The developer's front door. `make demo` and `make test` do all the set-up on a fresh machine
# (Python >= 3.10 and a Rust toolchain): a virtualenv in .venv, the dev tools, the extension.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: install build-dev demo test test-quick test-faults test-rust test-python lint format wheel sdist bench bench-queue soak screenshots all

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# playwright drives Debian's chromium (/usr/bin/chromium) in the dashboard's browser tests; its
# own browser download (`playwright install`) is never used.
install: $(PY)
	$(PY) -m pip install -q "maturin>=1.9.3,<2" "pytest>=7" "pytest-timeout>=2" "hypothesis>=6.100" "ruff>=0.5" "mypy>=1.10" \
		"prometheus-client>=0.17" "opentelemetry-api>=1.20" "opentelemetry-sdk>=1.20" "playwright>=1.40"

build-dev: install
	$(VENV)/bin/maturin develop --release --quiet

demo: build-dev
	$(PY) -m workhorse.demo

test-rust: install
	cargo test --quiet

test-python: build-dev
	$(PY) -m pytest -q

# Everything but the tests marked slow (the long fault rows under tests/faults): for quick loops.
test-quick: build-dev
	$(PY) -m pytest -q -m "not slow"

# The fault matrix alone (RELIABILITY.md section 4): real processes, signals, Redis restarts.
test-faults: build-dev
	$(PY) -m pytest -q tests/faults

test: test-rust test-python

# stubtest compares _core.pyi with the compiled module, so lint builds it first. The win32 pass
# keeps POSIX-only calls (os.register_at_fork) behind platform checks for the Windows wheel.
lint: build-dev
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches docs
	$(VENV)/bin/mypy --strict python/workhorse
	$(VENV)/bin/mypy --strict --platform win32 python/workhorse
	$(PY) -m mypy.stubtest workhorse._core

format: install
	cargo fmt
	$(VENV)/bin/ruff check --fix python tests benches docs

# Wheels as PyPI gets them: abi3 for CPython >= 3.10, manylinux2014 (glibc >= 2.17, linked by
# zig against glibc 2.17's symbols), with the dist profile that pyproject.toml names (fat LTO, one
# codegen unit, stripped). x86_64 and aarch64: a target other than the host's is cross-compiled
# where rustup can add its standard library. auditwheel must confirm manylinux_2_17 for each.
WHEEL_TARGETS := x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu

wheel: install
	$(PY) -m pip install -q "ziglang>=0.17,<0.18" "auditwheel>=6.1,<7"
	rm -f dist/workhorse-*.whl
	host=$$(rustc -vV | sed -n 's/^host: //p'); \
	for target in $(WHEEL_TARGETS); do \
		if [ "$$target" != "$$host" ] && ! rustup target add "$$target"; then \
			echo "make wheel: no $$target wheel: rustup could not add its standard library"; \
			continue; \
		fi; \
		PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --zig \
			--compatibility manylinux2014 --target "$$target" --out dist || exit 1; \
	done
	for whl in dist/workhorse-*.whl; do \
		shown=$$($(VENV)/bin/auditwheel show "$$whl") && echo "$$shown" && \
		echo "$$shown" | grep -q '"manylinux_2_17_' || exit 1; \
	done
	ls -l dist/workhorse-*.whl

# The source distribution: `pip install` builds it with maturin and a Rust toolchain.
sdist: install
	rm -f dist/workhorse-*.tar.gz
	$(VENV)/bin/maturin sdist --out dist

bench: build-dev
	$(PY) -m pip install -q "apscheduler>=3.10,<4" uvloop
	$(PY) benches/bench_burst.py
	$(PY) benches/bench_interval.py
	$(PY) benches/bench_scale.py
	$(PY) benches/bench_latency.py
	$(PY) benches/bench_executor.py

all: lint test

# The dashboard's pictures in the README (docs/dashboard-*.png): a demo queue with a bit of
# everything, photographed page by page by chromium (about a minute: the chart fills up).
screenshots: build-dev
	$(PY) docs/screenshots.py

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

# Fault-matrix row 21: a million jobs through 4 worker processes under kill -9, CLIENT KILL and a
# Redis restart, with a ledger outside Redis as the truth (a few minutes; its own redis-server).
# `make soak SOAK_ARGS="--jobs 100000 --fsync everysec"` passes options through.
soak: build-dev
	$(PY) benches/soak.py $(SOAK_ARGS)
