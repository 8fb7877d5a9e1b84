# make test   : create .venv if missing, install precision with its test extras and the peers it is
#               compared against (torch, optax/JAX, Keras, Stable-Baselines3, Dask; CPU builds), build
#               the kernels, run the tests
# make study  : the same set-up, then the headline study (quick grid)
# make bench  : one comparison table, precision against numpy and torch, each timed in a fresh process
# make fuzz   : the fuzz suite (tests/fuzz: every public entry point under hostile input) with the
#               "thorough" hypothesis profile; CI runs it with the "ci" profile inside `make test`
# make sanitize: the kernels built with AddressSanitizer + UndefinedBehaviorSanitizer into
#               build/sanitize (a copy of the package; the normal build is untouched), then the
#               kernel tests and the fuzz suite run against that copy; any report fails the run
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := $(wildcard kernels/*.pyx.tp kernels/*.pxd kernels/*.h kernels/*.py) setup.py pyproject.toml .ci/constraints.txt
# While developing, `PRECISION_ONLY=losses .venv/bin/python setup.py build_ext --inplace` rebuilds one module.

.PHONY: test study study-full bench bench-pytest clean build fuzz sanitize

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The kernels compile in place on every core while pip installs the dependencies, test extras and
# peers in the background (the build's numpy, setuptools and Cython pinned, so nothing the compiler
# reads changes under it); then the editable install registers the package without compiling again
# (PRECISION_PREBUILT=1).  Reruns whenever a kernel source changes (the build is incremental).
EXTRAS := test peers rl cluster
$(STAMP): $(BIN)/python $(SOURCES) .ci/requirements.py
	$(BIN)/python -m pip install -q "setuptools>=77" wheel "Cython>=3.1" "numpy>=2"
	$(BIN)/python .ci/requirements.py $(EXTRAS) > $(VENV)/requirements.txt
	$(BIN)/python -m pip freeze --all | grep -iE '^(numpy|setuptools|cython)==' > $(VENV)/build-pins.txt
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -c $(VENV)/build-pins.txt \
		-r $(VENV)/requirements.txt > $(VENV)/pip.log 2>&1 & deps=$$!; \
	$(BIN)/python setup.py -q build_ext --inplace > $(VENV)/build.log 2>&1 || { cat $(VENV)/build.log; kill $$deps; exit 1; }; \
	wait $$deps || { cat $(VENV)/pip.log; exit 1; }
	PRECISION_PREBUILT=1 $(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

build: $(STAMP)

# the tests run on every core (pytest-xdist; TEST_JOBS=0 runs them in this process); a module's tests
# stay on one worker (--dist loadfile), so a module's fixtures (torch trajectories, study runs) are
# computed once
TEST_JOBS ?= auto
# on a CPU with AVX-512 the loss kernels' tests run a second time on the AVX2 build (what a CPU
# without AVX-512 runs: its own assembly exp and transposes), capped by PRECISION_ISA=v3 (~25 s)
test: build
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile tests --ignore=tests/bench
	@if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then \
		echo "the loss kernels on the AVX2 build (PRECISION_ISA=v3):"; \
		PRECISION_ISA=v3 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile \
			tests/test_losses.py tests/test_losses_soft.py tests/test_losses_block.py; fi

study: build
	$(BIN)/precision study soft-target-stall --quick

study-full: build
	$(BIN)/precision study soft-target-stall --full

bench: build
	$(BIN)/python -m tests.bench.compare --rounds 3 --threads 1,2

# pytest-benchmark timings of every policy in one process (for regressions within precision)
bench-pytest: build
	$(BIN)/python -m pytest tests/bench --benchmark-only --benchmark-columns=median,iqr,rounds

fuzz: build
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-thorough} PRECISION_FUZZ_TIMEOUT=7200 \
		$(BIN)/python -m pytest -q tests/fuzz

# Python is not instrumented, so libasan is preloaded; leaks are not checked (CPython's are not
# ours); reports go to files under $(SANITIZE_DIR)/reports, which must stay empty (a report also
# ends the process: -fno-sanitize-recover, abort_on_error).
# SANITIZE_ISA=v3 or v4: sanitize the AVX2 or AVX-512 code paths instead of the baseline build
SANITIZE_ISA   ?=
SANITIZE_DIR   := build/sanitize$(if $(SANITIZE_ISA),-$(SANITIZE_ISA))
SANITIZE_TESTS := test_primitives.py test_losses.py test_losses_bad_input.py test_losses_block.py \
                  test_losses_refine_gap.py test_target_tolerance.py test_linalg.py test_optim.py \
                  test_optim_bad_input.py test_optim_pickle.py test_stats.py test_batchnorm.py \
                  test_parallel.py test_rl.py test_checks.py fuzz
sanitize: build
	PRECISION_SANITIZE=1 PRECISION_SANITIZE_ISA=$(SANITIZE_ISA) PRECISION_BUILD_JOBS=1 \
		$(BIN)/python setup.py -q build_ext \
		--build-lib $(SANITIZE_DIR) --build-temp $(SANITIZE_DIR)/temp
	tar --exclude='*.so' --exclude=__pycache__ -cf - precision | tar -xf - -C $(SANITIZE_DIR)
	rm -rf $(SANITIZE_DIR)/reports && mkdir -p $(SANITIZE_DIR)/reports
	cd $(SANITIZE_DIR) && \
	export LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(CURDIR)/$(SANITIZE_DIR)/reports/asan \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(SANITIZE_DIR)/reports/ubsan \
		HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} && \
	$(abspath $(BIN))/python -c "import precision._kernels as k, sys; \
		f = k.load('losses').__file__; print('sanitized kernels:', f); \
		sys.exit('build/sanitize' not in f or 'libasan' not in open('/proc/self/maps').read())" && \
	$(abspath $(BIN))/python -m pytest -q -p no:cacheprovider --import-mode=append -m "not peers" \
		$(addprefix $(CURDIR)/tests/,$(SANITIZE_TESTS)); \
	status=$$?; cat $(CURDIR)/$(SANITIZE_DIR)/reports/* 2>/dev/null; \
	test $$status -eq 0 && test -z "$$(ls $(CURDIR)/$(SANITIZE_DIR)/reports)"

clean:
	rm -rf build $(VENV) precision/_kernels/*.so kernels/*.c kernels/*.cpp
	find kernels -name '*.pyx.tp' | sed 's/\.tp$$//' | xargs rm -f
