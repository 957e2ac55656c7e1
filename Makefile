# Two commands on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: up test lint bench loadtest clean docs

# The flat layout (ragkit/ beside tests/, app.py, ...) makes setuptools' editable install use an
# import finder that maps ragkit alone, and report that in an information-only "Editable installation"
# note, which pip shows as a BuildBackendWarning. -W drops that note only; other warnings still show.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -W "ignore:Editable installation:UserWarning" -m pip install --quiet --no-deps -e .
	touch $(STAMP)

up: $(STAMP)  ## start the service and the UI with a sample collection
	$(BIN)/ragkit up

test: lint  ## run the whole test suite (after the lint and layering checks)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff, and the import-linter contract that keeps the layers of ARCHITECTURE.md
	$(BIN)/ruff check ragkit tests loadtests app.py app_pages notebooks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache

docs: $(STAMP)  ## refresh the README's command-line section from --help
	$(BIN)/python -m ragkit.cli.reference --write README.md

# The benchmark's LlamaIndex baseline is installed here only, never by requirements.txt.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): loadtests/requirements-bench.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r loadtests/requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## side-by-side benchmark ratios, ~10 min (BENCH_ARGS=--quick: a few minutes)
	$(BIN)/python loadtests/bench.py $(BENCH_ARGS)
