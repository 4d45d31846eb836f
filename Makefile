# Entry points: `make run` (the main job), `make test` (the quick suite) and `make test-all`
# (the whole suite, slow tests included, as CI runs it).
# All create or reuse a local virtual environment in .venv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test test-all lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m van_ablate +ablation=no_sigmoid $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# The whole suite, default and slow: what .ci/run runs on every CI run.
test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m van_ablate.bench --model van_b0 --img-size 224 --batch-size 16 --warmup 1 --iters 2 --repeats 3 --compare
