# Two commands do everything on a fresh machine:
#   make train   set up (first run only), then run `vla-rl-train` with its defaults; ARGS="..." adds overrides
#   make test    set up (first run only), then lint, type-check and run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export RAY_AUTH_MODE ?= disabled

.PHONY: setup train test lint bench

setup:
	@VENV=$(VENV) bash .ci/setup.sh

train: setup
	$(VENV)/bin/vla-rl-train $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

bench: setup
	$(VENV)/bin/python benchmarks/env_throughput.py
