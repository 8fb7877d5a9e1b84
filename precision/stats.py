"""Reductions and moments in every format: sums in a fixed order, means, variances, merges.

    import precision as pr
    s = pr.stats.sum(x, axis=0)                                    # pairwise, in x's format
    m = pr.stats.mean(x, axis=(0, 2, 3), accum="float32")          # (N, C, H, W) -> (C,)
    v = pr.stats.var(x, axis=0, ddof=1, method="welford")
    m, v = pr.stats.moments(x, axis=0, method="one-pass")          # E[x^2] - E[x]^2
    n, m, m2 = pr.stats.merge_moments([pr.stats.moment_parts(a, axis=0),
                                       pr.stats.moment_parts(b, axis=0)])

Storage and arithmetic.  The storage format S is x's dtype (float16, bfloat16, float32 or
float64); ``accum`` names the arithmetic format A (default S; S or wider, as everywhere in
precision).  Every +, -, *, / below is rounded to A (R(.)), results are rounded once from A into
S.  Counts n enter A rounded once (a PrecisionWarning says so when n is not exact in A, e.g.
n = 257 in bfloat16, or n > 65504 in float16, where it overflows).

Axes.  ``axis`` is None (every axis), an int or a tuple of ints.  The reduced elements of one
output entry are taken in row-major order over the reduced axes (for (N, C, H, W) over
(0, 2, 3): n, then h, then w).  When the kept axes are consecutive -- (N, C) over N, (N, C, H, W)
over N, H, W, any leading or trailing block -- a C-contiguous input is read in place; otherwise
(and for non-contiguous inputs) it is first copied into that layout.

Summation ``order`` (the same orders as ``precision.exact.emulate(A).sum``; t_i the terms):
    "pairwise" (default)  leaves of 128 consecutive terms, each summed in 8 lanes (lane j adds
                          terms j, j+8, ... from +0; lanes combined ((l0+l1)+(l2+l3))+((l4+l5)+
                          (l6+l7))), leaf sums combined level by level; error <= ~log2(n) u sum|t|
    "sequential"          s = R(s + t_i) in order; error <= (n-1) u sum|t| (Higham 2002, 4.2);
                          strict float16/bfloat16 sums stagnate (a sum of ones stops at 2048/256)
    "kahan"               compensated: u_i = R(t_i - c), s' = R(s + u_i), c = R(R(s' - s) - u_i)

Variance ``method`` (mean = R(S / n_A), S the sum of x in ``order``):
    "two-pass" (default)  M2 = sum R(d_i * d_i), d_i = R(x_i - mean);  var = R(M2 / R(n - ddof))
                          (what numpy, PyTorch and jnp.var compute; error ~ n u + (n u kappa)^2)
    "one-pass"            Q = sum R(x_i * x_i);  var = R(R(Q / n_A) - R(mean * mean)) for ddof = 0,
                          R(var0 * c) with c = n / (n - ddof) rounded once otherwise.  This is
                          E[x^2] - E[x]^2: Flax's use_fast_variance (which then clamps at 0) and
                          Keras 3's torch/numpy backends' moments.  Its relative error grows like
                          n u (1 + mean^2/var) and the result can be negative (Chan, Golub &
                          LeVeque 1983); float16's Q overflows once sum x^2 > 65504.
    "welford"             sequential (order must be "sequential" or left at None):
                          d = R(x_i - m);  m = R(m + R(d / i_A));  M2 = R(M2 + R(d * R(x_i - m)));
                          mean = m (not R(S / n_A)),  var = R(M2 / R(n - ddof))  (Welford 1962)

``merge_moments`` combines (count, mean, M2) parts as Chan, Golub & LeVeque (1979) do, for
shards of any sizes, left to right: with n = n_a + n_b,
    delta = R(m_b - m_a);  m = R(m_a + R(delta * w));  M2 = R(R(M2_a + M2_b) + R(R(delta * delta) * h))
where w = n_b / n and h = n_a n_b / n are computed exactly and rounded once into A.

Threads: channels (or blocks of 512 columns) are split between ``num_threads`` threads (default:
all CPUs for large inputs, honouring OMP_NUM_THREADS; 1..256); each channel is reduced by one
thread in the fixed order, so results are bit-identical for any thread count.  Nothing the size
of the input is allocated (unless the layout needs the copy above).

Twins: ``precision.exact.stats`` has the exact values (rationals) and the emulated replay of
each algorithm (``emulated_sum``, ``emulated_moments``, ...), bit-identical to these kernels.
"""
from __future__ import annotations

import numbers
import warnings
from fractions import Fraction

import ml_dtypes
import numpy as np

from . import _checks
from . import formats as _formats
from ._kernels import load as _load

__all__ = [
    "sum",
    "mean",
    "var",
    "moments",
    "moment_parts",
    "merge_moments",
    "ORDERS",
    "METHODS",
]

ORDERS = ("pairwise", "sequential", "kahan")
METHODS = ("two-pass", "one-pass", "welford")
MAX_THREADS = _checks.MAX_THREADS
# Below this many elements a parallel region costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 16
_ARITH_DTYPE = {"f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16),
                "f32": np.dtype(np.float32), "f64": np.dtype(np.float64)}
_builtin_sum = sum


def _kernels():
    return _load("stats")


# ----------------------------------------------------------------------------- arguments
def _array(x, name: str = "x") -> np.ndarray:
    return _checks.float_array(x, name)    # a misaligned view becomes an aligned copy


def threads(num_threads, work: int) -> int:
    """The thread count of a call: ``num_threads`` checked (an int in 1..256), or for None the CPUs
    this process may use when ``work`` (elements) is large enough to pay for a parallel region
    (one thread in a forked child: see :mod:`precision._checks`)."""
    return _checks.threads(num_threads, work, _PARALLEL_MIN_WORK)


def _axes(axis, ndim: int) -> tuple:
    """The reduced axes, sorted, as non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    result = []
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"axis {axis!r} names an axis twice")
    return tuple(sorted(result))


def _order(order, method=None) -> str:
    if method == "welford":
        if order not in (None, "sequential"):
            raise ValueError(f"method='welford' is sequential by definition; order must be "
                             f"None or 'sequential', got {order!r}")
        return "sequential"
    if order is None:
        return "pairwise"
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
    return order


def _method(method) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


class Layout:
    """x viewed as a C-contiguous (A, K, B) array (stats.h): K kept channels, each reducing a
    sequence of n = A*B elements in row-major order over the reduced axes."""

    def __init__(self, x: np.ndarray, axis):
        axes = _axes(axis, x.ndim)
        kept = tuple(i for i in range(x.ndim) if i not in axes)
        self.axes = axes
        self.kept_shape = tuple(x.shape[i] for i in kept)
        self.keepdims_shape = tuple(1 if i in axes else x.shape[i] for i in range(x.ndim))
        consecutive = not kept or kept == tuple(range(kept[0], kept[-1] + 1))
        if consecutive:
            lo = kept[0] if kept else x.ndim
            hi = kept[-1] + 1 if kept else x.ndim
            arr = np.ascontiguousarray(x)
        else:  # kept axes first, reduced axes after them in their own order: a copy
            arr = np.ascontiguousarray(np.transpose(x, kept + axes))
            lo, hi = 0, len(kept)
            x = arr
        shape = x.shape
        self.A = int(np.prod(shape[:lo], dtype=np.int64))
        self.K = int(np.prod(shape[lo:hi], dtype=np.int64))
        self.B = int(np.prod(shape[hi:], dtype=np.int64))
        self.n = self.A * self.B
        self.flat = arr.reshape(-1)

    def shape(self, keepdims: bool) -> tuple:
        return self.keepdims_shape if keepdims else self.kept_shape


def kernel_view(arr: np.ndarray) -> np.ndarray:
    """The array as the kernels take it (16-bit formats as their uint16 bit patterns)."""
    return arr.view(np.uint16) if arr.dtype.itemsize == 2 else arr


def compute_dtype(arith) -> np.dtype:
    """The numpy dtype of the kernels' per-channel vectors for arithmetic format A."""
    return np.dtype(np.float64) if arith.short == "f64" else np.dtype(np.float32)


def arith_dtype(arith) -> np.dtype:
    """numpy's dtype of A: its elementwise +, -, *, /, sqrt are rounded correctly to A (float16
    and bfloat16 compute in float32 and round once, which is exact: 24 >= 2p + 2)."""
    return _ARITH_DTYPE[arith.short]


def count_in(n: int, arith, what: str = "count") -> np.generic:
    """n rounded once into A (a numpy scalar of A's dtype), warning when it is not n."""
    n_a = arith.round(n)
    if float(n_a) != n:
        warnings.warn(f"{what} {n} is not exact in {arith.name}: it enters the arithmetic as "
                      f"{float(n_a):g}", _formats.PrecisionWarning, stacklevel=4)
    return np.asarray(n_a, dtype=arith_dtype(arith))[()]


def exact_in(value: Fraction, arith, what: str = None) -> np.generic:
    """An exact rational rounded once into A, as a numpy scalar of A's dtype (with a
    PrecisionWarning naming ``what`` when it is not exact in A)."""
    r = arith.round(value)
    if what is not None and (not np.isfinite(float(r)) or Fraction(float(r)) != value):
        warnings.warn(f"{what} = {float(value):g} is not exact in {arith.name}: it enters the "
                      f"arithmetic as {float(r):g}", _formats.PrecisionWarning, stacklevel=4)
    return np.asarray(r, dtype=arith_dtype(arith))[()]


def reduce_terms(layout: Layout, kind: str, order: str, arith, fmt, nt: int,
                 centre=None, y_flat=None) -> np.ndarray:
    """Per-channel sums of the terms ``kind`` in ``order``, as an array of A's dtype (K,)."""
    ker = _kernels()
    cd = compute_dtype(arith)
    out = np.empty(layout.K, dtype=cd)
    if layout.K == 0:
        return out.astype(arith_dtype(arith))
    c = (np.zeros(layout.K, dtype=cd) if centre is None
         else np.ascontiguousarray(np.asarray(centre).astype(cd)))
    xv = kernel_view(layout.flat)
    yv = xv if y_flat is None else kernel_view(y_flat)
    fn = getattr(ker, f"reduce_{fmt.short}_{arith.short}")
    fn(xv, yv, layout.A, layout.K, layout.B, ker.TERMS[kind], ker.ORDERS[order], c, out, nt)
    return out.astype(arith_dtype(arith))


def welford_terms(layout: Layout, arith, fmt, nt: int):
    """Welford's (mean, M2) per channel, arrays of A's dtype."""
    ker = _kernels()
    cd = compute_dtype(arith)
    m = np.empty(layout.K, dtype=cd)
    m2 = np.empty(layout.K, dtype=cd)
    if layout.K:
        getattr(ker, f"welford_{fmt.short}_{arith.short}")(
            kernel_view(layout.flat), layout.A, layout.K, layout.B, m, m2, nt)
    ad = arith_dtype(arith)
    return m.astype(ad), m2.astype(ad)


def to_storage(values, fmt) -> np.ndarray:
    """Values of A rounded once into S (an array of S's dtype)."""
    return np.asarray(fmt.round(np.asarray(values)), dtype=fmt.dtype)


def _check_out(out, shape, fmt, x) -> None:
    # the results are assigned by numpy (out[...] = values): any strides, any alignment
    _checks.check_out(out, "out", shape, fmt.dtype, [("x", x)], contiguous=False, aligned=False)


def _finish(values, fmt, layout: Layout, keepdims: bool, out):
    result = to_storage(values, fmt).reshape(layout.shape(keepdims))
    if out is not None:
        out[...] = result
        return out
    return result[()] if result.ndim == 0 else result


def _prepare(x, axis, accum, num_threads, need: int = 1):
    x = _array(x)
    fmt = _formats.of(x)
    arith = _formats.arithmetic_format(accum, fmt)
    nt = threads(num_threads, x.size)
    layout = Layout(x, axis)
    if layout.n < need and layout.K > 0:
        raise ValueError(f"cannot reduce {layout.n} element(s) per output entry (shape "
                         f"{x.shape}, axis {axis!r}): at least {need} needed")
    return x, fmt, arith, nt, layout


# ----------------------------------------------------------------------------- the API
def sum(x, axis=None, *, order="pairwise", accum=None, keepdims=False, out=None,  # noqa: A001
        num_threads=None):
    """Sum over ``axis`` in the fixed ``order`` (module docstring), each addition rounded to A,
    the result rounded once into x's format.  The empty sum is +0.

    x: an array of one of our formats; axis: None, an int or a tuple of ints; order:
    "pairwise" (default), "sequential" or "kahan"; accum: the arithmetic format A (default x's);
    out: where to write (the result's shape, x's dtype, writable, not overlapping x).
    Returns an array of x's dtype (a numpy scalar for a full reduction) or ``out``.
    """
    order = _order(order)
    x, fmt, arith, nt, layout = _prepare(x, axis, accum, num_threads, need=0)
    if out is not None:
        _check_out(out, layout.shape(keepdims), fmt, x)
    s = reduce_terms(layout, "x", order, arith, fmt, nt)
    return _finish(s, fmt, layout, keepdims, out)


def _mean_a(layout, order, arith, fmt, nt):
    s = reduce_terms(layout, "x", order, arith, fmt, nt)
    with np.errstate(all="ignore"):
        return s / count_in(layout.n, arith)


def mean(x, axis=None, *, order="pairwise", accum=None, keepdims=False, out=None,
         num_threads=None):
    """mean = R(S / n_A): the sum S in ``order`` (see :func:`sum`) divided by the count rounded
    once into A, then rounded once into x's format.  Arguments as :func:`sum`; an empty
    reduction is a ValueError."""
    order = _order(order)
    x, fmt, arith, nt, layout = _prepare(x, axis, accum, num_threads)
    if out is not None:
        _check_out(out, layout.shape(keepdims), fmt, x)
    return _finish(_mean_a(layout, order, arith, fmt, nt), fmt, layout, keepdims, out)


def _ddof(ddof, n: int):
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (numbers.Real, np.floating,
                                                                  np.integer)):
        raise TypeError(f"ddof must be a real number, got {type(ddof).__name__}")
    if not 0 <= ddof < n:
        raise ValueError(f"ddof must satisfy 0 <= ddof < n = {n} (the divisor n - ddof must be "
                         f"positive), got {ddof!r}")
    return Fraction(ddof) if not isinstance(ddof, (float, np.floating)) else Fraction(float(ddof))


def moments_a(layout: Layout, method: str, order: str, ddof, arith, fmt, nt: int):
    """(mean, var, M2) per channel as arrays of A's dtype (module docstring's formulas)."""
    n = layout.n
    dd = _ddof(ddof, n)
    with np.errstate(all="ignore"):  # overflow and NaN are results here, as IEEE defines them
        if method == "welford":
            m, m2 = welford_terms(layout, arith, fmt, nt)
            return m, m2 / exact_in(n - dd, arith, "n - ddof"), m2
        n_a = count_in(n, arith)
        s = reduce_terms(layout, "x", order, arith, fmt, nt)
        m = s / n_a
        if method == "two-pass":
            m2 = reduce_terms(layout, "dev2", order, arith, fmt, nt, centre=m)
            return m, m2 / exact_in(n - dd, arith, "n - ddof"), m2
        q = reduce_terms(layout, "sq", order, arith, fmt, nt)
        var0 = q / n_a - m * m
        var = var0 if dd == 0 else var0 * exact_in(Fraction(n) / (n - dd), arith,
                                                   "n / (n - ddof)")
        return m, var, var0 * n_a


def var(x, axis=None, *, ddof=0, method="two-pass", order=None, accum=None, keepdims=False,
        out=None, num_threads=None):
    """Variance over ``axis``: M2 / (n - ddof) by ``method`` (module docstring), the result
    rounded once into x's format.

    ddof: 0 (default, the biased variance) or any real 0 <= ddof < n; method: "two-pass"
    (default), "one-pass" or "welford"; order: the summation order of the sums (default
    "pairwise"; Welford is sequential).  Other arguments as :func:`sum`.
    """
    method = _method(method)
    order = _order(order, method)
    x, fmt, arith, nt, layout = _prepare(x, axis, accum, num_threads)
    if out is not None:
        _check_out(out, layout.shape(keepdims), fmt, x)
    _, v, _ = moments_a(layout, method, order, ddof, arith, fmt, nt)
    return _finish(v, fmt, layout, keepdims, out)


def moments(x, axis=None, *, ddof=0, method="two-pass", order=None, accum=None, keepdims=False,
            num_threads=None):
    """(mean, variance) over ``axis`` in one call: the mean and variance of :func:`var`'s
    ``method`` (for "two-pass" and "one-pass" the mean is R(S / n_A), for "welford" Welford's
    running mean), each rounded once into x's format.  Arguments as :func:`var`."""
    method = _method(method)
    order = _order(order, method)
    x, fmt, arith, nt, layout = _prepare(x, axis, accum, num_threads)
    m, v, _ = moments_a(layout, method, order, ddof, arith, fmt, nt)
    return _finish(m, fmt, layout, keepdims, None), _finish(v, fmt, layout, keepdims, None)


def moment_parts(x, axis=None, *, method="two-pass", order=None, accum=None, num_threads=None):
    """(count, mean, M2) over ``axis``, the input of :func:`merge_moments`.  M2 is the sum of
    squared deviations of ``method`` (for "one-pass" R(var0 * n_A)); mean and M2 are rounded
    once into x's format, count is a Python int."""
    method = _method(method)
    order = _order(order, method)
    x, fmt, arith, nt, layout = _prepare(x, axis, accum, num_threads)
    m, _, m2 = moments_a(layout, method, order, 0, arith, fmt, nt)
    return layout.n, _finish(m, fmt, layout, False, None), _finish(m2, fmt, layout, False, None)


def merge_moments(parts, *, accum=None):
    """Combine parts (count, mean, M2) of disjoint shards into those of their union, left to
    right, by Chan, Golub & LeVeque's pairwise update (module docstring).

    parts: a non-empty sequence of (count, mean, M2): count a positive int, mean and M2 arrays
    (or scalars) of one format and shape.  accum: the arithmetic format A.  Returns (count, mean,
    M2) with mean and M2 rounded once into the parts' format; var = M2 / (count - ddof).
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge_moments needs at least one part")
    checked = []
    fmt = shape = None
    for i, part in enumerate(parts):
        try:
            count, m, m2 = part
        except (TypeError, ValueError):
            raise TypeError(f"part {i} must be a (count, mean, M2) triple") from None
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, numbers.Integral):
            raise TypeError(f"part {i}: count must be an int, got {type(count).__name__}")
        if count < 1:
            raise ValueError(f"part {i}: count must be positive, got {count}")
        m = _array(m, f"part {i} mean")
        m2 = _array(m2, f"part {i} M2")
        if fmt is None:
            fmt, shape = _formats.of(m), m.shape
        for name, arr in (("mean", m), ("M2", m2)):
            if arr.dtype != fmt.dtype:
                raise TypeError(f"part {i} {name} has dtype {arr.dtype}, the first part's mean "
                                f"{fmt.dtype}: all parts must share one format")
            if arr.shape != shape:
                raise ValueError(f"part {i} {name} has shape {arr.shape}, expected {shape}")
        checked.append((int(count), m, m2))
    arith = _formats.arithmetic_format(accum, fmt)
    ad = arith_dtype(arith)
    with np.errstate(all="ignore"):
        n, m, m2 = _chan_merges(checked, arith, ad)
    m = to_storage(m, fmt)
    m2 = to_storage(m2, fmt)
    return n, (m[()] if m.ndim == 0 else m), (m2[()] if m2.ndim == 0 else m2)


def _chan_merges(checked, arith, ad):
    n, m, m2 = checked[0][0], checked[0][1].astype(ad), checked[0][2].astype(ad)
    for nb, mb, m2b in checked[1:]:
        mb, m2b = mb.astype(ad), m2b.astype(ad)
        total = n + nb
        w = exact_in(Fraction(nb, total), arith)
        h = exact_in(Fraction(n * nb, total), arith)
        delta = mb - m
        m = m + delta * w
        m2 = (m2 + m2b) + (delta * delta) * h
        n = total
    return n, m, m2
