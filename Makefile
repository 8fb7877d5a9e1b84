# make test   : create .venv if missing, install precision with [test], build kernels, run tests
# make study  : the same set-up, then the headline study (quick grid)
# make bench  : benchmarks against numpy (and torch CPU when installed)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := $(wildcard kernels/*.pyx.tp kernels/*.pxd kernels/*.h kernels/*.py) setup.py pyproject.toml

.PHONY: test study study-full bench clean build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q "setuptools>=77" wheel "Cython>=3.0" "numpy>=2"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace -j 2

test: build
	$(BIN)/python -m pytest -q tests --ignore=tests/bench

study: build
	$(BIN)/precision study soft-target-stall --quick

study-full: build
	$(BIN)/precision study soft-target-stall --full

bench: build
	$(BIN)/python -m pip install -q ".[peers]" || echo "torch not installed: benchmarks skip the torch rows"
	$(BIN)/python -m pytest tests/bench --benchmark-only --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build $(VENV) precision/_kernels/*.so kernels/*.c kernels/*.cpp
	find kernels -name '*.pyx.tp' | sed 's/\.tp$$//' | xargs rm -f
