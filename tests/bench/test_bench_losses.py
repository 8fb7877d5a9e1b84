"""Benchmarks of precision's own loss kernels (regressions within precision): every policy.

    make bench-pytest                           # or:
    .venv/bin/python -m pytest tests/bench/test_bench_losses.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Shapes (4096, 1000) and (65536, 10), soft (Dirichlet) targets, reduction "mean"; groups
``<shape> threads=<k>``, one row per (storage, arithmetic) policy: the whole public call (argument
and target checks, output allocation, the kernel). ``PRECISION_BENCH_SHAPES`` (e.g. "1024x1000")
replaces the shapes. numpy and torch are compared by ``make bench`` (tests/bench/compare.py), each
timed in a fresh process: timed here, in a process that has run other kernels, they would be slowed.
"""
import os
import warnings

import numpy as np
import pytest

import precision as pr
from precision import losses


SHAPES = [tuple(int(v) for v in s.split("x"))
          for s in os.environ.get("PRECISION_BENCH_SHAPES", "4096x1000,65536x10").split(",")]
POLICIES = [("float16", None), ("float16", "float32"), ("float16", "float64"),
            ("bfloat16", None), ("bfloat16", "float32"), ("bfloat16", "float64"),
            ("float32", None), ("float32", "float64"), ("float64", None)]
THREADS = [1, 2]
_CACHE = {}


def data(shape, fmt):
    key = (shape, fmt)
    if key not in _CACHE:
        rng = np.random.default_rng(0)
        n, c = shape
        f = pr.format(fmt)
        x = f.round(rng.standard_normal((n, c), dtype=np.float32) * 2)
        t = f.round(rng.dirichlet(np.ones(c), size=n))
        _CACHE[key] = (x, t)
    return _CACHE[key]


def shape_id(shape):
    return f"{shape[0]}x{shape[1]}"


@pytest.mark.parametrize("threads", THREADS, ids=lambda k: f"threads={k}")
@pytest.mark.parametrize("fmt,accum", POLICIES,
                         ids=[f"{s}" + (f"-accum={a}" if a else "") for s, a in POLICIES])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_precision_loss_and_grad(benchmark, shape, fmt, accum, threads):
    x, t = data(shape, fmt)
    benchmark.group = f"{shape_id(shape)} threads={threads}"
    benchmark.extra_info.update(format=fmt, accum=accum or fmt, threads=threads)
    with warnings.catch_warnings():
        # float16 arithmetic cannot divide by 65536 rows (the batch size overflows): it says so
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        benchmark(losses.softmax_cross_entropy, x, t, return_grad=True, accum=accum,
                  num_threads=threads)
