"""Number formats: float16, bfloat16, float32, float64.

A :class:`Format` knows its IEEE-754 parameters and rounds values into itself correctly: once, to
nearest with ties to even, with subnormals and overflow to +-inf.  ``round`` accepts float arrays
and scalars *and* exact values (Python ints, ``Fraction``, mpmath ``mpf``, gmpy2 ``mpfr``, or
object arrays of them), so an exact reference can be rounded to any format in one step.

Two traps this module avoids (tests prove both):

* float64 -> bfloat16 through float32 (what ``ml_dtypes`` ``astype`` does) rounds twice and is
  wrong for some inputs; here float64 goes to 16 bits by one rounding (round-to-odd into float32,
  then nearest-even, in ``kernels/fp.h``).
* float64 -> float16 through float32 likewise double-rounds; numpy's direct cast is right, and
  so is ours.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np

__all__ = [
    "Format",
    "PrecisionWarning",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "FORMATS",
    "format",
    "of",
    "round_scalar",
]


class PrecisionWarning(UserWarning):
    """A scalar (a hyperparameter) changed meaning when rounded to the arithmetic format."""


_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}
_INT = {16: np.int16, 32: np.int32, 64: np.int64}


@dataclass(frozen=True, eq=False)
class Format:
    """An IEEE-754 binary format with p significand bits (hidden bit included).

    ``emin``/``emax`` are IEEE's: normal numbers are m * 2**e with 1 <= m < 2, emin <= e <= emax.
    """

    name: str
    short: str
    p: int
    emin: int
    emax: int
    bits: int
    dtype: np.dtype = field(repr=False)

    # ------------------------------------------------------------------ constants
    @property
    def u(self) -> float:
        """Unit roundoff 2**-p: the largest relative error of one rounding to nearest."""
        return 2.0 ** -self.p

    unit_roundoff = u

    @property
    def max(self) -> float:
        """Largest finite value, (2 - 2**(1-p)) * 2**emax."""
        return float((2 - Fraction(2) ** (1 - self.p)) * Fraction(2) ** self.emax)

    @property
    def tiny(self) -> float:
        """Smallest positive normal value, 2**emin."""
        return 2.0 ** self.emin

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive subnormal value, 2**(emin - p + 1)."""
        return 2.0 ** (self.emin - self.p + 1)

    @property
    def eps(self) -> float:
        """Machine epsilon, ulp(1) = 2**(1-p) = 2u."""
        return 2.0 ** (1 - self.p)

    def __repr__(self) -> str:
        return f"precision.{self.name}"

    def __reduce__(self):
        return (format, (self.name,))

    # ------------------------------------------------------------------- gmpy2
    def context(self) -> gmpy2.context:
        """The gmpy2 context whose arithmetic is this format's (nearest-even, subnormals).

        MPFR writes numbers as m * 2**e with 1/2 <= m < 1, so its exponents are IEEE's plus one;
        with subnormalize on, its emin is the exponent of the smallest subnormal's MPFR form.
        """
        return gmpy2.context(
            precision=self.p,
            emax=self.emax + 1,
            emin=self.emin - self.p + 2,
            subnormalize=True,
            round=gmpy2.RoundToNearest,
        )

    # ----------------------------------------------------------------- rounding
    def round(self, x):
        """Round ``x`` once (nearest, ties to even) into this format.

        ``x``: a float array or scalar of any numpy float dtype (including bfloat16), a Python
        float, or exact values: int, Fraction, mpmath mpf, gmpy2 mpfr/mpz/mpq, or an object
        array of those.  Returns a numpy array of ``self.dtype`` (a numpy scalar for scalar
        input).
        """
        scalar = np.ndim(x) == 0
        arr = np.asarray(x) if not _is_exact_scalar(x) else np.asarray(x, dtype=object)
        if arr.dtype == object:
            out = self._round_exact(arr)
        elif arr.dtype.kind in "fV" or arr.dtype == ml_dtypes.bfloat16:
            out = self._round_float(arr)
        elif arr.dtype.kind in "iub":
            out = self._round_exact(arr.astype(object))
        else:
            raise TypeError(
                f"{self.name}.round() takes numbers, not {arr.dtype} ({type(x).__name__})"
            )
        return out[()] if scalar else out

    def _round_float(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype == self.dtype:
            return arr.copy()
        if self.bits == 16:
            from precision._kernels import _primitives

            bits = np.empty(arr.shape, dtype=np.uint16)
            flat_out = bits.reshape(-1)
            if arr.dtype == np.float32:
                _primitives.f32_to_16(self.short, np.ascontiguousarray(arr).reshape(-1), flat_out)
            else:  # every other format's values are exact in float64
                src = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
                _primitives.f64_to_16(self.short, src, flat_out)
            return bits.view(self.dtype)
        # float64 -> float32 is numpy's correctly rounded cast; narrower sources are exact.
        # Overflow to inf is the correct rounding here, not an accident to warn about.
        with np.errstate(over="ignore"):
            return arr.astype(np.float64).astype(self.dtype)

    def _round_exact(self, arr: np.ndarray) -> np.ndarray:
        ctx = self.context()
        flat = arr.reshape(-1)
        vals = np.empty(flat.shape[0], dtype=np.float64)
        with ctx:
            for i, v in enumerate(flat):
                vals[i] = float(gmpy2.mpfr(_to_gmpy(v)))
        # every value now lies on this format's grid, so this cast is exact
        return self._round_float(vals.reshape(arr.shape))

    # ------------------------------------------------------------ neighbours, ulp
    def ulp(self, x):
        """Spacing of this format at |x|: 2**(e - p + 1) for 2**e <= |x| < 2**(e+1).

        Never below the subnormal spacing 2**(emin - p + 1) (so ulp(0) is the smallest
        subnormal).  NaN for NaN and inf.  ``x`` is taken as a real value (float64 array
        or scalar); returns float64.
        """
        a = np.abs(np.asarray(x, dtype=np.float64))
        _, e = np.frexp(a)                     # a = m * 2**e, 1/2 <= m < 1
        e = np.where(a == 0, self.emin, np.maximum(e - 1, self.emin))
        out = np.ldexp(1.0, e - self.p + 1)
        out = np.where(np.isfinite(a), out, np.nan)
        return out[()] if out.ndim == 0 else out

    def _ordinal(self, arr: np.ndarray) -> np.ndarray:
        """Monotone integer index of each value (+0 and -0 share index 0)."""
        signed = np.asarray(arr, dtype=self.dtype).view(_INT[self.bits]).astype(np.int64)
        magnitude = signed & np.int64((1 << (self.bits - 1)) - 1)
        return np.where(signed < 0, -magnitude, magnitude)

    def _from_ordinal(self, o: np.ndarray) -> np.ndarray:
        o = np.asarray(o, dtype=np.int64)
        magnitude = np.abs(o)
        sign = np.where(o < 0, np.int64(1) << (self.bits - 1), np.int64(0))
        if self.bits == 64:
            return (magnitude | sign).view(np.float64)
        return (magnitude | sign).astype(_UINT[self.bits]).view(self.dtype)

    def ordinal(self, x) -> np.ndarray:
        """Position of each value of this format on the number line (ints; +0 == -0 == 0).

        Distances between ordinals count representable steps, which is what bits-of-error
        metrics need.  NaNs have no position: callers must mask them.
        """
        return self._ordinal(np.asarray(x, dtype=self.dtype))

    def next_up(self, x):
        """The next value of this format above x (x must be in this format)."""
        return self._step(x, +1)

    def next_down(self, x):
        """The next value of this format below x (x must be in this format)."""
        return self._step(x, -1)

    def _step(self, x, direction: int):
        arr = np.asarray(x)
        if arr.dtype != self.dtype:
            raise TypeError(f"next_up/next_down take {self.name} values, got {arr.dtype}")
        o = self._ordinal(arr) + direction
        out = self._from_ordinal(o)
        inf = np.inf if direction > 0 else -np.inf
        # infinities in the direction of travel stay; NaN stays NaN
        stay = np.isnan(arr.astype(np.float64)) | (arr.astype(np.float64) == inf)
        out = np.where(stay, arr, out).astype(self.dtype)
        return out[()] if out.ndim == 0 else out

    # ------------------------------------------------------------ enumeration
    def all_finite_values(self) -> np.ndarray:
        """Every finite value of a 16-bit format once, ascending (-0 left out, +0 kept)."""
        if self.bits != 16:
            raise ValueError(f"{self.name} has too many values to enumerate")
        everything = np.arange(1 << 16, dtype=np.uint16).view(self.dtype)
        with np.errstate(invalid="ignore"):
            wide = everything.astype(np.float64)
        keep = np.isfinite(wide) & ~((wide == 0) & np.signbit(wide))
        vals = everything[keep]
        return vals[np.argsort(wide[keep], kind="stable")]

    def all_bit_patterns(self) -> np.ndarray:
        """All 2**16 values of a 16-bit format in bit-pattern order (NaNs and infs included)."""
        if self.bits != 16:
            raise ValueError(f"{self.name} has too many values to enumerate")
        return np.arange(1 << 16, dtype=np.uint16).view(self.dtype)

    # ------------------------------------------------------------ arrays
    def storage_view(self, arr: np.ndarray) -> np.ndarray:
        """The array as the kernels see it: uint16 bits for 16-bit formats, else itself."""
        return arr.view(np.uint16) if self.bits == 16 else arr


def _is_exact_scalar(x) -> bool:
    return isinstance(x, (Fraction, numbers.Integral)) and not isinstance(x, (bool, np.bool_)) \
        or type(x).__module__.startswith(("mpmath", "gmpy2"))


_BIG = gmpy2.context(precision=4096, emin=-(1 << 30), emax=1 << 30)


def _to_gmpy(v):
    """An exact gmpy2 number (or an mpfr of enough precision) for any supported value."""
    if isinstance(v, (float, np.floating)):
        return gmpy2.mpfr(float(v), 53) if np.isfinite(v) else gmpy2.mpfr(float(v))
    if isinstance(v, (bool, np.bool_)):
        raise TypeError("booleans are not numbers to round")
    if isinstance(v, numbers.Integral):
        return gmpy2.mpz(int(v))
    if isinstance(v, Fraction):
        return gmpy2.mpq(v.numerator, v.denominator)
    mod = type(v).__module__
    if mod.startswith("gmpy2"):
        return v
    if mod.startswith("mpmath"):
        mpf_tuple = getattr(v, "_mpf_", None)
        if mpf_tuple is None:
            raise TypeError(f"cannot round {type(v).__name__} (complex?) into a real format")
        sign, man, exp, bc = mpf_tuple
        if man == 0:  # zero, inf and nan: a zero mantissa with special exponents
            return gmpy2.mpfr(float(v))
        with gmpy2.context(_BIG, precision=max(int(bc), 2)):
            m = gmpy2.mpfr(gmpy2.mpz(-man if sign else man))
            return gmpy2.mul_2exp(m, int(exp))
    raise TypeError(f"cannot round a {type(v).__name__} into a float format")


float16 = Format("float16", "f16", p=11, emin=-14, emax=15, bits=16, dtype=np.dtype(np.float16))
bfloat16 = Format("bfloat16", "bf16", p=8, emin=-126, emax=127, bits=16,
                  dtype=np.dtype(ml_dtypes.bfloat16))
float32 = Format("float32", "f32", p=24, emin=-126, emax=127, bits=32, dtype=np.dtype(np.float32))
float64 = Format("float64", "f64", p=53, emin=-1022, emax=1023, bits=64,
                 dtype=np.dtype(np.float64))

FORMATS = (float16, bfloat16, float32, float64)

_ALIASES = {
    "float16": float16, "f16": float16, "fp16": float16, "half": float16,
    "bfloat16": bfloat16, "bf16": bfloat16,
    "float32": float32, "f32": float32, "fp32": float32, "single": float32,
    "float64": float64, "f64": float64, "fp64": float64, "double": float64,
}


def format(spec) -> Format:  # noqa: A001 - the documented public name
    """The Format named by ``spec``: a Format, a name ("bfloat16", "f16", "fp32", "double", ...),
    a numpy dtype or scalar type (np.float16, ml_dtypes.bfloat16, "float32", ...)."""
    if isinstance(spec, Format):
        return spec
    if isinstance(spec, str):
        try:
            return _ALIASES[spec.strip().lower()]
        except KeyError:
            raise ValueError(
                f"unknown format {spec!r}; known: float16, bfloat16, float32, float64 "
                f"(aliases: {', '.join(sorted(k for k in _ALIASES if k not in ('float16', 'bfloat16', 'float32', 'float64')))})"
            ) from None
    try:
        dt = np.dtype(spec)
    except TypeError:
        raise TypeError(f"a format is named by a string, a Format or a dtype, not {type(spec).__name__}") from None
    for f in FORMATS:
        if dt == f.dtype:
            return f
    raise ValueError(f"dtype {dt} is not one of precision's formats (float16, bfloat16, float32, float64)")


def of(arr) -> Format:
    """The storage format of an array (its dtype); TypeError for non-float arrays."""
    dt = getattr(arr, "dtype", None)
    if dt is None:
        raise TypeError(f"expected a numpy array, got {type(arr).__name__}")
    for f in FORMATS:
        if dt == f.dtype:
            return f
    raise TypeError(
        f"arrays must be float16, bfloat16, float32 or float64; got dtype {dt}"
    )


def round_scalar(value, fmt, name: str = "value", *, stacklevel: int = 3) -> float:
    """Round a scalar (a hyperparameter) once into ``fmt`` as the hardware would see it.

    Emits a :class:`PrecisionWarning` naming the scalar when rounding makes it 0, makes it
    infinite, or moves it by more than 1 % of its value.  Returns a Python float.
    """
    fmt = format(fmt)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    r = float(fmt.round(np.float64(x)) if isinstance(value, (float, np.floating)) else fmt.round(value))
    if x != 0 and np.isfinite(x):
        if r == 0:
            why = f"rounds to 0 in {fmt.name} (smallest subnormal {fmt.smallest_subnormal:.3g})"
        elif not np.isfinite(r):
            why = f"overflows to {r} in {fmt.name} (max {fmt.max:.5g})"
        elif abs(r - x) > 0.01 * abs(x):
            why = f"becomes {r!r} in {fmt.name}, {abs(r - x) / abs(x):.1%} away"
        else:
            why = None
        if why:
            warnings.warn(f"{name}={value!r} {why}", PrecisionWarning, stacklevel=stacklevel)
    return r
