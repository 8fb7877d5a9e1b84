"""Benchmarks: softmax cross-entropy loss + gradient, precision.losses against numpy and torch.

    make bench                                  # or:
    .venv/bin/python -m pytest tests/bench/test_bench_losses.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Shapes (4096, 1000) and (65536, 10), soft (Dirichlet) targets, reduction "mean", in the same
process.  Groups ``<shape> threads=<k>``:

* ``precision <S>`` / ``precision <S> accum=<A>``: every (storage, arithmetic) policy, the whole
  public call (argument and target checks, output allocation, the kernel);
* ``numpy <dtype>``: a careful numpy implementation in the storage dtype (max shift, one exp,
  log of the row sums, loss and gradient from the same exponentials; numpy's float16 arithmetic
  computes each ufunc in float32 and rounds);
* ``torch <dtype>``: F.cross_entropy with probability targets, forward and backward on the CPU
  (torch.set_num_threads(k)), when torch is installed.

``PRECISION_BENCH_SHAPES`` (e.g. "1024x1000") replaces the shapes.  On a shared machine,
``python -m tests.bench.test_bench_losses [threads]`` times everything round-robin instead
(medians of rounds that each run every implementation once), which keeps the ratios fair.
"""
import os
import warnings

import numpy as np
import pytest

import precision as pr
from precision import losses

try:
    import torch
except ImportError:      # the torch rows are skipped
    torch = None

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


def numpy_cross_entropy(x, t):
    """Mean soft-target CE and its gradient in x's dtype: max shift, one exp per element."""
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = (t * (np.log(s) - z)).sum() / n
    grad = (e / s * t.sum(axis=1, keepdims=True) - t) / n
    return loss, grad


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_numpy_loss_and_grad(benchmark, shape, dtype):
    x, t = data(shape, dtype)
    benchmark.group = f"{shape_id(shape)} threads=1"
    benchmark.extra_info.update(format=dtype, implementation="numpy")
    if dtype == "float16":      # ~1 s per call: a few rounds are enough
        benchmark.pedantic(numpy_cross_entropy, args=(x, t), rounds=3, iterations=1)
    else:
        benchmark(numpy_cross_entropy, x, t)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("threads", THREADS, ids=lambda k: f"threads={k}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_torch_loss_and_grad(benchmark, shape, dtype, threads):
    x, t = data(shape, dtype)
    xt = torch.from_numpy(x)
    tt = torch.from_numpy(t)
    benchmark.group = f"{shape_id(shape)} threads={threads}"
    benchmark.extra_info.update(format=dtype, implementation="torch", threads=threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)

    def forward_backward():
        leaf = xt.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(leaf, tt)
        loss.backward()
        return loss, leaf.grad

    try:
        benchmark(forward_backward)
    finally:
        torch.set_num_threads(before)


def round_robin(shape, threads, rounds=31):
    """Medians (ms) of every implementation timed once per round, round after round: on a
    shared machine, load changes hit all of them alike, so their ratios stay meaningful."""
    import time

    impls = {}
    for fmt, accum in POLICIES:
        x, t = data(shape, fmt)
        impls[f"precision {fmt}" + (f" accum={accum}" if accum else "")] = (
            lambda x=x, t=t, accum=accum: losses.softmax_cross_entropy(
                x, t, return_grad=True, accum=accum, num_threads=threads))
    for dtype in ("float32", "float64"):
        x, t = data(shape, dtype)
        if threads == 1:
            impls[f"numpy {dtype}"] = lambda x=x, t=t: numpy_cross_entropy(x, t)
        if torch is not None:
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)

            def forward_backward(xt=xt, tt=tt):
                leaf = xt.detach().requires_grad_(True)
                torch.nn.functional.cross_entropy(leaf, tt).backward()

            impls[f"torch {dtype}"] = forward_backward
    if torch is not None:
        torch.set_num_threads(threads)
    times = {name: [] for name in impls}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        for _ in range(rounds):
            for name, fn in impls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(v)) for name, v in times.items()}


if __name__ == "__main__":      # python -m tests.bench.test_bench_losses [threads]
    import sys

    k = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for shape in SHAPES:
        print(f"{shape_id(shape)}, {k} thread(s), medians of round-robin rounds:")
        for name, ms in round_robin(shape, k).items():
            print(f"  {name:36s} {ms:8.2f} ms")
