# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs the project into it the first time (and again when
# pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: run test lint loadtest bench-gap bench-market bench-kernels bench-runs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cdmo serve --demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check schemas matcher service loadtests tests bench
	$(BIN)/mypy schemas service

# Headless Locust against a topology it starts itself (see loadtests/run.py and the README).
loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run capacity
	$(BIN)/python -m loadtests.run capacity --processes 2

bench-gap: $(STAMP)
	$(BIN)/python -m bench.gap_bench

bench-market: $(STAMP)
	$(BIN)/python -m bench.market_bench

bench-kernels: $(STAMP)
	$(BIN)/python -m bench.kernel_bench

bench-runs: $(STAMP)
	$(BIN)/python -m bench.runs_bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache var
