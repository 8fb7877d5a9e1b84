"""Number formats: float16, bfloat16, float32, float64.

A :class:`Format` knows its IEEE-754 parameters and rounds values into itself correctly: once, to
nearest with ties to even, with subnormals and overflow to +-inf.  ``round`` accepts float arrays
and scalars *and* exact values (Python ints, ``Fraction``, mpmath ``mpf``, gmpy2 ``mpfr``, or
object arrays of them), so an exact reference can be rounded to any format in one step, whatever
its magnitude (mpmath's exponents are unbounded: exp(-1e308) rounds to 0, see ``exact_gmpy``).

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
    "exact_gmpy",
    "EXACT_EXPONENT_LIMIT",
    "ARITHMETIC_FOR",
    "arithmetic_format",
    "is_extended",
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

        ``x``: a float array or scalar of any numpy float dtype (including bfloat16 and long
        double, whose extra bits count: they are rounded once, not cut to float64 first), a Python
        float, or exact values: int, Fraction, mpmath mpf, gmpy2 mpfr/mpz/mpq, or an object
        array of those.  Returns a numpy array of ``self.dtype`` (a numpy scalar for scalar
        input).
        """
        scalar = np.ndim(x) == 0
        arr = np.asarray(x) if not _is_exact_scalar(x) else np.asarray(x, dtype=object)
        if arr.dtype == object:
            out = self._round_exact(arr)
        elif is_extended(arr.dtype):
            out = self._round_float(_extended_to_float64(arr, odd=self.bits < 64))
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
        for i, v in enumerate(flat):
            vals[i] = float(gmpy2.mpfr(exact_gmpy(v), 0, ctx))
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
        with np.errstate(invalid="ignore"):
            out = np.ldexp(1.0, self.ulp_exponent(np.where(np.isfinite(a), a, 0.0)))
        out = np.where(np.isfinite(a), out, np.nan)
        return out[()] if out.ndim == 0 else out

    def ulp_exponent(self, x) -> np.ndarray:
        """k with ulp(x) = 2**k (an int array), for finite float64 values x: the one place
        the spacing is computed (``ulp`` and the metrics of ``precision.errors`` use it)."""
        a = np.abs(np.asarray(x, dtype=np.float64))
        _, e = np.frexp(a)                     # a = m * 2**e, 1/2 <= m < 1
        e = np.where(a == 0, self.emin, np.maximum(e - 1, self.emin))
        return e - self.p + 1

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


def is_extended(dtype) -> bool:
    """Whether a dtype is a long double wider than float64 (x87's 64-bit significand, or
    binary128): its values are not all float64 values, so it needs exact handling."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" and dtype.itemsize > 8 and np.finfo(dtype).nmant > 52


def _extended_to_float64(arr: np.ndarray, *, odd: bool) -> np.ndarray:
    """Long doubles to float64: to nearest (``odd`` false), or rounded to odd (the float64
    neighbour with an odd last bit when inexact), which then rounds to nearest into any format
    of at most 51 bits exactly as the long double itself does (Boldo & Melquiond)."""
    arr = np.asarray(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        hi = arr.astype(np.float64)
        if not odd:
            return hi
        # x - hi is exact in long double (hi is x's nearest float64 unless it overflowed)
        lo = arr - hi.astype(arr.dtype)
    inexact = np.isfinite(hi) & (lo != 0)
    even = (hi.view(np.uint64) & np.uint64(1)) == 0
    move = inexact & even
    if np.any(move):
        hi = np.where(move, np.nextafter(hi, np.where(lo > 0, np.inf, -np.inf)), hi)
    return hi


def _is_exact_scalar(x) -> bool:
    return isinstance(x, (Fraction, numbers.Integral)) and not isinstance(x, (bool, np.bool_)) \
        or type(x).__module__.startswith(("mpmath", "gmpy2"))


# An exact value of magnitude beyond 2^+-EXACT_EXPONENT_LIMIT lies far outside every format here
# (float64 spans 2^-1075 .. 2^1024, the least and greatest magnitudes that do not round to 0
# and inf).  Moving its exponent to that bound, mantissa and sign kept, changes neither its
# rounding into any format (still +-inf or +-0) nor any float64 error metric of precision.errors
# (the parts it shrinks or grows stay below half a float64 ulp of the result, same sign).
EXACT_EXPONENT_LIMIT = 4096
# MPFR numbers carry a C long exponent, and gmpy2 keeps them within about +-2^30.
_MPFR_EXPONENT_LIMIT = 1 << 29
_WIDE = gmpy2.context(precision=2, emin=-(1 << 30), emax=1 << 30)


def exact_gmpy(value, *, clamp: bool = True):
    """``value`` as an exact gmpy2 number: an ``mpz``, ``mpq`` or ``mpfr`` equal to it.

    Accepts Python and numpy ints and floats (bfloat16 included), ``Fraction``, mpmath ``mpf``
    and gmpy2 ``mpz``/``mpq``/``mpfr`` (NaN and +-inf as mpfr).  Booleans and complex values:
    TypeError.  A binary value +-m*2^e of magnitude 2^E = |value| beyond 2^+-EXACT_EXPONENT_LIMIT
    (an mpf's exponent is an unbounded Python int: exp(-1e308) is about 2^(-1.4e308)) comes back,
    when ``clamp`` is true, as +-m*2^(e + LIMIT - E) (or -LIMIT), which rounds and measures like
    it (see ``EXACT_EXPONENT_LIMIT``); with ``clamp=False`` it is kept, and one beyond MPFR's
    exponent range (about 2^+-2^29) raises OverflowError.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("booleans are not numbers")
    if isinstance(value, np.floating) and is_extended(value.dtype):
        if not np.isfinite(value):
            return gmpy2.mpfr(float(value), 53)
        num, den = value.as_integer_ratio()    # exact: long double's bits are all kept
        return gmpy2.mpq(num, den)
    if isinstance(value, float) or isinstance(value, np.floating) or (
            isinstance(value, np.generic) and value.dtype.kind == "V" and value.dtype.itemsize == 2):
        return gmpy2.mpfr(float(value), 53)  # every format here is exact in float64
    if isinstance(value, numbers.Integral):  # int, numpy ints, mpz
        return gmpy2.mpz(int(value))
    if isinstance(value, Fraction):
        return gmpy2.mpq(value.numerator, value.denominator)
    tname = type(value).__name__
    if tname == "mpq":
        return value
    if tname == "mpfr":  # (mpfr also has an _mpf_ attribute)
        if not clamp or not gmpy2.is_regular(value) \
                or abs(gmpy2.get_exp(value)) <= EXACT_EXPONENT_LIMIT:
            return value
        man, exp = value.as_mantissa_exp()
        return _binary(int(man), int(exp), clamp)
    if isinstance(value, (complex, np.complexfloating)) or tname == "mpc":
        raise TypeError(f"complex value {value!r} has no real format")
    mpf_tuple = getattr(value, "_mpf_", None)
    if mpf_tuple is None or type(value).__module__.split(".")[0] != "mpmath":
        raise TypeError(f"cannot take a {tname} as a real number")
    sign, man, exp, _ = mpf_tuple
    if not man:  # mpmath's zero, inf, -inf and nan: a zero mantissa, special exponents
        return gmpy2.mpfr(float(value))
    return _binary(-int(man) if sign else int(man), int(exp), clamp)


def _binary(man: int, exp: int, clamp: bool):
    """man * 2^exp (man != 0) as an exact mpfr; see :func:`exact_gmpy` for ``clamp``."""
    bits = abs(man).bit_length()
    top = exp + bits  # 2^(top - 1) <= |value| < 2^top
    if clamp and abs(top) > EXACT_EXPONENT_LIMIT:
        exp += (EXACT_EXPONENT_LIMIT if top > 0 else -EXACT_EXPONENT_LIMIT) - top
    elif abs(top) > _MPFR_EXPONENT_LIMIT:
        raise OverflowError(f"a value of magnitude 2^{top} is outside MPFR's exponent range")
    # scaling by a power of two is exact at the mantissa's precision
    with gmpy2.context(_WIDE, precision=max(2, bits)):
        return gmpy2.mul_2exp(gmpy2.mpfr(man), exp)


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


# The arithmetic formats A allowed for each storage format S (short names): S itself or one at
# least as wide in precision and range (float16 -> bfloat16 would lose bits, bfloat16 ->
# float16 range).  The kernels are built for exactly these pairs: this is kernels/policies.py's
# ARITH_FOR, a build-time module the package cannot import (a test checks that they agree).
ARITHMETIC_FOR = {
    "f16": ("f16", "f32", "f64"),
    "bf16": ("bf16", "f32", "f64"),
    "f32": ("f32", "f64"),
    "f64": ("f64",),
}


def arithmetic_format(accum, storage: Format, name: str = "accum") -> Format:
    """The arithmetic format A of a call whose arrays are stored in ``storage`` (S).

    ``accum``: a Format, a name or a dtype, or None for S itself; ``name``: the argument's name in
    error messages.  Raises its lookup's TypeError/ValueError prefixed with ``name``, and a
    ValueError when A is not S or wider (``ARITHMETIC_FOR[S]``).
    """
    if accum is None:
        return storage
    try:
        fmt = format(accum)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name}: {error}") from None
    allowed = ARITHMETIC_FOR[storage.short]
    if fmt.short not in allowed:
        if len(allowed) == 1:
            raise ValueError(f"{name}={fmt.name} is narrower than the storage format "
                             f"{storage.name}, and {storage.name} has no wider format here: use "
                             f"{name}=None or {storage.name!r}")
        names = ", ".join(format(a).name for a in allowed)
        raise ValueError(f"{name}={fmt.name} is not at least as wide as the storage format "
                         f"{storage.name} (in precision and range); use one of {names}")
    return fmt


def round_scalar(value, fmt, name: str = "value", *, stacklevel: int = 3) -> float:
    """Round a scalar (a hyperparameter) once into ``fmt`` as the hardware would see it.

    Emits a :class:`PrecisionWarning` naming the scalar when rounding makes it 0, makes it
    infinite, or moves it by more than 1 % of its value.  Returns a Python float.
    """
    fmt = format(fmt)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    plain_float = isinstance(value, (float, np.floating)) and not is_extended(np.asarray(value).dtype)
    r = float(fmt.round(np.float64(x)) if plain_float else fmt.round(value))
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
