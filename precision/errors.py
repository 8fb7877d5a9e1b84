"""Error metrics: how far a computed result is from the exact one, in a format's own units.

Definitions (y the exact value, c the computed one, F the format, p its precision, emin its
IEEE minimum exponent, c* = F.round(y) the correctly rounded exact value):

* ``ulp_error(c, y, F)`` = (c − y) / ulp_F(y), signed.  ulp_F(y) is F's spacing at |y|:
  2^(e − p + 1) for 2^e ≤ |y| < 2^(e+1), never below the subnormal spacing 2^(emin − p + 1)
  (so ulp_F(0) is the smallest subnormal).  Beyond F's largest value the same formula goes on
  (e keeps growing), so an exact value that overflows F still has a finite spacing.  The
  quotient is computed exactly and rounded once to float64 (±inf beyond float64's range).
  A correctly rounded result has |ulp_error| ≤ 1/2.
* ``relative_error(c, y)`` = |c − y| / |y|, computed exactly and rounded once to float64;
  y = 0 gives 0 if c = 0, else inf.
* ``bits_error(c, y, F)`` = log2(1 + n) (Herbie's "bits of error"), n the number of steps
  between c and c* on F's number line: the distance between their positions (ordinals), where
  F's values are numbered in increasing order, −0 and +0 share one position and ±inf sit one
  step beyond ±max.  0 when c = c*; 1 for one ulp; at most F.bits.

Special values (the same rules in every metric):

==========================  ================  ==================  ====================
case                        ulp_error         relative_error      bits_error
==========================  ================  ==================  ====================
c, y both NaN               0 (a match)       0                   0
one of c, y NaN             NaN               NaN                 F.bits (16, 32, 64)
c = y = ±inf (same sign)    0                 0                   0
c = ±inf, y finite          ±inf              inf                 ordinal distance
c finite, y = ±inf          ∓inf              inf                 ordinal distance
c = −0, y = +0 (or vice     0                 0                   0
versa)
==========================  ================  ==================  ====================

A NaN on one side only is a *NaN mismatch*; an infinity on one side of c, c* only (or opposite
infinities) is an *inf mismatch* (an overflow, or a lost one).  ``compare`` counts both.

Inputs: ``computed`` is an array (or scalar) of any of our float dtypes; ``exact`` an array of
the same shape: float64 (or narrower) values, or an object array of exact numbers (mpmath mpf,
gmpy2 mpfr/mpq, Fraction, int), as returned by :mod:`precision.exact`, or a Python number.
Results are float64 arrays of that shape (Python floats for scalar inputs).
"""
from __future__ import annotations

import dataclasses
import math

import gmpy2
import numpy as np

from . import formats as _formats

__all__ = ["ulp_error", "relative_error", "bits_error", "compare", "Comparison"]

# Rounds an exact rational once into float64, with float64's subnormals and overflow.
_IEEE64 = gmpy2.ieee(64)


# --------------------------------------------------------------------------- inputs
def _computed_f64(computed):
    arr = np.asarray(computed)
    kind = arr.dtype.kind
    if _formats.is_extended(arr.dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(np.float64)
            exact = (out.astype(arr.dtype) == arr) | (np.isnan(out) & np.isnan(arr))
        if not np.all(exact):
            bad = arr[~exact].reshape(-1)[0]
            raise ValueError(f"computed value {bad!r} ({arr.dtype}) is not a float64 value: "
                             f"computed values are measured in float64 or narrower formats "
                             f"(round them once with a Format's round() first)")
        return out
    if kind == "f" or (kind == "V" and arr.dtype.itemsize == 2):
        with np.errstate(invalid="ignore"):  # bfloat16 signalling NaNs warn needlessly
            return arr.astype(np.float64)
    if kind in "iu":
        out = arr.astype(np.float64)
        if not np.array_equal(out.astype(arr.dtype), arr):
            raise ValueError("integer computed values are not exact in float64")
        return out
    raise TypeError(f"computed must be an array of floats, got dtype {arr.dtype}")


class _Exact:
    """Exact values, prepared once.

    ``approx``: their float64 roundings (the values themselves for float input); ``nan`` and
    ``inf``: masks of the true NaNs and infinities (an exact value beyond float64's range is
    finite here though its ``approx`` is inf); ``rational``: None when every value is a float64
    value, else a flat list holding an mpq for each finite value.
    """

    def __init__(self, exact):
        arr = np.asarray(exact)
        kind = arr.dtype.kind
        self.shape = arr.shape
        self.rational = None
        if _formats.is_extended(arr.dtype):   # long double: exact, through the object path
            arr = arr.astype(object)
            kind = "O"
        if kind == "f" or (kind == "V" and arr.dtype.itemsize == 2):
            with np.errstate(invalid="ignore"):
                self.approx = arr.astype(np.float64)
            self.nan = np.isnan(self.approx)
            self.inf = np.isinf(self.approx)
            return
        if kind not in "iuO":
            raise TypeError(f"exact must hold numbers, got dtype {arr.dtype}")
        flat = arr.reshape(-1)
        approx = np.empty(flat.shape[0], dtype=np.float64)
        special = np.zeros(flat.shape[0], dtype=bool)
        rational = [None] * flat.shape[0]
        inexact = False
        for i, v in enumerate(flat.tolist()):
            q = _to_rational(v)
            if isinstance(q, float):  # nan or inf
                approx[i] = q
                special[i] = True
                continue
            rational[i] = q
            approx[i] = float(gmpy2.mpfr(q, 0, _IEEE64))
            if approx[i] != q:
                inexact = True
        self.approx = approx.reshape(arr.shape)
        special = special.reshape(arr.shape)
        self.nan = np.isnan(self.approx)
        self.inf = special & np.isinf(self.approx)
        if inexact:
            self.rational = rational

    def exact_value(self, i):
        """The i-th (flat) finite value as an mpq."""
        if self.rational is not None:
            return self.rational[i]
        return gmpy2.mpq(float(self.approx.reshape(-1)[i]))


def _to_rational(v):
    """An exact value as an mpq, or as a float for NaN and ±inf.

    A value beyond 2^±EXACT_EXPONENT_LIMIT, far outside every format, comes with its exponent
    moved to that bound (:func:`precision.formats.exact_gmpy`): every metric here is the same.
    """
    if isinstance(v, np.floating) and _formats.is_extended(v.dtype) and np.isfinite(v):
        return gmpy2.mpq(_formats.exact_gmpy(v))
    if isinstance(v, float) or isinstance(v, np.floating):
        v = float(v)
        return v if not math.isfinite(v) else gmpy2.mpq(v)
    try:
        exact = _formats.exact_gmpy(v)
    except TypeError as error:
        raise TypeError(f"exact values must be real numbers: {error}") from None
    if type(exact).__name__ == "mpfr" and not gmpy2.is_finite(exact):
        return float(exact)
    return gmpy2.mpq(exact)


def _prepare(computed, exact):
    c = _computed_f64(computed)
    y = _Exact(exact)
    if c.shape != y.shape:
        raise ValueError(f"computed {c.shape} and exact {y.shape} must have the same shape")
    return c, y


def _shaped(out, shape):
    out = out.reshape(shape) + 0.0  # + 0.0 turns a -0 error into 0
    return float(out) if out.ndim == 0 else out


def _floor_log2(q):
    """floor(log2 q) for a positive mpq."""
    num, den = int(q.numerator), int(q.denominator)
    e = num.bit_length() - den.bit_length()
    if (num << -e if e < 0 else num) < (den << e if e > 0 else den):
        e -= 1
    return e


# --------------------------------------------------------------------------- metrics
def _pow2(k):
    return gmpy2.mpq(2) ** k if k >= 0 else 1 / gmpy2.mpq(2) ** (-k)


def _special_values(c, y: _Exact, finite_differ):
    """Values for the NaN and infinity cases (module table) and the mask of regular ones.

    ``finite_differ``: the value when c and y are unequal and one of them is infinite.
    """
    c_nan = np.isnan(c)
    out = np.zeros(c.shape, dtype=np.float64)
    out[c_nan != y.nan] = np.nan
    with np.errstate(invalid="ignore"):
        inf_case = ~(c_nan | y.nan) & (np.isinf(c) | y.inf)
        same_inf = np.isinf(c) & y.inf & (c == y.approx)
        out = np.where(inf_case, np.where(same_inf, 0.0, finite_differ), out)
    regular = ~(c_nan | y.nan | inf_case)
    return out, regular


def _ulp_values(c, y: _Exact, fmt):
    # when c or y is infinite and they differ, c - y is +inf or -inf:
    with np.errstate(invalid="ignore"):
        signed_inf = np.where(np.isinf(c), np.sign(c), -np.sign(y.approx)) * np.inf
    out, regular = _special_values(c, y, signed_inf)
    slow = regular
    if y.rational is None:
        yf = np.where(regular, y.approx, 0.0)
        k = fmt.ulp_exponent(yf)
        with np.errstate(over="ignore", invalid="ignore"):
            # c - y is an IEEE subtraction of float64 values, so correctly rounded; scaling by
            # a power of two is then exact (or overflows, which is the correct rounding)
            d = c - yf
            out = np.where(regular, np.ldexp(d, -k), out)
        slow = regular & ~np.isfinite(d)  # |c - y| beyond float64: redo exactly
    flat_out, flat_c = out.reshape(-1), c.reshape(-1)
    for i in np.flatnonzero(slow.reshape(-1)):
        q = y.exact_value(i)
        # the exponent comes from the exact value: its float64 rounding may be a power of 2
        e = max(_floor_log2(abs(q)), fmt.emin) if q else fmt.emin
        ratio = (gmpy2.mpq(float(flat_c[i])) - q) * _pow2(-(e - fmt.p + 1))
        flat_out[i] = float(gmpy2.mpfr(ratio, 0, _IEEE64))
    return flat_out.reshape(c.shape)


def _relative_values(c, y: _Exact):
    out, regular = _special_values(c, y, np.inf)
    slow = regular
    if y.rational is None:
        yf = np.where(regular, y.approx, 1.0)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            d = c - yf
            # Knuth's TwoSum: d + residual == c - y exactly; where the residual is 0 the one
            # division below is the only rounding, elsewhere the exact path takes over
            d_minus_c = d - c
            residual = (c - (d - d_minus_c)) + (-yf - d_minus_c)
            rel = np.where(yf == 0, np.where(c == 0, 0.0, np.inf), np.abs(d) / np.abs(yf))
            out = np.where(regular, rel, out)
        slow = regular & (~np.isfinite(d) | (residual != 0))
    flat_out, flat_c = out.reshape(-1), c.reshape(-1)
    for i in np.flatnonzero(slow.reshape(-1)):
        q = y.exact_value(i)
        d = abs(gmpy2.mpq(float(flat_c[i])) - q)
        if not q:
            flat_out[i] = 0.0 if not d else math.inf
        else:
            flat_out[i] = float(gmpy2.mpfr(d / abs(q), 0, _IEEE64))
    return flat_out.reshape(c.shape)


def ulp_error(computed, exact, fmt):
    """Signed error (computed − exact) / ulp_fmt(exact) (module docstring), float64."""
    fmt = _formats.format(fmt)
    c, y = _prepare(computed, exact)
    return _shaped(_ulp_values(c, y, fmt), c.shape)


def relative_error(computed, exact):
    """|computed − exact| / |exact| (module docstring), float64."""
    c, y = _prepare(computed, exact)
    return _shaped(_relative_values(c, y), c.shape)


def _correctly_rounded(y: _Exact, fmt):
    """F.round(exact) as a float64 array (its values are F's)."""
    if y.rational is None:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the rounding
            return fmt.round(y.approx).astype(np.float64)
    from precision.exact.emulate import emulate

    rnd = emulate(fmt).round
    flat = y.approx.reshape(-1).copy()
    for i, q in enumerate(y.rational):
        if q is not None:
            flat[i] = rnd(q)
    return flat.reshape(y.shape)


def _in_format(c, fmt, what="computed"):
    """c (float64 array) checked to hold values of fmt only, as fmt's dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        as_fmt = fmt.round(c)
        back = as_fmt.astype(np.float64)
    same = (back == c) | (np.isnan(back) & np.isnan(c))
    if not np.all(same):
        bad = c[~same].reshape(-1)[0]
        raise ValueError(f"{what} value {bad!r} is not a {fmt.name} value")
    return as_fmt


def _ordinal_steps(a, b, fmt):
    """Number of fmt steps between arrays a and b of fmt values (non-NaN), as float64."""
    oa = fmt.ordinal(a)
    ob = fmt.ordinal(b)
    same_side = (oa >= 0) == (ob >= 0)
    with np.errstate(over="ignore"):
        # same side: the int64 difference is exact; opposite sides: |oa| + |ob| may not fit
        # in int64 for float64 (2^64 at the extremes), so add the magnitudes as floats.
        near = np.abs(np.where(same_side, oa - ob, 0)).astype(np.float64)
        far = np.abs(oa).astype(np.float64) + np.abs(ob).astype(np.float64)
    return np.where(same_side, near, far)


def _bits(c, c_star, fmt):
    """log2(1 + steps) elementwise, with the NaN rules."""
    c_nan, s_nan = np.isnan(c), np.isnan(c_star)
    safe_c = np.where(c_nan | s_nan, 0.0, c)
    safe_s = np.where(c_nan | s_nan, 0.0, c_star)
    with np.errstate(over="ignore", invalid="ignore"):
        steps = _ordinal_steps(fmt.round(safe_c), fmt.round(safe_s), fmt)
    out = np.log2(1.0 + steps)
    out = np.where(c_nan != s_nan, float(fmt.bits), out)
    return np.where(c_nan & s_nan, 0.0, out)


def bits_error(computed, exact, fmt):
    """Herbie's bits of error log2(1 + steps from computed to fmt.round(exact)), float64.

    ``computed`` must hold values of ``fmt`` (ValueError otherwise).
    """
    fmt = _formats.format(fmt)
    c, y = _prepare(computed, exact)
    _in_format(c, fmt)
    return _shaped(_bits(c, _correctly_rounded(y, fmt), fmt), c.shape)


# --------------------------------------------------------------------------- report
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Summary of computed values against exact ones in one format (see ``compare``).

    ``exact_matches`` counts computed values equal to the correctly rounded exact value (±0
    equal, NaN equal to NaN, a correct overflow to ±inf included).  Ulp statistics are over the
    elements where both the computed and the correctly rounded exact value are finite (NaN when
    there are none): NaN and infinity disagreements are counted by ``nan_mismatches`` and
    ``inf_mismatches`` instead.  p99 is the smallest observed |ulp error| that at least 99 % of
    them do not exceed.  Bits statistics are over all elements.
    """

    format: str
    n: int
    exact_matches: int
    max_abs_ulp: float
    median_abs_ulp: float
    p99_abs_ulp: float
    max_bits: float
    mean_bits: float
    nan_mismatches: int
    inf_mismatches: int

    @property
    def all_exact(self) -> bool:
        """True when every computed value is the correctly rounded exact value."""
        return self.exact_matches == self.n

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        share = f" ({100.0 * self.exact_matches / self.n:.4g} %)" if self.n else ""
        rows = [
            ("exact matches", f"{self.exact_matches} of {self.n}{share}"),
            ("max |ulp error|", _num(self.max_abs_ulp)),
            ("median |ulp error|", _num(self.median_abs_ulp)),
            ("p99 |ulp error|", _num(self.p99_abs_ulp)),
            ("max bits of error", _num(self.max_bits)),
            ("mean bits of error", _num(self.mean_bits)),
            ("NaN mismatches", str(self.nan_mismatches)),
            ("inf mismatches", str(self.inf_mismatches)),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"comparison in {self.format}"]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def _num(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.4g}"


def compare(computed, exact, fmt) -> Comparison:
    """Compare computed values (of ``fmt``) with exact ones: a :class:`Comparison`."""
    fmt = _formats.format(fmt)
    c, y = _prepare(computed, exact)
    _in_format(c, fmt)
    c_star = _correctly_rounded(y, fmt).reshape(-1)
    ulps = np.abs(_ulp_values(c, y, fmt).reshape(-1))
    c = c.reshape(-1)
    bits = _bits(c, c_star, fmt)
    c_nan, s_nan = np.isnan(c), np.isnan(c_star)
    nan_mismatch = c_nan != s_nan
    with np.errstate(invalid="ignore"):
        matches = (c == c_star) | (c_nan & s_nan)
        inf_mismatch = ~nan_mismatch & ~matches & (np.isinf(c) | np.isinf(c_star))
    # ulp statistics over the finite comparisons: a correct overflow (inf against an exact value
    # beyond max) is an exact match, a wrong one an inf mismatch, neither a number of ulps
    valid = ulps[np.isfinite(c) & np.isfinite(c_star)]
    n = int(c.size)
    if valid.size:
        max_ulp = float(np.max(valid))
        median_ulp = float(np.median(valid))
        p99_ulp = float(np.percentile(valid, 99, method="inverted_cdf"))
    else:
        max_ulp = median_ulp = p99_ulp = math.nan
    return Comparison(
        format=fmt.name,
        n=n,
        exact_matches=int(np.count_nonzero(matches)),
        max_abs_ulp=max_ulp,
        median_abs_ulp=median_ulp,
        p99_abs_ulp=p99_ulp,
        max_bits=float(np.max(bits)) if n else math.nan,
        mean_bits=float(np.mean(bits)) if n else math.nan,
        nan_mismatches=int(np.count_nonzero(nan_mismatch)),
        inf_mismatches=int(np.count_nonzero(inf_mismatch)),
    )
