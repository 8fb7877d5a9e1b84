"""Softmax, log-softmax, log-sum-exp and the losses built on them, in every format.

    import precision as pr
    loss = pr.softmax_cross_entropy(logits, targets)          # targets: (N, C) probs or (N,) ints
    loss, grad = pr.softmax_cross_entropy(logits, targets, return_grad=True, accum="float32")
    p = pr.softmax(x); lp = pr.log_softmax(x); y = pr.logsumexp(x)
    kl = pr.kl_divergence(targets, logits); h = pr.entropy(probs)

The storage format S is the dtype of the arrays (float16, bfloat16, float32 or float64; all arrays
of a call share it).  ``accum`` names the arithmetic format A (default S; it must be at least as
wide: float16 -> float16/float32/float64, bfloat16 -> bfloat16/float32/float64, float32 ->
float32/float64, float64 -> float64).  Every +, -, *, / is rounded to A (to nearest even, with A's
subnormals and overflow); exp, log and log1p are evaluated in double and rounded once to A
(correctly rounded for A = float16 and bfloat16; within 1 ulp for float32 and float64); each
output is rounded once from A to S.  With A wider than S this is "compute wide, round once":
the loss and every gradient entry come out within 1 ulp of S (gradient rows that cancel are
refined, see below).

The algorithm, per row x of C logits (Blanchard, Higham & Higham, "Accurately computing the
log-sum-exp and softmax functions", IMA J. Numer. Anal. 41(4), 2021; R(.) rounds to A):

    a   = max_i x_i  (NaN if any x_i is NaN),  k = the first index with x_k = a
    z_i = R(x_i - a)  (<= 0),   e_i = exp_A(z_i)  (e_k = 1)
    s   = pairwise_A(e_i, i != k),   L = log1p_A(s),   D = R(1 + s)
    logsumexp(x)   = R(a + L)
    log_softmax_i  = R(z_i - L)
    softmax_i      = p_i = R(e_i / D)
    CE (soft t)    = pairwise_A(t_i != 0 ? R(t_i * R(L - z_i)) : 0)     every term >= 0
    CE (class y)   = R(L - z_y)
    KL(t || p)     = pairwise_A(t_i > 0 ? R(t_i * R(log_A(t_i) + R(L - z_i))) : 0)
    H(p)           = pairwise_A(p_i > 0 ? R(p_i * R(-log_A(p_i))) : 0)

Gradient of the CE row loss with respect to x (T = the row's target mass, 1 for class indices):

    Tk  = pairwise_A(t_i, i != k),  T = R(Tk + t_k)
    g_j = R(R(T * p_j) - t_j)                  (j != k)
    g_k = R(R(Tk - R(t_k * s)) / D)            = T p_k - t_k written without the cancellation
                                                 1/(1+s) - 1 of a confident row
    and for reduction="mean" each g_j is then R(g_j / N_A).

Refinement (A wider than S, soft or smoothed targets).  g_j = T p_j - t_j cancels when the
prediction is close to the target (distillation, late training, nearly uniform predictions), and
then no fixed wider format gets it within 1 ulp of S.  So each such row's gradient is checked in
double against a rigorous bound of its error in A (a first-order running-error bound of the
formulas above; Z = min(a - min finite x, Zcap_A), d = the depth of a pairwise sum of C terms):

    E_j = (2 Z + 2 d + 17) u_A (|g_j| + 2 m_j / N) + (4 T + 5) eta_A
          m_j = t_j (j != k),  m_k = R(min(Tk, R(t_k s)) / D)      (|g_j| + 2 m_j >= the terms)
    the row is refined if some E_j > u_S |g_j| / 8 and E_j > eta_S / 8

With float32 arithmetic this test is evaluated in float (fl(|g_j| A) < fl(fl(m_j B) + C0) and
fl(fl(|g_j| K) + fl(m_j B)) >= E0, constants rounded outward from the doubles u_S/8 - c u_A,
c u_A 2/N, c u_A, abs_err and eta_S/8 - abs_err: a superset of the entries above,
kernels/losses_refine.h), and with 16-bit storage a row is refined only if a third, tight
stage flags it too: with errS = |s - s_d| + gamma s_d + (u' + eps_z) s_d, relD = (errS + u D)/D,
relQ = (|T - T_d| + (gamma + 2^-53) T_d + eps_t T_d)/T + u' + eps_z + relD + 2u (s_d, T_d: double
pairwise sums of the same float terms, gamma = 1.01 d 2^-53, u' = u(1 + 2^-18) the exp's rounding,
eps_z = 0 if every x_i - a is exact in float else u Z, eps_t = 3u with smoothing else 0),
E_j = u G + relQ (1 + 4u)(G + t_j) + eps_t t_j (G = N |g_j|),
E_k = (errT_k + t_k errS + (eps_t + u) t_k s + u G D)/D + G (relD + u), then
(E_j / N + u |g_j| [N != 1])(1 + 2^-20) + (4T + 5) eta_A; it flags the row if some such
E_j > u_S |g_j| / 2 and E_j > eta_S / 2 (half an ulp is enough for "within 1 ulp").  The
a-priori test is applied with Z at its cap and with the row's own Z, and a row is refined iff
every stage flags it (blocks and rows evaluate them in different orders: the same decision).

(u, eta: unit roundoff and smallest subnormal; Zcap = 104 for float32, 745 for float64, beyond
which exp is 0 or subnormal in A and counted by the eta_A term).  A refined row is recomputed
with the same formulas in double (A = float32 with 16-bit S: the same check with u = 2^-53 then
decides whether to go on) or in double-double (~106 bits, exp to 2^-100 relative), and rounded
once into S.  The double-double level writes each entry in two exact forms, the direct one
T e_j/(1+s) - t'_j and the tie form [((1 - eps)(sum t - m t_j) + eps (C - m)/C) + (T f_j - t'_j F)]
/ (m + F), with f_i = expm1(x_i - a), F = sum f_i and m the number of finite logits, whose first
part is exact whenever the targets' sum is exact in double-double; it keeps for each entry the form
with the smaller running-error bound.  Equal logits give the rational gradient exactly (often 0);
nearly equal ones (differences far below 2^-60) no longer cancel.  Every entry is within 1 ulp of S
unless both forms cancel: T p_j ~ t_j to ~60 bits *and* T f_j ~ t'_j F (logits whose differences
nearly tie again against the targets); the double-double level detects such rows with its own
check, but does not report them yet.  Class indices without smoothing never
cancel and are never refined.  kernels/losses_refine.h has the code, the tests replay the check.

Label smoothing eps (PyTorch's definition t' = (1 - eps) t + eps / C): t'_i = R(R(c1 t_i) + c2)
with c1 = 1 - eps and c2 = eps / C computed exactly and rounded once into A (for class indices
t'_i = c2 and t'_y = R(c1 + c2)).  Reductions: "none" gives the row values, "sum" their
pairwise_A sum, "mean" R(sum / N_A) with N_A the number of rows rounded once into A (a
PrecisionWarning says so when N is not exact in A, e.g. 257 rows in bfloat16).

pairwise_A is the project's fixed summation order (DESIGN.md §3.4, the same as
``precision.exact.emulate(A).sum(v, order="pairwise")``).  Rows run in parallel; the reduction
over rows is serial and in the fixed order, so results are bit-identical for any ``num_threads``.
``precision.exact`` holds the exact twins of every function, and the tests replay this algorithm
op by op with ``precision.exact.emulate(A)``.

Special values: NaN and infinite logits are not errors; they propagate as the formulas above do in
IEEE arithmetic.  A row with a NaN gives NaN everywhere.  A -inf logit has p_i = 0 and
log_softmax_i = -inf; its loss term is 0 when its target is 0 (0 log 0 = 0) and +inf otherwise.
A +inf logit x_k gives z_k = inf - inf = NaN, so p_k and log_softmax_k are NaN, and so is the
loss when t_k > 0 (t_k = 0: +inf if another t_i > 0); logsumexp is +inf if x_k is the row's only
+inf (NaN, and everything else NaN, if there are several).  The gradient does not go through
z_k: the other e_i are exp(-inf) = 0, so s = 0, D = 1, and the formulas give g_k = Tk (= T - t_k)
and g_j = -t_j, which is the limit of the gradient as x_k -> +inf.
Overflow is possible only where an intermediate exceeds A's range: s <= C - 1
overflows in float16 arithmetic once C > 65504, and z_i = x_i - a overflows when the logits
spread over more than A's largest value (then log_softmax_i = -inf, and a loss term with t_i > 0
is +inf); ``accum`` one format wider removes both.

Targets.  Soft targets (and KL targets, entropy probabilities) are checked before anything is
written: every value finite and >= 0, and each row's mass T = sum_i t_i within tau of 1,

    |T - 1| <= tau,   tau = gamma_{d+2}(2^-8) = k u / (1 - k u),  k = d + 2,  u = 2^-8

by default (``default_target_tolerance(C)``; d = the pairwise depth of C terms, e.g. tau = 0.027
for C = 10, 0.1 for C = 1000).  That is the rounding error of normalising C non-negative values
in bfloat16, the narrowest format here (a pairwise sum and a division), then rounding them into
any storage format; it also bounds what ``precision.softmax`` returns in every format (not
counting entries that underflow below the storage format's normal range: in float16, with
thousands of classes, up to 2^-25 each).  So rows
normalised in any format and stored in any other pass (float32-normalised targets cast to
float64, float64-normalised targets cast to float16, a bfloat16 teacher's softmax), while rows
that are not distributions do not, at every C and in every format: tau stays below 0.3 for any
C below 2^40, so a row of zeros (T = 0) or of several ones (T >= 2) is refused.  Pass
``target_tolerance=`` (``probs_tolerance=`` for entropy) to tighten it (e.g. 1e-12 for float64
rows normalised in float64) or loosen it (``math.inf`` keeps only the finiteness and sign
checks); the rows' sums are computed in the pairwise order, in float for 16-bit storage and
double otherwise, and their own rounding error (gamma_d) is allowed for on top of tau.  (When
no ``out``/``grad_out`` is given, softmax_cross_entropy checks each target row inside the
kernel, while the row is in cache, and a bad row voids the call: only buffers of its own were
written.)

Rows of mass T != 1 are used as given, never renormalised: the formulas above carry T, so

    CE row loss  = sum_i t_i (L - z_i) = T logsumexp(x) - sum_i t_i x_i = T CE(t/T, x)
    gradient     g = T p - t = T (p - t/T)      (exactly the gradient of that loss)
    KL(t || p)   = T KL(t/T || p) + T log T
    H(p)         = T H(p/T) - T log T

that is, T times the values for the normalised row, plus T log T (KL) or minus it (entropy).
For the values of t/T instead, normalise the targets first.  With label smoothing eps the
smoothed row has mass (1 - eps) T + eps.
"""
from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np

from . import _checks
from . import formats as _formats
from ._kernels import empty_aligned
from ._kernels import load as _load

__all__ = [
    "default_target_tolerance",
    "logsumexp",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "kl_divergence",
    "entropy",
]

_REDUCTIONS = ("mean", "sum", "none")
# Below this many logits a parallel region costs more than it saves.
_PARALLEL_MIN_WORK = 1 << 15
_COMPUTE_DTYPE = {"f16": np.float32, "bf16": np.float32, "f32": np.float32, "f64": np.float64}


def _kernels():
    return _load("losses")


# ----------------------------------------------------------------------------- arguments
_array = _checks.float_array


def _same_format(arr: np.ndarray, name: str, fmt, against: str) -> None:
    _checks.same_dtype(arr, name, fmt.dtype, against)


# accum -> the arithmetic format A, checked to be the storage format or wider
_arithmetic = _formats.arithmetic_format


def _threads(num_threads, work: int) -> int:
    return _checks.threads(num_threads, work, _PARALLEL_MIN_WORK)


def _reduction(reduction, allowed=_REDUCTIONS) -> str:
    return _checks.check_reduction(reduction, allowed)


def _rows(arr: np.ndarray, name: str) -> np.ndarray:
    """A 2-D (rows, C) view of arr (..., C) whose last axis is contiguous (copy only if not)."""
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    c = arr.shape[-1]
    if c == 0:
        raise ValueError(f"{name} has no classes (its last axis has length 0)")
    if arr.size == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape})")
    rows = arr.reshape(-1, c)
    item = rows.itemsize
    if (c > 1 and rows.strides[1] != item) or rows.strides[0] % item:
        rows = np.ascontiguousarray(rows)
    return rows


def _kernel_view(rows: np.ndarray, fmt) -> np.ndarray:
    """The array as the kernels take it (16-bit formats as their uint16 bit patterns)."""
    return rows.view(np.uint16) if fmt.bits == 16 else rows


def _check_out(out, name: str, shape, fmt, inputs) -> np.ndarray:
    return _checks.check_out(out, name, shape, fmt.dtype, inputs)


# The unit roundoff of bfloat16, the narrowest format here: the default tolerance of a row's
# mass is the rounding error of normalising it in bfloat16 (module docstring, "Targets").
_NARROWEST_U = 2.0 ** -8
# Beyond this relative error of the kernels' own check sum (float lanes for 16-bit storage and
# tens of millions of classes) the rows are summed in float64 by numpy instead.
_CHECK_ERROR_LIMIT = 2.0 ** -6


def default_target_tolerance(n_classes: int) -> float:
    """The default bound on |T - 1| for a row of C = ``n_classes`` probabilities (T its sum):
    gamma_{d+2}(2^-8) = k u / (1 - k u) with k = d + 2, d the pairwise depth of C terms
    (``precision.exact.emulate.pairwise_depth``) and u = 2^-8, bfloat16's unit roundoff.

    That is the rounding error of normalising C non-negative values in bfloat16 (a pairwise
    sum, one division) and rounding the result into any format, and of ``precision.softmax``
    in any format; it grows like log2 C and stays below 0.3 for every C below 2^40, so a row
    of zeros or one summing to 2 is never accepted.  Module docstring, "Targets".
    """
    from .exact.emulate import pairwise_depth

    k = pairwise_depth(int(n_classes)) + 2
    return k * _NARROWEST_U / (1 - k * _NARROWEST_U)


def _tolerance(value, name: str, c: int) -> float:
    """The tolerance of a call: ``value`` (None: :func:`default_target_tolerance`), a real >= 0 (inf
    turns the sum check off)."""
    if value is None:
        return default_target_tolerance(c)
    tol = _checks.check_real(name, value, finite=False)
    if not tol >= 0:
        raise ValueError(f"{name} must be >= 0 (or None for the default), got {value!r}")
    return tol


def _check_sum_error(fmt, c: int) -> float:
    """A bound on the relative error of the kernels' check sum of a row of non-negative values
    (the pairwise order: at most pairwise_depth(C) additions on any value's path; in float for
    16-bit storage, else double)."""
    from .exact.emulate import pairwise_depth

    unit = 2.0 ** -24 if fmt.bits == 16 else 2.0 ** -53
    k = pairwise_depth(int(c))
    return k * unit / (1 - k * unit) if k * unit < 0.5 else math.inf


def _kernel_tolerance(tol: float, fmt, c: int) -> float:
    """What the kernels compare |computed sum - 1| with: tol plus the check's own rounding
    error for a row of mass up to 1 + tol, so every row with |T - 1| <= tol passes."""
    return tol + _check_sum_error(fmt, c) * (1 + tol)


def _kernel_check_is_accurate(fmt, c: int) -> bool:
    return _check_sum_error(fmt, c) <= _CHECK_ERROR_LIMIT


def _raise_for_codes(codes: np.ndarray, rows: np.ndarray, fmt, name: str, tol: float,
                     tol_name: str) -> None:
    """ValueError for the first row whose check code (see check_probabilities_*) is not 0."""
    bad = np.flatnonzero(codes)
    if bad.size == 0:
        return
    row = int(bad[0])
    code = int(codes[row])
    c = rows.shape[1]
    values = rows[row].astype(np.float64)
    if code == 1:
        raise ValueError(f"{name} row {row} contains NaN or infinity")
    if code == 2:
        raise ValueError(f"{name} row {row} has a negative value ({values.min():g})")
    default = default_target_tolerance(c)
    if tol == default:
        why = (f"the default for C = {c} classes: the rounding error of normalising a row in "
               f"bfloat16, the narrowest format here")
    else:
        why = f"given; the default for C = {c} classes is {default:.3g}"
    raise ValueError(
        f"{name} row {row} sums to {_exact_sum_text(values)}, not 1: rows must be probability "
        f"distributions, |sum - 1| <= {tol_name} = {tol:.3g} ({why}).  Normalise the rows "
        f"(t / t.sum(-1, keepdims=True)) or pass {tol_name}= to change the tolerance")


def _exact_sum_text(values: np.ndarray) -> str:
    """The row's sum for an error message (math.fsum raises OverflowError past float64's range,
    e.g. for two values of 1e308)."""
    total = sum(map(Fraction, values.tolist()), Fraction(0))
    try:
        return repr(float(total))
    except OverflowError:
        return "more than 1.8e308"


def _check_rows_in_float64(rows: np.ndarray, tol: float) -> np.ndarray:
    """check_probabilities_* for rows too long for the kernels' check: sums in float64, by
    math.fsum (correctly rounded, whatever numpy's summation order; the allowance 4 u (1 + tol)
    also covers the roundings of |sum - 1| and of the bound)."""
    codes = np.zeros(rows.shape[0], dtype=np.uint8)
    bound = tol + 4 * 2.0 ** -53 * (1 + tol)
    for r in range(rows.shape[0]):
        v = rows[r].astype(np.float64)
        if not np.isfinite(v).all():
            codes[r] = 1
        elif (v < 0).any():
            codes[r] = 2
        elif not abs(math.fsum(v) - 1) <= bound:
            codes[r] = 3
    return codes


def _check_probabilities(rows: np.ndarray, fmt, name: str, num_threads: int, tol: float,
                         tol_name: str) -> None:
    """Finite, non-negative rows whose mass T has |T - 1| <= tol (module docstring)."""
    c = rows.shape[1]
    if _kernel_check_is_accurate(fmt, c):
        check = getattr(_kernels(), f"check_probabilities_{fmt.short}")
        codes = np.empty(rows.shape[0], dtype=np.uint8)
        check(_kernel_view(rows, fmt), _kernel_tolerance(tol, fmt, c), codes, num_threads)
    else:
        codes = _check_rows_in_float64(rows, tol)
    _raise_for_codes(codes, rows, fmt, name, tol, tol_name)


def _batch_divisor(n_rows: int, arith) -> float:
    """N rounded once into A, with a PrecisionWarning when it is not N."""
    if 0 <= n_rows <= 2 ** arith.p:         # exact in A (2^p <= A's largest finite value)
        return float(n_rows)
    n_a = float(arith.round(n_rows))
    if n_a != n_rows:
        warnings.warn(
            f"batch size {n_rows} is not exact in {arith.name}: reduction='mean' divides by "
            f"{n_a:g} (the batch size rounded to the arithmetic format)",
            _formats.PrecisionWarning, stacklevel=3)
    return n_a


def _loss_out(out, reduction: str, lead_shape, fmt, inputs):
    """(user out or None, kernel buffer): "none" writes lead_shape, the others one value."""
    shape = lead_shape if reduction == "none" else ()
    if out is not None:
        _check_out(out, "out", shape, fmt, inputs)
        buf = out.reshape(-1)
    else:
        buf = np.empty(int(np.prod(shape, dtype=np.int64)) if shape else 1, dtype=fmt.dtype)
    return buf, shape


def _result(out, buf, shape):
    if out is not None:
        return out
    if shape == ():
        return buf[0]
    return buf.reshape(shape)


# ----------------------------------------------------------------------------- row functions
def logsumexp(x, *, accum=None, num_threads=None, out=None):
    """log(sum_i exp(x_i)) over the last axis: R(a + log1p_A(s)) (module docstring).

    x: (..., C) of one of our formats (rows may be strided; the last axis is copied only if it
    is not contiguous).  Returns an array of shape x.shape[:-1] (a numpy scalar for 1-D x) in
    x's dtype, or ``out`` (that shape, x's dtype, C-contiguous, writable) when given.
    """
    x = _array(x, "x")
    fmt = _formats.of(x)
    arith = _arithmetic(accum, fmt)
    rows = _rows(x, "x")
    shape = x.shape[:-1]
    if out is not None:
        _check_out(out, "out", shape, fmt, [("x", x)])
        buf = out.reshape(-1)
    else:
        buf = np.empty(rows.shape[0], dtype=fmt.dtype)
    nt = _threads(num_threads, rows.size)
    kernel = getattr(_kernels(), f"logsumexp_{fmt.short}_{arith.short}")
    kernel(_kernel_view(rows, fmt), _kernel_view(buf, fmt), nt)
    if out is not None:
        return out
    return buf[0] if shape == () else buf.reshape(shape)


def _softmax(x, log: bool, accum, num_threads, out):
    x = _array(x, "x")
    fmt = _formats.of(x)
    arith = _arithmetic(accum, fmt)
    rows = _rows(x, "x")
    if out is not None:
        _check_out(out, "out", x.shape, fmt, [("x", x)])
        result = out
    else:
        result = np.empty(x.shape, dtype=fmt.dtype)
    nt = _threads(num_threads, rows.size)
    kernel = getattr(_kernels(), f"softmax_{fmt.short}_{arith.short}")
    kernel(_kernel_view(rows, fmt), _kernel_view(result.reshape(rows.shape), fmt), log, nt)
    return result


def softmax(x, *, accum=None, num_threads=None, out=None):
    """softmax over the last axis: p_i = R(e_i / R(1 + s)), e_i = exp_A(R(x_i - max x)).

    Same arguments as :func:`logsumexp`; returns an array of x's shape and dtype (or ``out``).
    Division by D = 1 + s >= 1 cannot overflow; entries below A's range underflow to 0.
    """
    return _softmax(x, False, accum, num_threads, out)


def log_softmax(x, *, accum=None, num_threads=None, out=None):
    """log-softmax over the last axis: R(z_i - log1p_A(s)), z_i = R(x_i - max x).

    Same arguments as :func:`logsumexp`; returns an array of x's shape and dtype (or ``out``).
    Both terms are <= 0 and >= 0 respectively, so nothing cancels.
    """
    return _softmax(x, True, accum, num_threads, out)


# ----------------------------------------------------------------------------- losses
def _label_smoothing(eps, arith, n_classes):
    """(smooth?, c1, c2): c1 = 1 - eps, c2 = eps / C, each exact and rounded once into A."""
    eps_f = _checks.check_real("label_smoothing", eps, finite=False)
    if not 0.0 <= eps_f <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {eps!r}")
    if eps_f == 0.0:
        return False, 1.0, 0.0
    exact = Fraction(eps_f)
    c1 = _formats.round_scalar(1 - exact, arith, "1 - label_smoothing", stacklevel=4)
    c2 = _formats.round_scalar(exact / n_classes, arith, "label_smoothing / C", stacklevel=4)
    return True, c1, c2


def _labels(targets, n: int, c: int) -> np.ndarray:
    """Class indices as a contiguous int64 array, checked to lie in [0, C)."""
    if targets.dtype == np.bool_ or targets.dtype.kind not in "iu":
        raise TypeError(f"class-index targets must be integers, got dtype {targets.dtype} "
                        f"(soft targets must have the logits' shape and dtype)")
    if targets.shape != (n,):
        raise ValueError(f"class-index targets must have shape ({n},) for {n} rows of logits, "
                         f"got {targets.shape}")
    lo, hi = targets.min(), targets.max()
    if lo < 0 or hi >= c:
        bad = lo if lo < 0 else hi
        raise ValueError(f"class index {int(bad)} is out of range for {c} classes "
                         f"(indices must lie in [0, {c}))")
    return np.require(targets, np.int64, ["C", "A"])    # contiguous and aligned


def softmax_cross_entropy(logits, targets, *, reduction="mean", return_grad=False,
                          label_smoothing=0.0, accum=None, out=None, grad_out=None,
                          num_threads=None, target_tolerance=None):
    """Softmax cross-entropy of logits against soft or hard targets, and its gradient.

    logits: (N, C) (or (C,) for one row) of one of our formats.  targets: probabilities of the
    same shape and dtype (each row finite, >= 0, its sum T within ``target_tolerance`` of 1:
    module docstring, "Targets"), or class indices: an (N,) integer array (an int for 1-D logits).

    Per row (module docstring): loss = sum_i t_i (L - z_i) = -sum_i t_i log softmax(x)_i,
    computed as pairwise_A(t_i != 0 ? R(t_i * R(L - z_i)) : 0) (R(L - z_y) for an index y).
    reduction: "mean" (R(pairwise sum / N_A), the default), "sum", or "none" (the (N,) row
    losses).  label_smoothing eps: t' = (1 - eps) t + eps / C (PyTorch's definition).

    return_grad: also return the gradient of the reduced loss with respect to the logits,
    g_j = T p_j - t_j per row (T = sum of the row's targets), divided by N_A for "mean"; for
    "none" row n is the gradient of loss[n].  Loss and gradient come from one pass per row.

    accum: the arithmetic format A (module docstring).  out: where to write the loss (shape
    (N,) for "none", else () -- a 0-d array), grad_out: where to write the gradient (the logits'
    shape); both of the logits' dtype, C-contiguous, writable, not overlapping any input.
    num_threads: threads over rows, 1 to 256 (default: for large inputs the CPUs this process
    may run on, honouring OMP_NUM_THREADS; always 1 in a process made by ``os.fork()``, where
    OpenMP would hang: see :mod:`precision._checks`); results are bit-identical for any value.
    target_tolerance: the largest |T - 1| accepted for a soft target row (default
    ``default_target_tolerance(C)``; module docstring, "Targets").  A row of mass T != 1 gives
    T times the loss and gradient of the normalised row t/T.

    Returns the loss (a numpy scalar of the logits' dtype for "mean"/"sum" or 1-D logits, an
    (N,) array for "none"; ``out`` itself when given), and (loss, grad) with return_grad.
    """
    x = _array(logits, "logits")
    fmt = _formats.of(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must have shape (N, C) or (C,), got {x.shape}")
    one_row = x.ndim == 1
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    rows = _rows(x, "logits")
    n, c = rows.shape
    t = np.asarray(targets)
    soft = t.dtype.kind == "f" or (t.dtype.kind == "V" and t.dtype.itemsize == 2)
    if soft:
        _same_format(t, "targets", fmt, "logits")
        if t.shape != x.shape:
            raise ValueError(f"soft targets must have the logits' shape {x.shape}, got {t.shape}")
        # a misaligned view is copied, as _checks.float_array does for the other arrays
        soft_rows = _rows(t if t.flags.aligned else t.copy(), "targets")
        labels = None
    else:
        if one_row and t.ndim == 0:
            t = t.reshape(1)
        labels = _labels(t, n, c)
        soft_rows = None
    return_grad = _checks.check_bool("return_grad", return_grad)
    inputs = [("logits", x), ("targets", t)]
    lead = () if one_row else (n,)    # the shape of reduction="none"
    if grad_out is not None:
        if not return_grad:
            raise ValueError("grad_out is given but return_grad is False")
        _check_out(grad_out, "grad_out", x.shape, fmt, inputs)
    buf, shape = _loss_out(out, reduction, lead, fmt,
                           inputs + [("grad_out", grad_out)])
    threads = _threads(num_threads, n * c)
    # soft targets are validated before anything is written; when every output buffer is our
    # own, the kernel checks each row while it has it in cache and a bad row voids the call
    tol = _tolerance(target_tolerance, "target_tolerance", c)
    fused_check = soft and out is None and grad_out is None \
        and _kernel_check_is_accurate(fmt, c)
    if soft and not fused_check:
        _check_probabilities(soft_rows, fmt, "targets", threads, tol, "target_tolerance")
    smooth, c1, c2 = _label_smoothing(label_smoothing, arith, c)
    # every check has passed: from here on only warnings and writes
    batch = _batch_divisor(n, arith) if reduction == "mean" else 1.0
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else empty_aligned(x.shape, fmt.dtype)
    row_loss = np.empty(n, dtype=_COMPUTE_DTYPE[arith.short])
    codes = np.empty(n, dtype=np.uint8) if fused_check else None
    kernel = getattr(_kernels(), f"softmax_cross_entropy_{fmt.short}_{arith.short}")
    kernel(
        _kernel_view(rows, fmt),
        None if soft_rows is None else _kernel_view(soft_rows, fmt),
        labels,
        smooth, c1, c2,
        _kernels().REDUCTIONS[reduction], batch,
        _kernel_view(buf, fmt), row_loss,
        None if grad is None else _kernel_view(grad.reshape(n, c), fmt),
        threads,
        codes, _kernel_tolerance(tol, fmt, c),
        float(label_smoothing) if smooth else 0.0,
    )
    if fused_check:
        _raise_for_codes(codes, soft_rows, fmt, "targets", tol, "target_tolerance")
    loss = _result(out, buf, shape)
    return (loss, grad) if return_grad else loss


def _probability_rows_loss(kernel_name, arrays, reduction, accum, out, num_threads,
                           tolerance, tolerance_name, allowed=_REDUCTIONS):
    """The per-row losses of kl_divergence and entropy, reduced, in ``out`` or a new array.

    ``arrays``: [(argument name, array), ...] of one shape (..., C) and format S, checked by the
    caller; the first holds probability rows (checked here).  Calls the kernel
    ``<kernel_name>_<S>_<A>(rows of each array..., reduction, N_A, out, row_loss, threads)`` with
    N_A the number of rows rounded into A for "mean" ("batchmean" is "mean"), else 1.
    """
    reduction = _reduction(reduction, allowed)
    if reduction == "batchmean":
        reduction = "mean"
    probs_name, first = arrays[0]
    fmt = _formats.of(first)
    arith = _arithmetic(accum, fmt)
    rows = [_rows(arr, name) for name, arr in arrays]
    buf, shape = _loss_out(out, reduction, first.shape[:-1], fmt, arrays)
    threads = _threads(num_threads, rows[0].size)
    tol = _tolerance(tolerance, tolerance_name, rows[0].shape[1])
    _check_probabilities(rows[0], fmt, probs_name, threads, tol, tolerance_name)
    n = rows[0].shape[0]
    batch = _batch_divisor(n, arith) if reduction == "mean" else 1.0
    row_loss = np.empty(n, dtype=_COMPUTE_DTYPE[arith.short])
    kernel = getattr(_kernels(), f"{kernel_name}_{fmt.short}_{arith.short}")
    kernel(*(_kernel_view(r, fmt) for r in rows), _kernels().REDUCTIONS[reduction], batch,
           _kernel_view(buf, fmt), row_loss, threads)
    return _result(out, buf, shape)


def kl_divergence(targets, logits, *, reduction="mean", accum=None, out=None, num_threads=None,
                  target_tolerance=None):
    """KL(t || softmax(x)) = sum_i t_i (log t_i - log softmax(x)_i) per row, computed directly.

    targets, logits: the same shape (..., C) and dtype; targets are probability rows (finite,
    >= 0, their sum T within ``target_tolerance`` of 1; T != 1 gives T KL(t/T || p) + T log T).
    Per row (module docstring):
    pairwise_A(t_i > 0 ? R(t_i * R(log_A(t_i) + R(L - z_i))) : 0), so 0 log 0 = 0 and a class
    with zero target never matters, not even with a -inf logit.  Not computed as CE - H (which
    would cancel).  reduction: "mean" over rows (PyTorch's "batchmean", also accepted by that
    name; PyTorch's own "mean" divides by the number of elements instead), "sum", or "none"
    (shape targets.shape[:-1]).  accum, out, num_threads: as in :func:`softmax_cross_entropy`.
    Returns a numpy scalar of the dtype (or an array for "none", or ``out``).
    """
    t = _array(targets, "targets")
    x = _array(logits, "logits")
    fmt = _formats.of(x)
    _same_format(t, "targets", fmt, "logits")
    if t.shape != x.shape:
        raise ValueError(f"targets {t.shape} and logits {x.shape} must have the same shape")
    return _probability_rows_loss("kl_divergence", [("targets", t), ("logits", x)], reduction,
                                  accum, out, num_threads, target_tolerance, "target_tolerance",
                                  _REDUCTIONS + ("batchmean",))


def entropy(probs, *, reduction="mean", accum=None, out=None, num_threads=None,
            probs_tolerance=None):
    """Entropy H(p) = -sum_i p_i log p_i per row (0 log 0 = 0).

    probs: (..., C) probability rows (finite, >= 0, their sum T within ``probs_tolerance`` of 1;
    T != 1 gives T H(p/T) - T log T).  Per row:
    pairwise_A(p_i > 0 ? R(p_i * R(-log_A(p_i))) : 0), every term >= 0.  reduction: "mean" over
    rows, "sum", or "none" (shape probs.shape[:-1]).  accum, out, num_threads: as in
    :func:`softmax_cross_entropy`.  Returns a numpy scalar of the dtype (or an array, or ``out``).
    """
    p = _array(probs, "probs")
    return _probability_rows_loss("entropy", [("probs", p)], reduction, accum, out, num_threads,
                                  probs_tolerance, "probs_tolerance")
