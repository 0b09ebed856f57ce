# Two set-up-free entry points: `make demo` and `make test`. Each creates .venv/ when missing
# (uv, Python 3.11, the locked dependency set in uv.lock).

PYTHON ?= python3.11
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
BIN := $(VENV)/bin
LINT_PATHS := pipeline dags tests $(wildcard bench)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help demo test test-fast lint check pre-commit-install format bench clean clean-data

help:
	@echo "make demo       synthetic video+audio corpus through the four Airflow DAGs, then a summary"
	@echo "make test       the whole test suite (SQLite + PostgreSQL on 127.0.0.1:5432)"
	@echo "make test-fast  unit tests only"
	@echo "make lint       ruff (AIR rules) + ruff format --check + mypy --strict"
	@echo "make check      lint, then the whole test suite (what CI runs)"
	@echo "make pre-commit-install  run the lint checks on every git commit"
	@echo "make bench      the benchmarks, then docs/benchmarks.md (about an hour on 2 cores)"
	@echo "make clean-data remove ./data (the demo's outputs)"

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (CI's machines) nothing is ever
# cached, and every process would compile TensorFlow's sources again (16 s, not 5, per import).
$(VENV)/.synced: pyproject.toml uv.lock Makefile
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python $(PYTHON) --compile-bytecode
	@touch $@

demo: $(VENV)/.synced
	$(BIN)/stpipe demo

test: $(VENV)/.synced
	$(BIN)/pytest

test-fast: $(VENV)/.synced
	$(BIN)/pytest tests/unit

lint: $(VENV)/.synced
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy pipeline dags

# Lint first: it takes seconds, the suite takes minutes.
check: lint test

pre-commit-install: $(VENV)/.synced
	$(BIN)/pre-commit install

bench: $(VENV)/.synced
	cd bench && for script in extraction_vs_bare precision rerun memory naive flops training_speed fusion fsdd hostile_ingest warehouse_scale feature_store_scale; do \
		../$(BIN)/python $$script.py || exit 1; done
	$(BIN)/python bench/report.py

format: $(VENV)/.synced
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

clean-data:
	rm -rf data

clean: clean-data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
