"""Benchmarks: one optimizer step on 10M parameters, precision.optim against torch.optim and numpy.

    make bench                                  # or:
    .venv/bin/python -m pytest tests/bench/test_bench_optim.py --benchmark-only \\
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Everything runs on one thread (``num_threads=1``, ``torch.set_num_threads(1)``) in the same
process.  Groups: ``adam-<format>`` (precision strict, precision with float32 state for 16-bit
formats, torch default/foreach/fused, numpy) and ``copy`` (numpy copy of 10M float32: the memory
bandwidth reference).  Adam moves 7 arrays per parameter (param, grad, m, v read; param, m, v
written): 28 bytes per float32 parameter; ``extra_info["GB/s"]`` reports it.
``PRECISION_BENCH_N`` changes the size.
"""
import os

import ml_dtypes
import numpy as np
import pytest

from precision import optim

try:
    import torch
except ImportError:      # the torch rows are skipped
    torch = None

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


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("impl", ["default", "foreach", "fused"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_torch_adam(benchmark, fmt, impl):
    torch.set_num_threads(1)
    p, g = arrays(fmt)
    dtype = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
             "bfloat16": torch.bfloat16}[fmt]
    tp = torch.nn.Parameter(torch.from_numpy(p.astype(np.float32)).to(dtype))
    tp.grad = torch.from_numpy(g.astype(np.float32)).to(dtype)
    kw = {"default": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    opt = torch.optim.Adam([tp], lr=1e-3, eps=1e-3, **kw)
    opt.step()
    benchmark.group = f"adam-{fmt}"
    record(benchmark, fmt, adam_bytes(fmt))
    benchmark.pedantic(opt.step, rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)


class NumpyAdam:
    """torch's Adam update in numpy, in place, in the array's format (numpy rounds float16 per
    operation; ml_dtypes does for bfloat16)."""

    def __init__(self, p, lr=1e-3, betas=(0.9, 0.999), eps=1e-3):
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = np.zeros_like(p)
        self.v = np.zeros_like(p)
        self.tmp = np.empty_like(p)
        self.den = np.empty_like(p)

    def step(self, p, g):
        b1, b2 = self.betas
        dt = p.dtype.type
        self.t += 1
        m, v, tmp, den = self.m, self.v, self.tmp, self.den
        np.subtract(g, m, out=tmp)                      # m += (1 - b1) (g - m)
        np.multiply(tmp, dt(1 - b1), out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(v, dt(b2), out=v)                   # v = b2 v + (1 - b2) g g
        np.multiply(g, dt(1 - b2), out=tmp)
        np.multiply(tmp, g, out=tmp)
        np.add(v, tmp, out=v)
        np.sqrt(v, out=den)                             # den = sqrt(v) / sqrt(bc2) + eps
        np.divide(den, dt((1 - b2 ** self.t) ** 0.5), out=den)
        np.add(den, dt(self.eps), out=den)
        np.multiply(m, dt(-self.lr / (1 - b1 ** self.t)), out=tmp)
        np.divide(tmp, den, out=tmp)
        np.add(p, tmp, out=p)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_numpy_adam(benchmark, fmt):
    p, g = arrays(fmt)
    opt = NumpyAdam(p)
    opt.step(p, g)
    benchmark.group = f"adam-{fmt}"
    record(benchmark, fmt, adam_bytes(fmt))
    rounds = ROUNDS if fmt in ("float32", "float64") else 3
    benchmark.pedantic(opt.step, args=(p, g), rounds=rounds, warmup_rounds=1)
    report_bandwidth(benchmark)


def test_copy_bandwidth(benchmark):
    src = np.ones(N, np.float32)
    dst = np.empty_like(src)
    benchmark.group = "copy"
    record(benchmark, "float32", 8)
    benchmark.pedantic(np.copyto, args=(dst, src), rounds=ROUNDS, warmup_rounds=1)
    report_bandwidth(benchmark)
