# `make demo` runs the default case end to end; `make test` runs the default test suite on Debian 12
# (dolfinx 0.5.2, this machine) and then in a Debian 13 root (dolfinx 0.9.0, see scripts/debian13.sh).
# Both set up what they need first (apt packages when root, .venv, pip install -e .[all]).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neuralpde-installed

.PHONY: setup demo test test-debian12 test-debian13 test-slow lint bench clean clean-debian13

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/neuralpde run cases/poisson.yaml

test: test-debian12 test-debian13

test-debian12: setup
	$(PY) -m pytest

# builds or reuses .debian13/ (needs root and network; skipped with a message otherwise, except with CI=true)
test-debian13: setup
	bash scripts/debian13.sh

test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check neuralpde tests benchmarks

bench: setup
	$(PY) benchmarks/fem_reference.py

clean:
	rm -rf out .pytest_cache

clean-debian13:
	rm -rf .debian13 .debian13.log
