# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(VITSERVE_PORT),3000)
HOST ?= $(or $(VITSERVE_HOST),127.0.0.1)
PYTEST_ARGS ?=

.PHONY: venv serve test lint typecheck format clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-installs when pyproject.toml changes; the stamp keeps repeated runs fast.
$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-serve

venv: $(VENV)/.installed-serve

serve: $(VENV)/.installed-serve
	$(BIN)/vitserve serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy .

system-deps:
	bash tools/system-deps.sh

test: system-deps lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache
