"""Matrix products in every format, with every product and addition rounded as the format does.

    import precision as pr
    from precision.linalg import matmul
    c = matmul(a, b)                          # a: (M, K), b: (K, N), same dtype -> (M, N)
    c = matmul(x.T, g, accum="float32")       # X^T G of a float16 model, float32 accumulation

The kernel is ``kernels/linalg.pyx.tp``; this module checks arguments and dispatches.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from . import formats as _formats
from ._kernels import load as _load

__all__ = ["matmul"]

# Below this many multiply-adds a parallel region costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 18


def _kernels():
    return _load("linalg")


def matmul(a, b, *, accum=None, out=None, num_threads=None):
    """The matrix product a·b with every operation rounded to the arithmetic format.

    a: (M, K), b: (K, N), both of one of our formats (float16, bfloat16, float32, float64) and the
    same dtype; any strides (transposed views such as ``x.T`` are read in place, no copy of a).
    accum: the arithmetic format A (a Format, name or dtype; default the storage format S).
    out: optional writable (M, N) array of the same dtype, not overlapping a or b.
    num_threads: threads over output rows, 1 to 256 (default: 1 for small products, else the
    CPUs this process may use, honouring OMP_NUM_THREADS; always 1 in a process made by
    ``os.fork()``, see :mod:`precision._checks`); the result is bit-identical for any value.

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
    read-only, overlapping the inputs), a num_threads outside [1, 256] or an accum narrower
    than the storage format.
    """
    for name, arr in (("a", a), ("b", b)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    a = _checks.float_array(a, "a")      # a misaligned view becomes an aligned copy
    b = _checks.float_array(b, "b")
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
    threads = _checks.threads(num_threads, m * k * n, _PARALLEL_MIN_WORK)
    if out is None:
        out = np.empty((m, n), dtype=storage.dtype)
    else:
        # any strides: the kernel writes out[i, j] through its strides
        _checks.check_out(out, "out", (m, n), storage.dtype, [("a", a), ("b", b)],
                          contiguous=False)
    kernel = getattr(_kernels(), f"matmul_{storage.short}_{arithmetic.short}")
    kernel(storage.storage_view(a), storage.storage_view(b), storage.storage_view(out), threads)
    return out
