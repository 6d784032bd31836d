# Two commands set everything up on a fresh machine: `make serve` and `make test`. A third,
# `make image`, builds the container image (docs/deploy.md); it needs none of the .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(VITSERVE_PORT),3000)
HOST ?= $(or $(VITSERVE_HOST),127.0.0.1)
PYTEST_ARGS ?=
# The image's variant: cpu (default, as the Dockerfile's) or gpu. IMAGE, BASE_IMAGE, ENGINE and
# ENGINE_FLAGS pass through to deploy/build-image.sh, which documents them.
VARIANT ?= cpu

.PHONY: venv serve test lint typecheck format clean system-deps image lock

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

# --durations=25: every run (CI's too) lists its slowest tests, so a test that grows slow is seen.
test: system-deps lint typecheck
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

image:
	VARIANT='$(VARIANT)' IMAGE='$(IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' ENGINE='$(ENGINE)' \
		ENGINE_FLAGS='$(ENGINE_FLAGS)' PYTHON='$(PYTHON)' deploy/build-image.sh

# Re-pins deploy/requirements/ after a change to [project] dependencies, keeping the pins that still
# fit; `make lock UPGRADE=1` re-resolves every package.
lock:
	"$$(PYTHON='$(PYTHON)' deploy/build-env.sh)" deploy/lock_requirements.py $(if $(UPGRADE),--upgrade)

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache
