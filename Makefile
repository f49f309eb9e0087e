# tunescope — set-up, tests and the demo. `make test` and `make demo` work from a clean clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first, pinned: on this machine 2.13.0 is a local CPU wheel; an unpinned torch pulls a
# multi-GB CUDA build. pyproject declares torch>=2.3, which 2.13.0 satisfies.
TORCH_PIN ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test lint typecheck unit demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	bash scripts/ensure-chromium.sh
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -q

test: lint typecheck unit

demo: install
	$(VENV)/bin/tunescope train

bench: install
	@echo "Benchmarks live in bench/; see BENCHMARKS.md for the command behind each table."

clean:
	rm -rf $(VENV) .tunescope outputs test-output .pytest_cache .mypy_cache .ruff_cache
