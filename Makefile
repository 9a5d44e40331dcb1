# The two commands a newcomer runs: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is tested with; override for your CUDA build.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# The lint tools at the releases the code is checked with: a new release may add rules.
LINT_PINS ?= ruff==0.17.6 mypy==2.4.1 import-linter==2.17

.PHONY: venv test test-fast lint demo clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

# The unit tests and in-process checks only (no test that trains a model): under a minute.
test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# Style and types, and the package's layers as .importlinter declares them.
lint: venv
	$(PY) -m pip install -q $(LINT_PINS)
	$(PY) -m ruff check trainer tests benchmarks train_cls.py train_kd.py
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --config .importlinter

demo: venv
	$(PY) -m trainer.study --preset demo --output-dir runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
