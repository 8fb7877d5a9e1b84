# make test   : create .venv if missing, install precision with its test extras and the peers it is
#               compared against (torch, optax/JAX, Keras, Stable-Baselines3, Dask; CPU builds), build
#               the kernels, run the tests
# make study  : the same set-up, then the headline study (quick grid)
# make bench  : one comparison table, precision against numpy and torch, each timed in a fresh process
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := $(wildcard kernels/*.pyx.tp kernels/*.pxd kernels/*.h kernels/*.py) setup.py pyproject.toml .ci/constraints.txt
# While developing, `PRECISION_ONLY=losses .venv/bin/python setup.py build_ext --inplace` rebuilds one module.

.PHONY: test study study-full bench bench-pytest clean build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The editable install compiles the kernels in place; it reruns whenever a kernel source changes.
$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q "setuptools>=77" wheel "Cython>=3.0" "numpy>=2"
	$(BIN)/python -m pip install -q --no-build-isolation -c .ci/constraints.txt -e ".[test,peers,rl,cluster]"
	touch $(STAMP)

build: $(STAMP)

test: build
	$(BIN)/python -m pytest -q tests --ignore=tests/bench

study: build
	$(BIN)/precision study soft-target-stall --quick

study-full: build
	$(BIN)/precision study soft-target-stall --full

bench: build
	$(BIN)/python -m tests.bench.compare --rounds 3 --threads 1,2

# pytest-benchmark timings of every policy in one process (for regressions within precision)
bench-pytest: build
	$(BIN)/python -m pytest tests/bench --benchmark-only --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build $(VENV) precision/_kernels/*.so kernels/*.c kernels/*.cpp
	find kernels -name '*.pyx.tp' | sed 's/\.tp$$//' | xargs rm -f
