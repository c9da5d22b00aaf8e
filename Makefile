# The two commands a newcomer needs:
#   make dev    create .venv, install, start the local world + Dagster UI
#   make test   create .venv, install, fetch the Apache Kafka jars, run every test
PYTHON ?= python3
# rustup puts cargo in ~/.cargo/bin, which a non-login shell may not have on its PATH (the install builds the
# route planner's Rust library with it; without cargo it would silently skip it and the tests would fail)
export PATH := $(PATH):$(HOME)/.cargo/bin
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dev test install kafka-jars bench clean

$(STAMP): pyproject.toml arb_orchestration/domain/_fastfunding.c $(wildcard arb_orchestration/domain/routing_bnb_rust/src/*.rs) arb_orchestration/domain/routing_bnb_rust/Cargo.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(VENV)/bin/arb-orchestration dev

kafka-jars:
	scripts/kafka-broker.sh fetch

test: $(STAMP) kafka-jars
	$(PY) -m pytest -p no:cacheprovider arb_orchestration_tests

bench: $(STAMP) kafka-jars
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .dagster_home
