"""Benchmarks of precision's own optimizer kernels (regressions within precision): one Adam step
on 10M parameters.

    make bench-pytest                           # or:
    .venv/bin/python -m pytest tests/bench/test_bench_optim.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Groups: ``adam-<format>`` (strict, float32 state for 16-bit formats, all threads) and ``copy`` (numpy
copy of 10M float32: the memory bandwidth reference). Adam moves 7 arrays per parameter (param,
grad, m, v read; param, m, v written): 28 bytes per float32 parameter; ``extra_info["GB/s"]``
reports it. ``PRECISION_BENCH_N`` changes the size. torch and numpy are compared by ``make bench``
(tests/bench/compare.py), each timed in a fresh process.
"""
import os

import ml_dtypes
import numpy as np
import pytest

from precision import optim


# strict bfloat16 rounds beta2 = 0.999 to 1 (a PrecisionWarning): that is what it computes
pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")

N = int(os.environ.get("PRECISION_BENCH_N", 10_000_000))
FORMATS = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
           "bfloat16": ml_dtypes.bfloat16}
ROUNDS = 7


def arrays(fmt, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(N, dtype=np.float32).astype(FORMATS[fmt])
    g = (rng.standard_normal(N, dtype=np.float32) * 1e-2).astype(FORMATS[fmt])
    return p, g


def record(benchmark, fmt, bytes_per_param):
    benchmark.extra_info["format"] = fmt
    benchmark.extra_info["bytes"] = N * bytes_per_param


def report_bandwidth(benchmark):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["GB/s"] = benchmark.extra_info["bytes"] / stats.stats.median / 1e9


def adam_bytes(fmt, state_fmt=None):
    s = np.dtype(FORMATS[fmt]).itemsize
    a = np.dtype(FORMATS[state_fmt or fmt]).itemsize
    return 3 * s + 4 * a            # param r/w, grad r; m, v r/w


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_precision_adam(benchmark, fmt):
    p, g = arrays(fmt)
    opt = optim.Adam(lr=1e-3, eps=1e-3, num_threads=1)   # eps representable in every format
    opt.step(p, g)
    benchmark.group = f"adam-{fmt}"
    record(benchmark, fmt, adam_bytes(fmt))
    benchmark.pedantic(opt.step, args=(p, g), rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_precision_adam_float32_state(benchmark, fmt):
    p, g = arrays(fmt)
    opt = optim.Adam(lr=1e-3, state_format="float32", num_threads=1)
    opt.step(p, g)
    benchmark.group = f"adam-{fmt}"
    record(benchmark, fmt, adam_bytes(fmt, "float32"))
    benchmark.pedantic(opt.step, args=(p, g), rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_precision_adam_all_threads(benchmark, fmt):
    p, g = arrays(fmt)
    opt = optim.Adam(lr=1e-3, eps=1e-3)
    opt.step(p, g)
    benchmark.group = f"adam-{fmt}"
    record(benchmark, fmt, adam_bytes(fmt))
    benchmark.pedantic(opt.step, args=(p, g), rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)


def test_copy_bandwidth(benchmark):
    src = np.ones(N, np.float32)
    dst = np.empty_like(src)
    benchmark.group = "copy"
    record(benchmark, "float32", 8)
    benchmark.pedantic(np.copyto, args=(dst, src), rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)
