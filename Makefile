# The README's two commands: `make demo` (install, then the offline DGPO demo) and `make test` (install, lint, tests).
# torch is installed first, pinned, so that pip resolves its CPU build on a CPU machine instead of a multi-GB CUDA one.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test lint format

install:
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev,deepspeed]"

demo: install
	$(PYTHON) -m scope_trl.cli demo

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest tests

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .
