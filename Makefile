# The two commands a newcomer runs: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is tested with; override for your CUDA build.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

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

lint: venv
	$(PY) -m pip install -q ruff mypy
	$(PY) -m ruff check trainer tests benchmarks train_cls.py train_kd.py
	$(PY) -m mypy

demo: venv
	$(PY) -m trainer.study --preset demo --output-dir runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
