# `make demo` runs the default case end to end; `make test` runs the default test suite.
# Both set up what they need first (apt packages when root, .venv, pip install -e .[all]).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neuralpde-installed

.PHONY: setup demo test test-slow lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/neuralpde run cases/poisson.yaml

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check neuralpde tests benchmarks

bench: setup
	$(PY) benchmarks/fem_reference.py

clean:
	rm -rf out .pytest_cache
