"""Matrix products in every format, with every product and addition rounded as the format does.

    import precision as pr
    from precision.linalg import matmul
    c = matmul(a, b)                          # a: (M, K), b: (K, N), same dtype -> (M, N)
    c = matmul(x.T, g, accum="float32")       # X^T G of a float16 model, float32 accumulation

The kernel is ``kernels/linalg.pyx.tp``; this module checks arguments and dispatches.
"""
from __future__ import annotations

import os

import numpy as np

from . import formats as _formats
from ._kernels import load as _load

__all__ = ["matmul"]

# Below this many multiply-adds a parallel region costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 18


def _kernels():
    return _load("linalg")


def _threads(num_threads, work: int) -> int:
    if num_threads is None:
        return 1 if work < _PARALLEL_MIN_WORK else max(1, os.cpu_count() or 1)
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return int(num_threads)


def matmul(a, b, *, accum=None, out=None, num_threads=None):
    """The matrix product a·b with every operation rounded to the arithmetic format.

    a: (M, K), b: (K, N), both of one of our formats (float16, bfloat16, float32, float64) and the
    same dtype; any strides (transposed views such as ``x.T`` are read in place, no copy of a).
    accum: the arithmetic format A (a Format, name or dtype; default the storage format S).
    out: optional writable (M, N) array of the same dtype, not overlapping a or b.
    num_threads: threads over output rows (default: 1 for small products, else all CPUs);
    the result is bit-identical for any value.

    Algorithm, for each output element, with R(·) rounding to A (round to nearest even, A's
    subnormals and overflow)::

        x_k     = R(a[i, k] · b[k, j])
        c[i, j] = R_S( pairwise_A(x_0, ..., x_{K-1}) )

    where pairwise_A is the project's fixed pairwise order (DESIGN.md §3.4; the same as
    ``precision.exact.emulate(A).sum(x, order="pairwise")``): 128-element leaves summed in 8
    interleaved lanes, lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), leaf sums combined
    level by level, every addition rounded to A. So ``c[i, j]`` is bit-identical to
    ``S.round(emulate(A).dot(a[i, :], b[:, j]))``. With A wider than S (``accum="float32"`` for a
    float16 model), products and sums are rounded to A and the result once to S: the tensor-core
    recipe. NaN and inf propagate as IEEE arithmetic does (inf·0 = NaN).

    Raises TypeError for non-arrays, non-float or mismatched dtypes; ValueError for shapes that are
    not 2-D or don't chain, an empty dimension (M, K or N = 0), a bad ``out`` (shape, dtype,
    read-only, overlapping the inputs) or an accum narrower than the storage format.
    """
    for name, arr in (("a", a), ("b", b)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    storage = _formats.of(a)
    if b.dtype != a.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul needs 2-D arrays, got shapes {a.shape} and {b.shape}")
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"shapes {a.shape} and {b.shape} don't chain: {k} != {k2}")
    if m == 0 or k == 0 or n == 0:
        raise ValueError(f"matmul of empty arrays (shapes {a.shape} and {b.shape})")
    arithmetic = _formats.arithmetic_format(accum, storage)
    threads = _threads(num_threads, m * k * n)
    if out is None:
        out = np.empty((m, n), dtype=storage.dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if out.dtype != storage.dtype:
            raise TypeError(f"out must have dtype {storage.dtype}, got {out.dtype}")
        if out.shape != (m, n):
            raise ValueError(f"out must have shape {(m, n)}, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        if np.may_share_memory(out, a) or np.may_share_memory(out, b):
            raise ValueError("out must not overlap a or b")
    kernel = getattr(_kernels(), f"matmul_{storage.short}_{arithmetic.short}")
    kernel(storage.storage_view(a), storage.storage_view(b), storage.storage_view(out), threads)
    return out
