"""The twins of :mod:`precision.stats`: exact values and the op-by-op replay of each algorithm.

Exact (the mathematical value of the stored inputs): :func:`sum`, :func:`mean`, :func:`var`,
:func:`moments`, :func:`merge_moments` return numpy object arrays of ``fractions.Fraction``
(sums, means and variances of binary floating-point numbers are rational, so these carry no
error at all); round them into any format with ``fmt.round(result)``.  Inputs must be finite.

Emulated (the kernels' algorithms run through :func:`precision.exact.emulate`, gmpy2, every
operation rounded once into the arithmetic format A): :func:`emulated_sum`,
:func:`emulated_mean`, :func:`emulated_moments` (mean, var, M2), :func:`emulated_merge_moments`.
Same arguments and results as the :mod:`precision.stats` functions, computed one element at a
time: the kernels must match them bit for bit.  The formulas are precision.stats' docstring's;
the summation orders are :func:`precision.exact.emulate.summation`'s.
"""
from __future__ import annotations

from fractions import Fraction

import gmpy2
import numpy as np

from precision import formats as _formats

from .emulate import summation, to_mpfr

__all__ = [
    "sum",
    "mean",
    "var",
    "moments",
    "merge_moments",
    "emulated_sum",
    "emulated_mean",
    "emulated_moments",
    "emulated_merge_moments",
    "sequences",
]


def sequences(x, axis=None):
    """(sequences, kept shape): x's reduced elements as a (K, n) array, each row in row-major
    order over the reduced axes (the order precision.stats sums them in)."""
    x = np.asarray(x)
    ndim = x.ndim
    if axis is None:
        axes = tuple(range(ndim))
    else:
        items = axis if isinstance(axis, tuple) else (axis,)
        axes = tuple(sorted(int(a) % ndim for a in items))
    kept = tuple(i for i in range(ndim) if i not in axes)
    shape = tuple(x.shape[i] for i in kept)
    k = int(np.prod(shape, dtype=np.int64))
    seq = np.transpose(x, kept + axes).reshape(k, -1)
    return seq, shape


def _floats(row):
    with np.errstate(invalid="ignore"):
        return row.astype(np.float64).tolist()


def _object(values, shape):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    out = out.reshape(shape)
    return out[()] if out.ndim == 0 else out


# ------------------------------------------------------------------------------- exact
def _fractions(row):
    vals = _floats(row)
    for v in vals:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("the exact twins take finite values only")
    return [Fraction(v) for v in vals]


def sum(x, axis=None):  # noqa: A001
    """The exact sum over ``axis`` (object array of Fraction)."""
    seq, shape = sequences(x, axis)
    return _object([_fsum(_fractions(r)) for r in seq], shape)


def _fsum(values):
    total = Fraction(0)
    for v in values:
        total += v
    return total


def mean(x, axis=None):
    """The exact mean over ``axis``."""
    seq, shape = sequences(x, axis)
    if seq.shape[1] == 0:
        raise ValueError("the mean of no elements")
    return _object([_fsum(_fractions(r)) / len(r) for r in seq], shape)


def _moments_row(vals, ddof):
    n = len(vals)
    m = _fsum(vals) / n
    m2 = _fsum((v - m) ** 2 for v in vals)
    return m, m2 / (n - Fraction(ddof)), m2


def moments(x, axis=None, ddof=0):
    """The exact (mean, variance with divisor n - ddof) over ``axis``."""
    seq, shape = sequences(x, axis)
    n = seq.shape[1]
    if not 0 <= ddof < n:
        raise ValueError(f"need 0 <= ddof < n = {n}")
    rows = [_moments_row(_fractions(r), ddof) for r in seq]
    return _object([r[0] for r in rows], shape), _object([r[1] for r in rows], shape)


def var(x, axis=None, ddof=0):
    """The exact variance (divisor n - ddof) over ``axis``."""
    return moments(x, axis, ddof)[1]


def merge_moments(parts):
    """The exact (count, mean, M2) of the union of parts given as exact or float values
    (count, mean, M2): the pooled moments n, (sum n_i m_i)/n, sum M2_i + sum n_i (m_i - m)^2."""
    parts = [(int(n), np.asarray(m), np.asarray(m2)) for n, m, m2 in parts]
    total = 0
    for n, _, _ in parts:
        total += n
    shape = parts[0][1].shape

    def exact(a):
        flat = a.reshape(-1)
        if flat.dtype == object:
            return [Fraction(v) if not isinstance(v, Fraction) else v for v in flat]
        return [Fraction(v) for v in _floats(flat)]

    means = [exact(m) for _, m, _ in parts]
    m2s = [exact(m2) for _, _, m2 in parts]
    k = len(means[0])
    mean_all, m2_all = [], []
    for j in range(k):
        mj = _fsum(n * means[i][j] for i, (n, _, _) in enumerate(parts)) / total
        qj = _fsum(m2s[i][j] + n * (means[i][j] - mj) ** 2 for i, (n, _, _) in enumerate(parts))
        mean_all.append(mj)
        m2_all.append(qj)
    return total, _object(mean_all, shape), _object(m2_all, shape)


# ---------------------------------------------------------------------------- emulated
class _Arith:
    """One format's rounded operations on gmpy2 mpfr values."""

    def __init__(self, fmt):
        self.fmt = _formats.format(fmt)
        ctx = self.fmt.context()
        self.add, self.sub, self.mul, self.div = ctx.add, ctx.sub, ctx.mul, ctx.div
        self.sqrt = ctx.sqrt
        self.zero = gmpy2.mpfr(0)
        self._ctx = ctx

    def round(self, value):
        return gmpy2.mpfr(_formats.exact_gmpy(value), 0, self._ctx)

    def sum(self, terms, order):
        return summation(terms, order, self.add, self.sub, self.zero)


def _setup(x, axis, accum):
    arr = np.asarray(x)
    fmt = _formats.of(arr)
    arith = _formats.arithmetic_format(accum, fmt)
    seq, shape = sequences(arr, axis)
    rows = [[to_mpfr(v) for v in _floats(r)] for r in seq]
    return fmt, _Arith(arith), rows, shape, seq.shape[1]


def _store(values, fmt, shape):
    """Values of A (mpfr) rounded once into S: an array of S's dtype (a scalar for shape ())."""
    out = fmt.round(np.array([float(v) for v in values], dtype=np.float64).reshape(shape))
    return out[()] if np.ndim(out) == 0 else out


def _order_for(method, order):
    if method == "welford":
        return "sequential"
    return "pairwise" if order is None else order


def emulated_sum(x, axis=None, *, order="pairwise", accum=None):
    """precision.stats.sum replayed op by op."""
    fmt, A, rows, shape, _ = _setup(x, axis, accum)
    return _store([A.sum(r, order) for r in rows], fmt, shape)


def emulated_mean(x, axis=None, *, order="pairwise", accum=None):
    """precision.stats.mean replayed op by op: R(S / n_A)."""
    fmt, A, rows, shape, n = _setup(x, axis, accum)
    n_a = A.round(n)
    return _store([A.div(A.sum(r, order), n_a) for r in rows], fmt, shape)


def _welford(A, row):
    m = A.zero
    m2 = A.zero
    for k, v in enumerate(row, start=1):
        k_a = A.round(k)
        d = A.sub(v, m)
        m = A.add(m, A.div(d, k_a))
        m2 = A.add(m2, A.mul(d, A.sub(v, m)))
    return m, m2


def moments_row(A, row, method, order, ddof):
    """(mean, var, M2) of one sequence of mpfr values in A (precision.stats' formulas)."""
    n = len(row)
    dd = Fraction(ddof)
    if method == "welford":
        m, m2 = _welford(A, row)
        return m, A.div(m2, A.round(n - dd)), m2
    n_a = A.round(n)
    m = A.div(A.sum(row, order), n_a)
    if method == "two-pass":
        terms = []
        for v in row:
            d = A.sub(v, m)
            terms.append(A.mul(d, d))
        m2 = A.sum(terms, order)
        return m, A.div(m2, A.round(n - dd)), m2
    if method != "one-pass":
        raise ValueError(f"unknown method {method!r}")
    q = A.sum([A.mul(v, v) for v in row], order)
    var0 = A.sub(A.div(q, n_a), A.mul(m, m))
    v = var0 if dd == 0 else A.mul(var0, A.round(Fraction(n) / (n - dd)))
    return m, v, A.mul(var0, n_a)


def emulated_moments(x, axis=None, *, ddof=0, method="two-pass", order=None, accum=None):
    """precision.stats.moments replayed op by op; returns (mean, var, M2), each rounded once
    into x's format (M2 as precision.stats.moment_parts gives it)."""
    fmt, A, rows, shape, _ = _setup(x, axis, accum)
    order = _order_for(method, order)
    res = [moments_row(A, r, method, order, ddof) for r in rows]
    return tuple(_store([r[i] for r in res], fmt, shape) for i in range(3))


def emulated_merge_moments(parts, *, accum=None):
    """precision.stats.merge_moments replayed op by op (Chan et al., left to right)."""
    parts = [(int(n), np.asarray(m), np.asarray(m2)) for n, m, m2 in parts]
    fmt = _formats.of(parts[0][1])
    A = _Arith(_formats.arithmetic_format(accum, fmt))
    shape = parts[0][1].shape

    def vals(a):
        return [to_mpfr(v) for v in _floats(a.reshape(-1))]

    n, m, m2 = parts[0][0], vals(parts[0][1]), vals(parts[0][2])
    for nb, mb, m2b in parts[1:]:
        mb, m2b = vals(mb), vals(m2b)
        total = n + nb
        w = A.round(Fraction(nb, total))
        h = A.round(Fraction(n * nb, total))
        new_m, new_m2 = [], []
        for j in range(len(m)):
            delta = A.sub(mb[j], m[j])
            new_m.append(A.add(m[j], A.mul(delta, w)))
            new_m2.append(A.add(A.add(m2[j], m2b[j]), A.mul(A.mul(delta, delta), h)))
        n, m, m2 = total, new_m, new_m2
    return n, _store(m, fmt, shape), _store(m2, fmt, shape)
