# Freshet: `make run` runs the platform on its embedded defaults, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
LLM ?=
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test lint bench-freshness bench-throughput bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp when it installs: for any x86-64 CPU with AVX2
# (GGML_NATIVE=OFF), not for the build machine's own instructions. A native build on a CPU that
# advertises AMX used its tile instructions, which the virtual machine did not run (SIGILL in
# libggml-cpu at the first answer); and pip's wheel cache would hand a wheel built natively on
# one machine to another, so this one install skips the cache.
LLM_INSTALL = CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install --quiet --no-cache-dir -r requirements-llm.txt

# Reinstall only when a requirements file changes.
$(VENV)/.installed-dev: $(BIN)/python requirements.txt requirements-dev.txt requirements-llm.txt
	$(LLM_INSTALL)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.installed: $(BIN)/python requirements.txt
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# The local model server (llama-cpp-python compiles llama.cpp: see LLM_INSTALL).
$(VENV)/.installed-llm: $(BIN)/python requirements-llm.txt
	$(LLM_INSTALL)
	touch $@

# The settings read the key from FRESHET_VAR_DIR/secret_key (default var/) when DJANGO_SECRET_KEY
# is not set, so every command run from a shell (manage.py, daphne, celery) finds this one.
FRESHET_VAR_DIR ?= var
SECRET_KEY_FILE := $(FRESHET_VAR_DIR)/secret_key

$(SECRET_KEY_FILE):
	mkdir -p $(dir $@)
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# Debian packages the tests need (Chromium for the browser tests).
system-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# `make run LLM=local` also serves SmolLM2-135M-Instruct on 127.0.0.1:8080 for generated answers.
ifeq ($(LLM),local)
run: $(VENV)/.installed-llm
export LLM_BASE_URL ?= http://127.0.0.1:8080/v1
export LLM_MODEL ?= smollm2
endif

run: $(VENV)/.installed $(SECRET_KEY_FILE)
	@$(BIN)/python -c "import os, redis; redis.Redis.from_url(os.environ['REDIS_URL'], socket_connect_timeout=2).ping()" 2>/dev/null || { \
	  echo "Redis does not answer at $(REDIS_URL)."; \
	  echo "Start one:  redis-server --daemonize yes --port 6379   (or set REDIS_URL to yours)"; exit 1; }
	@$(BIN)/python manage.py migrate --noinput -v0 && \
	  $(BIN)/python manage.py collectstatic --noinput -v0 && \
	  $(BIN)/python manage.py ensure_admin && \
	  echo "Freshet starting on http://127.0.0.1:$(PORT)/ ; where to sign in comes in a box once it is up." && \
	  rm -rf "$${PROMETHEUS_MULTIPROC_DIR:-$(FRESHET_VAR_DIR)/prometheus}" && \
	  PORT=$(PORT) FRESHET_WEB_PORT=$(PORT) exec $(BIN)/honcho -f platform/Procfile$(if $(filter local,$(LLM)),.llm,) -d . start

test: $(VENV)/.installed-dev system-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench-freshness: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/freshness.py

bench-throughput: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/throughput.py

bench: bench-freshness bench-throughput

clean:
	rm -rf var staticfiles .pytest_cache
