# discoverd — two commands on a fresh machine: `make serve` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ADDR    ?= 127.0.0.1:7171
ARGS    ?=

.PHONY: serve test lint typecheck unit sysdeps bench docs installcheck clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

## serve: create the venv, install, start the server on its embedded in-memory default
serve: $(STAMP)
	$(BIN)/discoverd serve --addr $(ADDR) $(ARGS)

## sysdeps: system packages the tests need (installed through apt-get when missing)
sysdeps:
	@sh scripts/sysdeps.sh test

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/python scripts/check_layers.py

unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## docs: the documentation site with the API reference, built offline in strict mode (build/site)
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site

## installcheck: `pip install .` in fresh venvs (no extras, then [redis]) runs the examples
installcheck: $(STAMP)
	@sh scripts/installcheck.sh $(PY)

## test: venv + install + system packages + ruff + mypy --strict + docs + the whole pytest suite + installcheck
test: $(STAMP) sysdeps lint typecheck docs unit installcheck

## bench: run the benchmarks (see bench/README.md)
bench: $(STAMP)
	@sh scripts/sysdeps.sh bench
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
