"""Op-by-op emulation of a format's arithmetic: every operation rounded once into the format.

``emulate(fmt)`` returns an :class:`Emulated` arithmetic whose methods compute, for their
arguments taken as *exact* real numbers, the operation's exact result rounded once (to nearest,
ties to even) into ``fmt``, with ``fmt``'s subnormals, overflow to ±inf and IEEE-754 special
values.  This is what hardware of that format does for + − × ÷ √ and fma, and what a correctly
rounded libm does for exp, log, log1p, expm1.  Running a kernel's documented algorithm through it
gives the kernel's bit-exact reference (see DESIGN.md §3.6).

How it works: each operation is one MPFR call in ``fmt.context()`` (gmpy2): precision p,
round-to-nearest-even, ``subnormalize=True`` and MPFR's exponent range.  MPFR writes a number as
m·2^e with 1/2 ≤ m < 1, so its exponents are IEEE's plus one: float16 (IEEE emin −14, emax 15) is
MPFR emax 16 and emin −23 (the exponent of the smallest subnormal 2^−24 = 0.5·2^−23), exactly
``gmpy2.ieee(16)``; bfloat16 is precision 8, emax 128, emin −132.  MPFR rounds to p bits and then
re-rounds subnormal results using the first rounding's direction, so subnormal results are rounded
once, correctly.  Arguments are converted to MPFR *exactly* first (a gmpy2 context would otherwise
round a Python float argument to p bits before the operation, a double rounding).

Values: arguments may be Python floats and ints, numpy scalars (any of our dtypes), gmpy2 ``mpfr``
and ``mpz``, or mpmath ``mpf``; they need not be values of ``fmt`` (they are taken exactly).
Results are Python floats: every value of every format here (float16, bfloat16, float32,
float64, their subnormals, ±0, ±inf, NaN) is exactly representable as a float64, so a float
carries the result without loss.  ``Emulated.round`` also takes ``Fraction`` and ``mpq``, and
rounds values of any magnitude, as ``Format.round`` does (through
:func:`precision.formats.exact_gmpy`): an mpf such as exp(−10^308) has an exponent beyond MPFR's
range and a C long; ``round`` sends it to ±0 (or ±inf) as every format does, arithmetic refuses
it with OverflowError.

Special values follow IEEE-754: NaN in → NaN out; inf − inf, 0·inf, 0/0, √(−1), log(−1) are NaN;
x/±0 = ±inf; log(0) = −inf; x − x = +0; (−0) + (−0) = −0; √(−0) = −0.

Summation orders (the project's fixed reduction orders, DESIGN.md §3.4; kernels implement the
same orders, so their tests replay them here):

* ``"sequential"``: s₀ = +0; sᵢ = sᵢ₋₁ ⊕ xᵢ in index order.
* ``"kahan"``: s = +0, c = +0; for each x: y = x ⊖ c; t = s ⊕ y; c = (t ⊖ s) ⊖ y; s = t.
* ``"pairwise"`` (default): leaves are consecutive blocks of ``PAIRWISE_BLOCK`` = 128 elements
  (the last may be shorter).  In a leaf, lane j (j = 0..7) starts at +0 and adds, in order, the
  leaf's elements j, j+8, j+16, …; the leaf's sum is ((l₀⊕l₁)⊕(l₂⊕l₃))⊕((l₄⊕l₅)⊕(l₆⊕l₇)).  Leaf
  sums are then combined level by level: (s₀⊕s₁), (s₂⊕s₃), …, an odd last one moving up
  unchanged, until one remains.  The empty sum is +0.

(⊕, ⊖: addition and subtraction rounded to the format.)
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import gmpy2
import numpy as np

from precision import formats as _formats

__all__ = [
    "pairwise_depth",
    "Emulated",
    "emulate",
    "SUMMATION_ORDERS",
    "PAIRWISE_BLOCK",
    "PAIRWISE_LANES",
    "pairwise_sum",
    "sequential_sum",
    "kahan_sum",
    "summation",
    "to_mpfr",
    "check_storage",
]

PAIRWISE_BLOCK = 128
PAIRWISE_LANES = 8
SUMMATION_ORDERS = ("pairwise", "sequential", "kahan")

# float64 values are exact at 53 bits; MPFR's default exponent range covers all of them,
# subnormals included (no subnormalize here: this context only converts, never rounds).
_EXACT_F64 = gmpy2.context(precision=53, emin=-(1 << 30), emax=1 << 30)


# ---------------------------------------------------------------------- exact conversion
def to_mpfr(value):
    """``value`` as an exactly equal gmpy2 ``mpfr`` (its precision is as large as needed).

    Accepts Python floats and ints, numpy float/int scalars (bfloat16 included), gmpy2 ``mpfr``
    and ``mpz``, and mpmath ``mpf`` (NaN and ±inf included; an mpf beyond MPFR's exponent range
    of about 2^±2^29: OverflowError).  Rationals that are not dyadic (``Fraction``, ``mpq``) have
    no exact binary value: TypeError (round them with :meth:`Emulated.round`).  Booleans are not
    numbers here: TypeError.
    """
    if type(value) is float:  # the common case, first
        return _EXACT_F64.plus(value)
    if isinstance(value, Fraction) or type(value).__name__ == "mpq":
        raise TypeError(
            f"{value!r} is not a binary floating-point number; round it first (Emulated.round)"
        )
    exact = _formats.exact_gmpy(value, clamp=False)
    if type(exact).__name__ == "mpz":
        return gmpy2.mpfr(exact, max(2, exact.bit_length()))
    return exact


# ---------------------------------------------------------------------- summation orders
def sequential_sum(values, add, zero=0.0):
    """s = zero; s = add(s, x) for each x in order."""
    s = zero
    for x in values:
        s = add(s, x)
    return s


def kahan_sum(values, add, sub, zero=0.0):
    """Kahan's compensated sum: s = c = zero; per x: y = x − c; t = s + y; c = (t − s) − y; s = t."""
    s = zero
    c = zero
    for x in values:
        y = sub(x, c)
        t = add(s, y)
        c = sub(sub(t, s), y)
        s = t
    return s


def pairwise_sum(values, add, zero=0.0):
    """The project's pairwise order (module docstring): 128-element leaves summed in 8 lanes,
    lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), leaves combined level by level."""
    values = list(values)
    n = len(values)
    if n == 0:
        return zero
    level = []
    for start in range(0, n, PAIRWISE_BLOCK):
        leaf = values[start:start + PAIRWISE_BLOCK]
        lanes = []
        for j in range(PAIRWISE_LANES):
            lane = zero
            for x in leaf[j::PAIRWISE_LANES]:
                lane = add(lane, x)
            lanes.append(lane)
        l0, l1, l2, l3, l4, l5, l6, l7 = lanes
        level.append(add(add(add(l0, l1), add(l2, l3)), add(add(l4, l5), add(l6, l7))))
    while len(level) > 1:
        paired = [add(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def pairwise_depth(n: int) -> int:
    """The most rounded additions on any term's path through :func:`pairwise_sum` of n terms:
    its lane (at most 16 additions in a leaf of 128), 3 to combine the lanes, then one per
    level of leaves (``losses_pairwise_depth`` in kernels/losses_refine.h).  A sum of n
    non-negative terms so computed is within gamma_d = d u / (1 - d u) of the exact sum."""
    if n <= 1:
        return 0
    if n <= PAIRWISE_BLOCK:
        return -(-n // PAIRWISE_LANES) + 3
    levels, leaves = 0, -(-n // PAIRWISE_BLOCK)
    while leaves > 1:
        leaves = -(-leaves // 2)
        levels += 1
    return PAIRWISE_BLOCK // PAIRWISE_LANES + 3 + levels


def summation(values, order, add, sub, zero=0.0):
    """Sum ``values`` in the named order ("pairwise", "sequential" or "kahan") with the given
    ``add``/``sub`` operations (e.g. ``operator.add`` for plain float64)."""
    if order == "pairwise":
        return pairwise_sum(values, add, zero)
    if order == "sequential":
        return sequential_sum(values, add, zero)
    if order == "kahan":
        return kahan_sum(values, add, sub, zero)
    raise ValueError(f"unknown summation order {order!r}; expected one of {SUMMATION_ORDERS}")


def _check_order(order):
    if order not in SUMMATION_ORDERS:
        raise ValueError(f"unknown summation order {order!r}; expected one of {SUMMATION_ORDERS}")


def _flat(values):
    """A flat list of the elements of an array, list or other iterable of numbers."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f" or (values.dtype.kind == "V" and values.dtype.itemsize == 2):
            with np.errstate(invalid="ignore"):  # bfloat16 NaN -> float64 warns, needlessly
                return values.astype(np.float64).reshape(-1).tolist()
        return list(values.reshape(-1))
    return list(values)


# ---------------------------------------------------------------------- the arithmetic
class Emulated:
    """Correctly rounded arithmetic in one format (see the module docstring).

    Attributes: ``fmt`` (the :class:`precision.formats.Format`), ``zero`` (+0.0), ``context``
    (the gmpy2 context used; do not modify it).  Every method returns a Python float.
    """

    def __init__(self, fmt):
        self.fmt = _formats.format(fmt)
        self.context = self.fmt.context()
        self.zero = 0.0
        self._mpfr_zero = gmpy2.mpfr(0)

    def __repr__(self):
        return f"emulate({self.fmt.name!r})"

    # --- one rounding -------------------------------------------------------------------
    def round(self, x) -> float:
        """x rounded once into the format (x: float, int, Fraction, mpq, mpf, mpfr, numpy scalar)."""
        return float(gmpy2.mpfr(_formats.exact_gmpy(x), 0, self.context))

    def neg(self, x) -> float:
        """−x (rounded: a no-op for values of the format)."""
        return float(self.context.minus(to_mpfr(x)))

    # --- + − × ÷ √ fma ------------------------------------------------------------------
    def add(self, a, b) -> float:
        """a + b, rounded once."""
        return float(self.context.add(to_mpfr(a), to_mpfr(b)))

    def sub(self, a, b) -> float:
        """a − b, rounded once."""
        return float(self.context.sub(to_mpfr(a), to_mpfr(b)))

    def mul(self, a, b) -> float:
        """a × b, rounded once."""
        return float(self.context.mul(to_mpfr(a), to_mpfr(b)))

    def div(self, a, b) -> float:
        """a ÷ b, rounded once (x/±0 = ±inf, 0/0 = NaN)."""
        return float(self.context.div(to_mpfr(a), to_mpfr(b)))

    def sqrt(self, x) -> float:
        """√x, rounded once (√(−0) = −0, √(x<0) = NaN)."""
        return float(self.context.sqrt(to_mpfr(x)))

    def fma(self, a, b, c) -> float:
        """a × b + c with a single rounding."""
        return float(self.context.fma(to_mpfr(a), to_mpfr(b), to_mpfr(c)))

    # --- elementary functions (MPFR's are correctly rounded) ----------------------------
    def exp(self, x) -> float:
        """e^x, correctly rounded."""
        return float(self.context.exp(to_mpfr(x)))

    def expm1(self, x) -> float:
        """e^x − 1, correctly rounded."""
        return float(self.context.expm1(to_mpfr(x)))

    def log(self, x) -> float:
        """ln x, correctly rounded (log(0) = −inf, log(x<0) = NaN)."""
        return float(self.context.log(to_mpfr(x)))

    def log1p(self, x) -> float:
        """ln(1 + x), correctly rounded (log1p(−1) = −inf, log1p(x<−1) = NaN)."""
        return float(self.context.log1p(to_mpfr(x)))

    # --- reductions in the project's fixed orders ---------------------------------------
    def sum(self, values, order: str = "pairwise") -> float:
        """Σ values in the given order (module docstring), each addition rounded."""
        _check_order(order)
        xs = [to_mpfr(v) for v in _flat(values)]
        ctx = self.context
        return float(summation(xs, order, ctx.add, ctx.sub, self._mpfr_zero))

    def dot(self, a, b, order: str = "pairwise") -> float:
        """Σ (a_i ⊗ b_i): the rounded products summed in the given order."""
        _check_order(order)
        xa = _flat(a)
        xb = _flat(b)
        if len(xa) != len(xb):
            raise ValueError(f"dot of vectors of different lengths {len(xa)} and {len(xb)}")
        ctx = self.context
        products = [ctx.mul(to_mpfr(x), to_mpfr(y)) for x, y in zip(xa, xb)]
        return float(summation(products, order, ctx.add, ctx.sub, self._mpfr_zero))

    def max(self, values) -> float:
        """The largest value (IEEE: NaN if any value is NaN; +0 counts as above −0)."""
        xs = _flat(values)
        if not xs:
            raise ValueError("max of an empty sequence")
        best = None
        for v in xs:
            m = to_mpfr(v)
            if gmpy2.is_nan(m):
                return math.nan
            if best is None or m > best or (m == best and m == 0 and not gmpy2.is_signed(m)):
                best = m
        return float(self.context.plus(best))

    # --- the kernels' twins (their code: precision.exact.losses, precision.exact.optim) ----
    def losses(self, transcendentals: str = "correct"):
        """The twin of :mod:`precision.losses` with this format as the arithmetic A
        (:class:`precision.exact.losses.EmulatedLosses`; ``transcendentals="kernel"`` uses the
        kernels' own exp/log/log1p, see there)."""
        from .losses import EmulatedLosses
        return EmulatedLosses(self.fmt, transcendentals)

    def logsumexp(self, x):
        """The twin of ``pr.logsumexp(x, accum=<this format>)``."""
        return self.losses().logsumexp(x)

    def softmax(self, x):
        """The twin of ``pr.softmax(x, accum=<this format>)``."""
        return self.losses().softmax(x)

    def log_softmax(self, x):
        """The twin of ``pr.log_softmax(x, accum=<this format>)``."""
        return self.losses().log_softmax(x)

    def softmax_cross_entropy(self, logits, targets, **options):
        """The twin of ``pr.softmax_cross_entropy(logits, targets, accum=<this format>, ...)``
        (``reduction``, ``return_grad``, ``label_smoothing``; the gradient unrefined)."""
        return self.losses().softmax_cross_entropy(logits, targets, **options)

    def kl_divergence(self, targets, logits, **options):
        """The twin of ``pr.kl_divergence(targets, logits, accum=<this format>, ...)``."""
        return self.losses().kl_divergence(targets, logits, **options)

    def entropy(self, probs, **options):
        """The twin of ``pr.entropy(probs, accum=<this format>, ...)``."""
        return self.losses().entropy(probs, **options)

    def categorical_kl(self, logits_p, logits_q, **options):
        """The twin of ``pr.rl.categorical_kl(logits_p, logits_q, accum=<this format>, ...)``
        (``reduction``; the kernel's own transcendentals, so bit-identical)."""
        from .rl import emulated_categorical_kl
        return emulated_categorical_kl(logits_p, logits_q, accum=self.fmt, **options)

    def optimizer(self, optimizer, **settings):
        """The twin of an optimizer of :mod:`precision.optim` with this format as its arithmetic
        and state format A (:class:`precision.exact.optim.EmulatedOptimizer`).

        ``optimizer``: a name ("sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw") with
        the class's keyword arguments (``lr=``, ``betas=``, ``convention=``, ``update=``,
        ``master_weights=``, ``seed=``, ...), or an optimizer instance to mirror (its
        ``state_format`` must be None or this format)."""
        from .optim import EmulatedOptimizer
        if isinstance(optimizer, str):
            return EmulatedOptimizer.from_name(self.fmt, optimizer, **settings)
        if settings:
            raise TypeError("settings go to the optimizer itself when an instance is given")
        return EmulatedOptimizer(self.fmt, optimizer)


def check_storage(storage, arith) -> None:
    """ValueError unless arrays stored in ``storage`` can be computed on in ``arith`` (the same
    format or one at least as wide in precision and range, as a kernel's ``accum``)."""
    S, A = _formats.format(storage), _formats.format(arith)
    if A.short not in _formats.ARITHMETIC_FOR[S.short]:
        wider = ", ".join(_formats.format(a).name for a in _formats.ARITHMETIC_FOR[S.short])
        raise ValueError(f"emulated {A.name} arithmetic is not at least as wide as the storage "
                         f"format {S.name} of these arrays; emulate one of: {wider}")


@lru_cache(maxsize=None)
def _emulated(fmt) -> Emulated:
    return Emulated(fmt)


def emulate(fmt) -> Emulated:
    """The correctly rounded arithmetic of ``fmt`` (a Format, a name such as "float16" or
    "bf16", or a dtype).  Instances are cached: one per format."""
    return _emulated(_formats.format(fmt))
