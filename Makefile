# labkit: the two commands of the README's quick start, and their parts.
#   make reproduce   set up .venv, run every notebook's reproduction (cpu preset) on the bundled data, report
#                    (RETRAIN=1: train the teachers again instead of loading the shipped cards)
#   make test        set up .venv (and Chromium for the browser test, where apt is at hand), run the tests
#   make site        the course site in build/site (the student versions executed with PRESET); make exercises
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= cpu
SEEDS ?= 1
RETRAIN ?=
# The bundled data beside the checkout (../shared/data), else data/ (downloads land there).
LABKIT_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),$(CURDIR)/data)
export LABKIT_DATA

.PHONY: setup reproduce report test test-fast browser-deps lab bench clean exercises site

$(BIN)/labkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -e ".[test]"
	touch $@

setup: $(BIN)/labkit

reproduce: setup
	$(BIN)/labkit reproduce --preset $(PRESET) --seeds $(SEEDS) --out runs $(if $(RETRAIN),--retrain)
	$(BIN)/labkit report runs

report: setup
	$(BIN)/labkit report runs

# Debian's Chromium for the real-browser test; needs root and apt (CI has both). Elsewhere the test is skipped.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

test: setup browser-deps
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not browser and not notebook and not slow"

# The student versions of the notebooks (every exercise's solution replaced by its placeholder) in build/exercises.
exercises: setup
	$(BIN)/labkit exercises build/exercises

# The static site in build/site: the student versions executed with PRESET (cpu by default, not timed: the notebooks' cpu runs take about 22 minutes in make reproduce; smoke in
# CI, minutes), Sphinx + MyST-NB, offline. Serve it with: python3 -m http.server -d build/site
site: setup
	$(BIN)/labkit course site --preset $(PRESET) --out build/site

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) runs .pytest_cache build
