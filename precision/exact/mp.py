"""Exact references in arbitrary precision (mpmath; gmpy2 is its backend when installed).

Every function takes numpy arrays of float16, bfloat16, float32 or float64 (or integer arrays,
or object arrays of mpmath ``mpf`` / gmpy2 ``mpfr`` / ints) and treats each element as the exact
real number it denotes: float elements go through float64, which holds every value of every
format, into ``mpf`` without rounding (long doubles wider than float64 are converted exactly
from their own bits).  The mathematical function of those exact inputs is then
evaluated with q = ``dps + GUARD_DIGITS`` significant decimal digits (``mpmath.workdps``; the
global mpmath state is restored on return; like mpmath itself this is not thread-safe).

Results are numpy **object arrays of mpmath.mpf** (an ``mpf`` scalar for a reduced loss or a
1-D ``logsumexp``), carrying all their digits, so that a caller rounds them to any format in
one step: ``precision.float16.round(result)`` (correctly rounded), or :func:`to_float64`.

Accuracy.  Each result has a relative error below about 10^-dps, and rounds correctly (to
nearest) into every format of at most ``dps·log2(10)`` bits, float64 included, unless the exact
value lies within that error of a rounding boundary without being on it (astronomically rare
for transcendental values; pass a larger ``dps`` to shrink it further).  Two mechanisms make
this hold where naive evaluation fails:

* *Exact parts, rounding to odd.*  Many results are an exact rational of the inputs plus a
  tiny transcendental correction: log_softmax of a dominated logit is dᵢ − L with dᵢ = xᵢ − m
  exact and L = log1p(Σ e^(xⱼ−m)) perhaps 10^-100; dᵢ can be exactly a float16 or float64
  midpoint, and the sign of the correction then decides the rounding.  Such results are
  computed as E + δ with E exact and the final addition *rounded to odd* at the working
  precision (truncate, then set the last bit if inexact), which rounds to nearest in every
  narrower format exactly as the true value does (Boldo & Melquiond's theorem; the same holds
  for the division by N of a mean, N < 2^(q − 55)).
* *Measured cancellation.*  Where the formula must subtract nearly equal quantities (the
  gradient T pⱼ − tⱼ of a converged model, KL of nearly equal distributions, lse near 0), the
  bits lost are measured (log2 of Σ|approximate parts| / |result|) and a row that lost more than
  ``GUARD_DIGITS`` digits is recomputed with that many more.
* *Proven zeros.*  A result that cancels to exactly zero is accepted only when it is provably
  zero: sums of eᵛ over distinct rationals v with rational coefficients vanish only if every
  coefficient does (Lindemann–Weierstrass), so gⱼ is 0 exactly iff all finite logits are equal
  (n of them) and T = n tⱼ, KL is 0 when moreover every positive tᵢ is 1/n, and lse and the CE
  loss are never 0 through cancellation.  Any other zero is a rounding artefact (e.g.
  exp(−10^-150) is 1 at 50 digits, which made the gradient of x = [0, 10^-150, 0] against
  t = 1/3 vanish): the row is redone at twice the digits until the result resolves.
* *Limits.*  A result whose absolute error bound falls below 2^-(4096 + 16)
  (``EXACT_EXPONENT_LIMIT``: thousands of binades below every format's smallest subnormal) is
  accepted as it is: it then stands for a value that rounds to ±0 in every format, and only that
  is promised for it (e.g. the gradient of a tie against logits 10^38 lower, about
  10^-(10^37)); its sign is not guaranteed.  Otherwise working precision goes up to
  8·(dps + GUARD_DIGITS) + 1400 digits (enough to resolve every float64 exponent, 2^-1074
  included), and a row that still cancels beyond that raises :class:`PrecisionExhausted`
  rather than return fewer digits than promised.  (Reduced
  totals over rows are checked the same way, except that a total cancelling to exactly zero
  across rows of opposite sign is accepted.)

Formulas (rows are the last axis; x a row of logits, t a row of targets, C its length):

* m = max x (first occurrence, index k), dᵢ = xᵢ − m (exact), eᵢ = exp(dᵢ) (e_k = 1),
  r = Σ_{i≠k} eᵢ, S = 1 + r, L = log1p(r);
* logsumexp(x) = m + L;  log_softmax(x)ᵢ = dᵢ − L;  softmax(x)ᵢ = eᵢ / S;
* softmax_cross_entropy, per row: loss = Σᵢ tᵢ (lse − xᵢ) = Σᵢ tᵢ (−dᵢ) + T·L with
  T = Σᵢ tᵢ (exact: soft targets stored in a float format need not sum to 1); its gradient
  with respect to x: gⱼ = T pⱼ − tⱼ, evaluated as −tⱼ + T eⱼ/S for j ≠ k and as
  (T − t_k) − T r/S for j = k (so p_k ≈ 1 loses nothing);
* kl_divergence(t, x) = Σᵢ tᵢ (log tᵢ − log_softmax(x)ᵢ) = Σᵢ tᵢ log tᵢ + Σᵢ tᵢ (−dᵢ) + T·L;
* entropy(p) = −Σᵢ pᵢ log pᵢ;
* elementwise: exp, log, log1p, expm1, sqrt of each element.

Special values.  A row containing NaN gives NaN.  −inf logits are ordinary (pᵢ = 0,
log_softmaxᵢ = −inf).  Rows containing +inf, or made only of −inf, have logsumexp +inf and −inf
respectively, and their other results are evaluated as the formulas xᵢ − lse, exp(xᵢ − lse),
Σ tᵢ (lse − xᵢ) and T pⱼ − tⱼ with IEEE rules (inf − inf = NaN), which is what an implementation
computes.  In the sums of the losses a term whose weight tᵢ (or pᵢ) is exactly 0 is left out: it
contributes 0 whatever the logit (the convention 0·log 0 = 0).  A negative weight inside a
logarithm (log tᵢ, log pᵢ with tᵢ < 0) gives NaN.
"""
from __future__ import annotations

import math
import numbers

import mpmath
import numpy as np
from mpmath import mpf
from mpmath.libmp import from_float, from_int, from_man_exp, round_nearest

from ..formats import EXACT_EXPONENT_LIMIT, is_extended

__all__ = [
    "PrecisionExhausted",
    "DEFAULT_DPS",
    "GUARD_DIGITS",
    "logsumexp",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "kl_divergence",
    "entropy",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sqrt",
    "to_float64",
]

DEFAULT_DPS = 40
GUARD_DIGITS = 10
_GUARD_BITS = GUARD_DIGITS * math.log2(10)
_BITS_TO_DIGITS = math.log10(2)
_MAX_DPS_FACTOR = 8          # retries stop at 8 times the requested working digits ...
_MAX_EXTRA_DIGITS = 1400     # ... plus this many: enough for every exponent of float64 inputs
_REDUCTIONS = ("mean", "sum", "none")
_LOST_ALL = math.inf         # marker: nonzero terms cancelled to a zero that is not proven


class PrecisionExhausted(ArithmeticError):
    """An exact reference could not reach its promised relative accuracy within the working
    precision it allows itself (a result that keeps cancelling); retry with a larger dps."""

_make_mpf = mpmath.mp.make_mpf
_ZERO = mpf(0)
_ONE = mpf(1)
_NAN = mpmath.nan
_INF = mpmath.inf


# --------------------------------------------------------------------------- input handling
def _check_dps(dps):
    if isinstance(dps, (bool, np.bool_)) or not isinstance(dps, numbers.Integral) or dps < 1:
        raise ValueError(f"dps must be a positive integer number of decimal digits, got {dps!r}")
    return int(dps)


def _exact_mpf(value) -> mpf:
    """One element as an exact mpf (floats, ints, mpf, mpfr); see the module docstring."""
    if type(value) is float:
        return _make_mpf(from_float(value, 53, round_nearest))
    if isinstance(value, mpf):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, np.floating) and is_extended(value.dtype):
        return _longdouble_mpf(value)
    if isinstance(value, numbers.Integral):
        return _make_mpf(from_int(int(value)))
    if type(value).__name__ == "mpfr":
        import gmpy2

        if gmpy2.is_nan(value):
            return _NAN
        if gmpy2.is_infinite(value):
            return _INF if value > 0 else -_INF
        man, exp = value.as_mantissa_exp()  # exact, without building 2^|exp|
        return _make_mpf(from_man_exp(int(man), int(exp)))
    if isinstance(value, (float, np.floating)) or (
            isinstance(value, np.generic) and value.dtype.kind == "V"):
        return _make_mpf(from_float(float(value), 53, round_nearest))
    raise TypeError(f"cannot take a {type(value).__name__} as an exact number")


def _longdouble_mpf(value) -> mpf:
    """A long double (wider than float64) as the exact mpf it denotes."""
    if not np.isfinite(value):
        return _make_mpf(from_float(float(value), 53, round_nearest))
    num, den = value.as_integer_ratio()
    return _make_mpf(from_man_exp(num, 1 - den.bit_length()))   # den is a power of two


def _as_array(x, name):
    """x as a numpy array whose elements convert exactly: float64, integers or objects."""
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if is_extended(arr.dtype):   # long double: every bit kept, not cut to float64
        out = np.empty(arr.shape, dtype=object)
        flat = out.reshape(-1)
        for i, v in enumerate(arr.reshape(-1)):
            flat[i] = _longdouble_mpf(v)
        return out
    if kind == "f" or (kind == "V" and arr.dtype.itemsize == 2):  # bfloat16 is kind "V"
        with np.errstate(invalid="ignore"):
            return arr.astype(np.float64)  # exact for every format here
    if kind in "iuO":
        return arr
    raise TypeError(f"{name} must be an array of numbers (float16, bfloat16, float32, float64, "
                    f"integers or exact objects), got dtype {arr.dtype}")


def _rows(arr, name):
    """The rows over the last axis, each a list of exact mpf."""
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    flat = arr.reshape(-1, arr.shape[-1])
    return [[_exact_mpf(v) for v in row] for row in flat.tolist()]


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _object_array(values, shape):
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out.reshape(shape)


def _object_rows(rows, shape):
    return _object_array([v for row in rows for v in row], shape)


# --------------------------------------------------------------------------- exact arithmetic
def _exact_sum(terms):
    total = _ZERO
    for term in terms:
        total = mpmath.fadd(total, term, exact=True)
    return total


def _odd(op, a, b):
    """op(a, b) (mpmath.fadd/fsub/fdiv) rounded to odd at the working precision.

    Truncate toward zero; if that was inexact, set the last of the q bits.  A value rounded so
    then rounds to nearest in any precision p <= q - 2 exactly as the true value does.
    """
    prec = mpmath.mp.prec
    low = op(a, b, prec=prec, rounding="d")
    if not mpmath.isfinite(low) or low == op(a, b, prec=prec, rounding="u"):
        return low
    sign, man, exp, bc = low._mpf_
    shift = prec - bc
    man = (int(man) << shift) | 1
    return _make_mpf(from_man_exp(-man if sign else man, exp - shift))


def _odd_sum(exact_part, approx_part):
    """E + δ with E exact, rounded to odd."""
    return _odd(mpmath.fadd, exact_part, approx_part)


class _Lost(float):
    """Bits lost to cancellation, with the magnitude (log2) of the parts that cancelled: a
    result's absolute error at q bits of working precision is about 2^(weight_mag - q)."""

    def __new__(cls, bits, weight_mag):
        obj = super().__new__(cls, bits)
        obj.weight_mag = weight_mag
        return obj


def _lost_bits(approx_weight, result):
    """Bits lost to cancellation: log2(Σ|approximate parts| / |result|), 0 if none;
    ``_LOST_ALL`` (with the parts' magnitude) for a zero result."""
    if not approx_weight or not mpmath.isfinite(approx_weight) or not mpmath.isfinite(result):
        return 0
    weight_mag = int(mpmath.mag(approx_weight))
    if not result:
        return _Lost(_LOST_ALL, weight_mag)
    return _Lost(max(0, weight_mag - mpmath.mag(result)), weight_mag)


def _below_every_format(lost) -> bool:
    """Whether a result's absolute error at the current precision is below
    2^-(EXACT_EXPONENT_LIMIT + 16): the result (a zero or a residue of that size) then stands
    for a value that rounds to +-0 in every format (module docstring, "Limits")."""
    weight_mag = getattr(lost, "weight_mag", None)
    return weight_mag is not None and \
        weight_mag - mpmath.mp.prec < -(EXACT_EXPONENT_LIMIT + 16)


# --------------------------------------------------------------------------- precision control
def _digits_needed(dps, lost_bits):
    """Working digits for a result that loses ``lost_bits`` to cancellation: dps + GUARD_DIGITS
    absorbs up to GUARD_DIGITS lost digits; beyond that every lost digit is added."""
    lost_digits = int(math.ceil(lost_bits * _BITS_TO_DIGITS))
    return dps + GUARD_DIGITS + (lost_digits if lost_digits > GUARD_DIGITS else 0)


def _adaptive(rows, row_fn, dps):
    """Apply row_fn(row) -> (result, lost_bits) to every row with enough working digits.

    First pass at dps + GUARD_DIGITS; a row that lost more than the guard is redone with the
    lost digits added (again if the loss measured at the higher precision is larger); a row
    with a zero that cancelled from nonzero parts and is not proven (``_LOST_ALL``: the row
    functions prove the zeros that are true) is redone at twice the digits until the zero
    resolves.  A row still short of digits at the cap raises :class:`PrecisionExhausted`.
    """
    base = dps + GUARD_DIGITS
    cap = _MAX_DPS_FACTOR * base + _MAX_EXTRA_DIGITS
    results = [None] * len(rows)
    pending = [(i, base) for i in range(len(rows))]
    while pending:
        by_dps = {}
        for i, work in pending:
            by_dps.setdefault(work, []).append(i)
        pending = []
        for work, items in sorted(by_dps.items()):
            with mpmath.workdps(work):
                for i in items:
                    res, lost = row_fn(rows[i])
                    results[i] = res
                    needed = 2 * work if lost == _LOST_ALL else _digits_needed(dps, lost) + 2
                    if work >= needed - 2 or _below_every_format(lost):
                        continue
                    if work >= cap:
                        why = ("a result cancelled to a zero that is not exact" if lost == _LOST_ALL
                               else f"a result lost {lost:.0f} bits to cancellation")
                        raise PrecisionExhausted(
                            f"row {i}: {why} even with {work} digits; the reference cannot "
                            f"promise {dps} digits here (pass a larger dps to allow more)")
                    pending.append((i, min(cap, needed)))
    return results


def _reduce_pairs(pairs, reduction, dps):
    """Sum or mean of per-row values given as (exact part, approximate part) pairs.

    Returns (value, lost_bits); the exact parts add exactly, the approximate ones at the
    working precision, and the total (and the division by N) is rounded to odd.  Each row is
    accurate relative to its own value, so the bits lost are those of rows cancelling one
    another: log2(Σ|rowᵢ| / |Σ rowᵢ|).
    """
    n = len(pairs)
    with mpmath.workdps(dps + GUARD_DIGITS):
        exact_part = _exact_sum(e for e, _ in pairs)
        # rows that cancelled internally carry more digits than this precision: keep them
        widest = max((a._mpf_[3] for _, a in pairs if a and mpmath.isfinite(a)), default=0)
        with mpmath.workprec(max(mpmath.mp.prec, widest + 16)):
            approx_part = mpmath.fsum(a for _, a in pairs)
        total = _odd_sum(exact_part, approx_part)
        magnitudes = mpmath.fsum(abs(mpmath.fadd(e, a)) for e, a in pairs)
        lost = _lost_bits(magnitudes, total)
        if reduction == "mean":
            total = _odd(mpmath.fdiv, total, n) if n else _NAN
    return total, lost


def _reduce_with_enough_digits(rows, row_fn, reduction, dps, pair_of=lambda res: res):
    """Per-row (E, δ) pairs and their reduced total, with the rows recomputed at more digits
    when the total cancels (rows of opposite signs): the rows' δ parts then need that many
    more digits of absolute accuracy.  A total that cancels exactly is accepted."""
    work = dps
    while True:
        results = _adaptive(rows, row_fn, work)
        total, lost = _reduce_pairs([pair_of(res) for res in results], reduction, work)
        if lost == _LOST_ALL or work >= _MAX_DPS_FACTOR * dps:
            return results, total
        needed = _digits_needed(dps, lost) - GUARD_DIGITS
        if work >= needed:
            return results, total
        work = needed + 2


# --------------------------------------------------------------------------- one row
class _Parts:
    """The pieces of one row of logits (module docstring, 'Formulas')."""

    __slots__ = ("special", "lse", "m", "k", "d", "e", "r", "S", "L", "lost")

    def __init__(self, x):
        self.lost = 0
        if any(mpmath.isnan(v) for v in x):
            self.special, self.lse = True, _NAN
            return
        if any(v == _INF for v in x):
            self.special, self.lse = True, _INF
            return
        k = None
        for i, v in enumerate(x):
            if v != -_INF and (k is None or v > x[k]):
                k = i
        if k is None:  # empty, or all -inf: the sum of exponentials is 0
            self.special, self.lse = True, -_INF
            return
        self.special = False
        m = x[k]
        d = [mpmath.fsub(v, m, exact=True) for v in x]
        e = [mpmath.exp(di) for di in d]
        e[k] = _ONE
        r = mpmath.fsum(e[:k] + e[k + 1:])
        self.m, self.k, self.d, self.e, self.r = m, k, d, e, r
        self.S = _ONE + r
        self.L = mpmath.log1p(r)
        self.lse = _odd_sum(m, self.L)
        self.lost = _lost_bits(self.L, self.lse)

    def equal_logits(self) -> int:
        """The number of finite logits if they are all equal (then every e_i is 1 or 0 and the
        row's results are rational), else 0."""
        if self.special or any(di != 0 and di != -_INF for di in self.d):
            return 0
        return sum(1 for di in self.d if di == 0)

    def log_softmax(self, x):
        if self.special:
            return [v - self.lse for v in x]
        L = self.L
        return [_odd(mpmath.fsub, di, L) for di in self.d]  # both parts <= 0: no cancellation

    def softmax(self, x):
        if self.special:
            return [mpmath.exp(v - self.lse) for v in x]
        S = self.S
        return [ei / S for ei in self.e]


def _row_logsumexp(x):
    parts = _Parts(x)
    return parts.lse, parts.lost


def _row_log_softmax(x):
    return _Parts(x).log_softmax(x), 0


def _row_softmax(x):
    return _Parts(x).softmax(x), 0


def _smooth(t, smoothing, n_classes):
    """PyTorch's label smoothing t' = (1 − ε) t + ε / C (ε the exact value of the float)."""
    if not smoothing:
        return t
    eps = _exact_mpf(float(smoothing))
    share = eps / n_classes
    keep = _ONE - eps
    return [keep * ti + share for ti in t]


def _neg_d_sum(t, d):
    """Σ tᵢ (−dᵢ) over tᵢ != 0, exactly."""
    return _exact_sum(mpmath.fmul(ti, -di, exact=True) for ti, di in zip(t, d) if ti)


def _make_ce_row(smoothing, want_grad, mean_over):
    """row_fn for softmax_cross_entropy: ((E, δ) of the loss, gradient row or None), lost."""

    def row_fn(row):
        x, t = row
        t = _smooth(t, smoothing, len(x))
        parts = _Parts(x)
        total = _exact_sum(t)
        grad = None
        if parts.special:
            loss = mpmath.fsum([ti * (parts.lse - v) for ti, v in zip(t, x) if ti])
            if want_grad:
                grad = [total * pj - tj for pj, tj in zip(parts.softmax(x), t)]
                if mean_over:
                    grad = [g / mean_over for g in grad]
            return ((loss, _ZERO), grad), 0
        exact_part = _neg_d_sum(t, parts.d)
        approx_part = total * parts.L
        lost = max(parts.lost, _lost_bits(approx_part, _odd_sum(exact_part, approx_part)))
        if want_grad:
            k, e, S = parts.k, parts.e, parts.S
            n_equal = parts.equal_logits()
            grad = []
            for j, tj in enumerate(t):
                if j == k:
                    g_exact = _exact_sum(ti for i, ti in enumerate(t) if i != k)
                    g_approx = -(total * parts.r / S)
                else:
                    g_exact = -tj
                    g_approx = total * e[j] / S
                # T e_j - t_j S = sum over the distinct values v of d of c_v e^v with rational
                # c_v; e^v for distinct rationals v are linearly independent over the rationals
                # (Lindemann-Weierstrass), so g_j = 0 exactly iff every c_v = 0: all finite
                # logits equal (n of them) and T = n t_j.  Any other zero is a rounding artefact.
                if n_equal and parts.d[j] == 0 and total == mpmath.fmul(n_equal, tj, exact=True):
                    g = _ZERO
                else:
                    g = _odd_sum(g_exact, g_approx)
                    lost = max(lost, _lost_bits(g_approx, g))
                if mean_over:
                    g = _odd(mpmath.fdiv, g, mean_over)
                grad.append(g)
        return ((exact_part, approx_part), grad), lost

    return row_fn


def _log_or_nan(v):
    if mpmath.isnan(v) or v < 0:
        return _NAN
    return mpmath.log(v)


def _row_kl(row):
    """(E, δ) of KL(t ‖ softmax(x)) for one row, and the bits lost."""
    t, x = row
    parts = _Parts(x)
    if parts.special:
        log_p = parts.log_softmax(x)
        value = mpmath.fsum([ti * (_log_or_nan(ti) - lp) for ti, lp in zip(t, log_p) if ti])
        return (value, _ZERO), 0
    t_log_t = [ti * _log_or_nan(ti) for ti in t if ti]
    exact_part = _neg_d_sum(t, parts.d)
    tl = _exact_sum(t) * parts.L
    approx_part = mpmath.fsum(t_log_t) + tl
    weight = mpmath.fsum(t_log_t, absolute=True) + abs(tl)
    value = _odd_sum(exact_part, approx_part)
    # KL = sum t_i log(t_i / p_i) is exactly 0 when p is rational (all finite logits equal, n of
    # them: p_i = 1/n) and every positive t_i is 1/n; p is transcendental otherwise
    # (Lindemann-Weierstrass), and other zeros of non-distributions are left unproven
    n_equal = parts.equal_logits()
    if not value and n_equal and all(not ti or mpmath.fmul(n_equal, ti, exact=True) == 1
                                     for ti in t):
        return (exact_part, approx_part), 0
    return (exact_part, approx_part), _lost_bits(weight, value)


def _row_entropy(p):
    terms = [pi * _log_or_nan(pi) for pi in p if pi]
    value = -mpmath.fsum(terms)
    return (_ZERO, value), _lost_bits(mpmath.fsum(terms, absolute=True), value)


# --------------------------------------------------------------------------- public functions
def _rowwise(x, row_fn, dps, axis):
    dps = _check_dps(dps)
    arr = _as_array(x, "x")
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension")
    arr = np.moveaxis(arr, axis, -1)
    return arr, _adaptive(_rows(arr, "x"), row_fn, dps)


def logsumexp(x, axis=-1, *, dps=DEFAULT_DPS):
    """log Σᵢ exp(xᵢ) along ``axis``, evaluated as m + log1p(Σ_{i≠k} exp(xᵢ − m)), m = max x.

    Returns an mpf for 1-D ``x``, else an object array of mpf without ``axis``.
    """
    arr, values = _rowwise(x, _row_logsumexp, dps, axis)
    if arr.ndim == 1:
        return values[0]
    return _object_array(values, arr.shape[:-1])


def log_softmax(x, axis=-1, *, dps=DEFAULT_DPS):
    """xᵢ − logsumexp(x) along ``axis`` (object array of mpf, the shape of x)."""
    arr, rows = _rowwise(x, _row_log_softmax, dps, axis)
    return np.moveaxis(_object_rows(rows, arr.shape), -1, axis)


def softmax(x, axis=-1, *, dps=DEFAULT_DPS):
    """exp(xᵢ − logsumexp(x)) along ``axis`` (object array of mpf, the shape of x)."""
    arr, rows = _rowwise(x, _row_softmax, dps, axis)
    return np.moveaxis(_object_rows(rows, arr.shape), -1, axis)


def _targets_rows(targets, n, c):
    """Soft (N, C) targets or hard (N,) class indices, as rows of exact mpf."""
    t = np.asarray(targets)
    if t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise TypeError(f"class-index targets of shape (N,) must have an integer dtype, "
                            f"got {t.dtype}")
        if t.shape[0] != n:
            raise ValueError(f"targets has {t.shape[0]} entries for {n} rows of logits")
        if n and (t.min() < 0 or t.max() >= c):
            raise ValueError(f"class indices must lie in [0, {c}), got values in "
                             f"[{t.min()}, {t.max()}]")
        rows = []
        for k in t.tolist():
            row = [_ZERO] * c
            row[k] = _ONE
            rows.append(row)
        return rows
    if t.shape != (n, c):
        raise ValueError(f"soft targets must have the logits' shape {(n, c)}, got {t.shape}")
    return _rows(_as_array(t, "targets"), "targets")


def softmax_cross_entropy(logits, targets, *, reduction="mean", label_smoothing=0.0,
                          return_grad=False, dps=DEFAULT_DPS):
    """Softmax cross-entropy of (N, C) logits against soft (N, C) or hard (N,) int targets.

    Per row: loss = Σᵢ tᵢ (lse(x) − xᵢ), with t' = (1 − ε) t + ε/C when ``label_smoothing``
    ε > 0 (PyTorch's definition; hard targets are one-hot; ε is the exact value of the given
    float).  ``reduction``: "mean" (Σ/N), "sum" (an mpf), or "none" (an (N,) object array).

    With ``return_grad=True`` returns ``(loss, grad)``: grad (N, C) is the gradient of the
    reduced loss with respect to the logits, gⱼ = (Σᵢ tᵢ) pⱼ − tⱼ per row, divided by N for
    "mean"; for "none", row n holds the gradient of loss[n] (rows do not interact).
    """
    _check_reduction(reduction)
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(
            label_smoothing, (numbers.Real, np.floating)) or not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    dps = _check_dps(dps)
    x = _as_array(logits, "logits")
    if x.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {x.shape}")
    n, c = x.shape
    rows = list(zip(_rows(x, "logits"), _targets_rows(targets, n, c)))
    mean_over = n if reduction == "mean" else 0
    row_fn = _make_ce_row(label_smoothing, bool(return_grad), mean_over)
    if reduction == "none":
        results = _adaptive(rows, row_fn, dps)
        with mpmath.workdps(dps + GUARD_DIGITS):
            loss = _object_array([_odd_sum(*res[0]) for res in results], (n,))
    else:
        results, loss = _reduce_with_enough_digits(rows, row_fn, reduction, dps,
                                                   pair_of=lambda res: res[0])
    if not return_grad:
        return loss
    return loss, _object_rows([res[1] for res in results], (n, c))


def _reduced_rows(row_fn, rows, shape, reduction, dps):
    if reduction == "none":
        pairs = _adaptive(rows, row_fn, dps)
        with mpmath.workdps(dps + GUARD_DIGITS):
            values = [_odd_sum(*pair) for pair in pairs]
        return values[0] if shape == () else _object_array(values, shape)
    _, total = _reduce_with_enough_digits(rows, row_fn, reduction, dps)
    return total


def kl_divergence(targets, logits, *, reduction="mean", dps=DEFAULT_DPS):
    """KL(t ‖ softmax(x)) = Σᵢ tᵢ (log tᵢ − log_softmax(x)ᵢ) over the last axis (0·log 0 = 0).

    ``targets`` and ``logits`` have the same shape (…, C).  ``reduction``: "mean" over rows
    (PyTorch's "batchmean"), "sum", or "none" (an object array of the leading shape, or an mpf
    for 1-D input).
    """
    _check_reduction(reduction)
    dps = _check_dps(dps)
    t = _as_array(targets, "targets")
    x = _as_array(logits, "logits")
    if t.shape != x.shape:
        raise ValueError(f"targets {t.shape} and logits {x.shape} must have the same shape")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    rows = list(zip(_rows(t, "targets"), _rows(x, "logits")))
    return _reduced_rows(_row_kl, rows, x.shape[:-1], reduction, dps)


def entropy(probs, *, reduction="mean", dps=DEFAULT_DPS):
    """H(p) = −Σᵢ pᵢ log pᵢ over the last axis (0·log 0 = 0; pᵢ < 0 gives NaN).

    ``reduction``: "mean" over rows, "sum", or "none" (an object array of the leading shape, or
    an mpf for 1-D input).
    """
    _check_reduction(reduction)
    dps = _check_dps(dps)
    p = _as_array(probs, "probs")
    if p.ndim == 0:
        raise ValueError("probs must have at least one dimension (the class axis)")
    return _reduced_rows(_row_entropy, _rows(p, "probs"), p.shape[:-1], reduction, dps)


# --------------------------------------------------------------------------- elementwise
def _elementwise(fn, x, dps):
    dps = _check_dps(dps)
    arr = _as_array(x, "x")
    with mpmath.workdps(dps + GUARD_DIGITS):
        values = []
        for v in arr.reshape(-1).tolist():
            y = fn(_exact_mpf(v))
            values.append(y if isinstance(y, mpf) else _NAN)  # complex results: NaN
    out = _object_array(values, arr.shape)
    return out[()] if arr.ndim == 0 else out


def exp(x, *, dps=DEFAULT_DPS):
    """eˣ of each element (object array of mpf, or an mpf for a scalar)."""
    return _elementwise(mpmath.exp, x, dps)


def log(x, *, dps=DEFAULT_DPS):
    """ln x of each element (log 0 = −inf, log of a negative number NaN)."""
    return _elementwise(mpmath.log, x, dps)


def log1p(x, *, dps=DEFAULT_DPS):
    """ln(1 + x) of each element (log1p(−1) = −inf, below −1 NaN)."""
    return _elementwise(mpmath.log1p, x, dps)


def expm1(x, *, dps=DEFAULT_DPS):
    """eˣ − 1 of each element."""
    return _elementwise(mpmath.expm1, x, dps)


def sqrt(x, *, dps=DEFAULT_DPS):
    """√x of each element (NaN for negative x)."""
    return _elementwise(mpmath.sqrt, x, dps)


# --------------------------------------------------------------------------- conversion
def to_float64(values):
    """Exact values (an mpf, or an object array of mpf / mpfr / ints …) correctly rounded to
    float64: a float64 array of the same shape (a numpy float64 for a scalar)."""
    from .emulate import emulate

    rnd = emulate("float64").round
    arr = np.asarray(values, dtype=object)
    out = np.array([rnd(v) for v in arr.reshape(-1)], dtype=np.float64).reshape(arr.shape)
    return out[()] if out.ndim == 0 else out
