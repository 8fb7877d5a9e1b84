"""Twins of :mod:`precision.rl`: exact values (mpmath / rationals) and op-by-op emulations.

Exact twins (the mathematical functions of the exact input values):

* ``k3(x)``, ``approx_kl(log_ratio, estimator)``: e^x - 1 - x (evaluated with extra digits for
  tiny |x|, where e^x - 1 and x agree to -log10|x| digits), -x, x^2/2, and their means;
* ``gaussian_entropy``, ``gaussian_kl``, ``categorical_entropy``, ``categorical_kl``;
* ``squashed_gaussian_entropy(mean, log_std)``: by quadrature (mpmath.quad), per dimension
  H = 1/2 log(2 pi e s^2) + E[log(1 - tanh(u)^2)], u ~ N(mu, s^2), the integrand split at u = 0
  (its kink);
* ``explained_variance``, ``value_loss``: rational functions of the inputs, returned exactly as
  ``fractions.Fraction`` (NaN as float nan), RLlib's eps taken as the decimal 10^-6.

mpf results carry ``dps`` (+ guard) significant digits: round them with ``fmt.round``.

Emulated twins (``emulated_*``): the kernels' algorithms of kernels/rl.pyx.tp, op by op through
``precision.exact.emulate(A)``: every +, -, *, / rounded once into A, exp_A, log_A and k3_A
correctly rounded into A (the kernels are within 1 ulp of those: bit-identical except where
the kernel's double evaluation lands on the other side of a rounding boundary), sums in the
pairwise order, scalars (the float64 constants) rounded once into A, results rounded once into
S.  They return Python floats (values of S), or float64 arrays of them for reduction="none".
``emulated_categorical_kl`` takes ``transcendentals="kernel"`` (default: the kernels' own exp_A,
log_A, log1p_A of fp.h and k3_A, phi_A of rl.h, so it is bit-identical to the kernel in every
format) or ``"correct"`` (each correctly rounded into A).
"""
from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
from mpmath import mpf

from .. import formats as _formats
from .emulate import emulate
from .mp import DEFAULT_DPS, GUARD_DIGITS, _check_dps, _exact_mpf

__all__ = [
    "k3",
    "approx_kl",
    "gaussian_entropy",
    "gaussian_kl",
    "categorical_entropy",
    "categorical_kl",
    "squashed_gaussian_entropy",
    "explained_variance",
    "value_loss",
    "emulated_approx_kl",
    "emulated_gaussian_entropy",
    "emulated_gaussian_kl",
    "emulated_explained_variance",
    "emulated_value_loss",
    "emulated_categorical_kl",
]

_REDUCTIONS = ("mean", "sum", "none")
_HALF_LOG_2PI_E_F64 = 0.5 * math.log(2 * math.pi * math.e)   # precision.rl.HALF_LOG_2PI_E


def _values(x):
    """Elements of x as a flat list of exact Python floats (every format fits in float64)."""
    arr = np.asarray(x)
    with np.errstate(invalid="ignore"):
        return arr.astype(np.float64).reshape(-1).tolist(), arr.shape


def _rows(x):
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    with np.errstate(invalid="ignore"):
        flat = arr.astype(np.float64).reshape(-1, arr.shape[-1])
    return flat.tolist(), arr.shape[:-1]


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _object(values, shape):
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out.reshape(shape)


def _reduce_exact(values, reduction, shape):
    if reduction == "none":
        out = _object(values, shape)
        return out[()] if out.ndim == 0 else out
    total = mpmath.fsum(values)
    return total / len(values) if reduction == "mean" else total


# ----------------------------------------------------------------------------- exact
def _k3_mpf(x: float, dps: int):
    """e^x - 1 - x of a float x, with enough digits that the cancellation costs none."""
    if x == 0:
        return mpf(0)
    if math.isinf(x):
        return mpmath.inf
    extra = max(0, int(-2 * math.log10(abs(x)))) if abs(x) < 1 else 0
    with mpmath.workdps(dps + GUARD_DIGITS + extra):
        v = _exact_mpf(x)
        return +(mpmath.expm1(v) - v)


def k3(x, *, dps=DEFAULT_DPS):
    """e^x - 1 - x of each element (object array of mpf; an mpf for a scalar)."""
    dps = _check_dps(dps)
    values, shape = _values(x)
    out = _object([_k3_mpf(v, dps) for v in values], shape)
    return out[()] if out.ndim == 0 else out


def approx_kl(log_ratio, *, estimator="k3", reduction="mean", dps=DEFAULT_DPS):
    """Exact k1 = -x, k2 = x^2/2 or k3 = e^x - 1 - x of each log-ratio x, reduced."""
    _check_reduction(reduction)
    dps = _check_dps(dps)
    values, shape = _values(log_ratio)
    with mpmath.workdps(dps + GUARD_DIGITS):
        if estimator == "k1":
            terms = [-_exact_mpf(v) for v in values]
        elif estimator == "k2":
            terms = [mpmath.fmul(_exact_mpf(v), _exact_mpf(v), exact=True) / 2 for v in values]
        elif estimator == "k3":
            terms = [_k3_mpf(v, dps) for v in values]
        else:
            raise ValueError(f"estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")
    # exact sums: k1's terms may cancel
    with mpmath.workdps(dps + GUARD_DIGITS):
        if reduction == "none":
            return _reduce_exact(terms, reduction, shape)
        total = mpf(0)
        for t in terms:
            total = mpmath.fadd(total, t, exact=True)
        return +(total / len(terms)) if reduction == "mean" else +total


def gaussian_entropy(log_std=None, *, std=None, reduction="mean", dps=DEFAULT_DPS):
    """sum_i (1/2 log(2 pi e) + log s_i) over the last axis, reduced over rows."""
    _check_reduction(reduction)
    dps = _check_dps(dps)
    if (log_std is None) == (std is None):
        raise ValueError("give exactly one of log_std or std")
    rows, lead = _rows(log_std if std is None else std)
    out = []
    # the sum may cancel near the zero crossing: 40 more digits than asked
    with mpmath.workdps(dps + GUARD_DIGITS + 40):
        c = mpmath.log(2 * mpmath.pi * mpmath.e) / 2
        for row in rows:
            logs = [_exact_mpf(v) if std is None else mpmath.log(_exact_mpf(v)) for v in row]
            out.append(len(row) * c + mpmath.fsum(logs))
        return _reduce_exact(out, reduction, lead)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q, *, reduction="mean", dps=DEFAULT_DPS):
    """KL(p || q) of diagonal Gaussians summed over the last axis:
    sum_i 1/2 k3(2 (ls_p - ls_q)) + 1/2 ((mu_p - mu_q) / exp(ls_q))^2 (no cancellation)."""
    _check_reduction(reduction)
    dps = _check_dps(dps)
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind
                                   != "V" else np.asarray(a).astype(np.float64)
                                   for a in (mean_p, log_std_p, mean_q, log_std_q)))
    rows = [_rows(a)[0] for a in arrays]
    lead = _rows(arrays[0])[1]
    out = []
    with mpmath.workdps(dps + GUARD_DIGITS):
        for mp_row, lp_row, mq_row, lq_row in zip(*rows):
            total = mpf(0)
            for mp_, lp, mq, lq in zip(mp_row, lp_row, mq_row, lq_row):
                d = 2 * (Fraction(lp) - Fraction(lq))          # exact
                z = (_exact_mpf(mp_) - _exact_mpf(mq)) / mpmath.exp(_exact_mpf(lq))
                kd = _k3_mpf_fraction(d, dps)
                total += (kd + z * z) / 2
            out.append(total)
        return _reduce_exact(out, reduction, lead)


def _k3_mpf_fraction(d: Fraction, dps: int):
    """k3 of an exact dyadic rational (2 (ls_p - ls_q) need not be a float)."""
    if d == 0:
        return mpf(0)
    extra = max(0, int(-2 * math.log10(abs(float(d))))) if abs(d) < 1 else 0
    with mpmath.workdps(dps + GUARD_DIGITS + extra + 5):
        v = mpf(d.numerator) / d.denominator
        return +(mpmath.expm1(v) - v)


def categorical_entropy(logits, *, reduction="mean", dps=DEFAULT_DPS):
    """-sum_i p_i log p_i of p = softmax(logits) per row (every term >= 0)."""
    from .mp import log_softmax, softmax

    _check_reduction(reduction)
    dps = _check_dps(dps)
    x = np.asarray(logits)
    p = softmax(x, dps=dps + 10)
    lp = log_softmax(x, dps=dps + 10)
    p2 = p.reshape(-1, x.shape[-1])
    lp2 = lp.reshape(-1, x.shape[-1])
    with mpmath.workdps(dps + GUARD_DIGITS):
        rows = [mpmath.fsum(-pi * li for pi, li in zip(pr_, lr_) if pi != 0)
                for pr_, lr_ in zip(p2, lp2)]
        return _reduce_exact(rows, reduction, x.shape[:-1])


def categorical_kl(logits_p, logits_q, *, reduction="mean", dps=DEFAULT_DPS):
    """sum_i p_i (log p_i - log q_i) of p = softmax(logits_p), q = softmax(logits_q) per row.

    The sum cancels when p ~ q (KL ~ |logit differences|^2 against terms ~ |differences|), so
    each row is evaluated with 40 more digits than asked and, while the KL is not at least
    10^-(extra - 5) times 1 + sum_i p_i (|log p_i| + |log q_i|) (the size of what cancels), again
    with twice the extra digits (up to 1200; a row of exactly equal logits is 0 without that)."""
    from .mp import log_softmax, softmax

    _check_reduction(reduction)
    dps = _check_dps(dps)
    xp, xq = np.asarray(logits_p), np.asarray(logits_q)
    rows_p = xp.reshape(-1, xp.shape[-1])
    rows_q = xq.reshape(-1, xq.shape[-1])
    out = []
    for rp, rq in zip(rows_p, rows_q):
        if np.array_equal(rp, rq):
            out.append(mpf(0))
            continue
        extra = 40
        while True:
            deep = dps + extra
            p = softmax(rp, dps=deep)
            lp = log_softmax(rp, dps=deep)
            lq = log_softmax(rq, dps=deep)
            with mpmath.workdps(deep + GUARD_DIGITS):
                kl = mpmath.fsum(pi * (a - b) for pi, a, b in zip(p, lp, lq) if pi != 0)
                # the operands the sum cancels: log p_i and log q_i themselves
                size = 1 + mpmath.fsum(pi * (abs(a) + abs(b)) for pi, a, b in zip(p, lp, lq)
                                       if pi != 0)
            if extra >= 1200 or abs(kl) >= size * mpmath.mpf(10) ** (5 - extra):
                break
            extra *= 2
        out.append(kl)
    with mpmath.workdps(dps + GUARD_DIGITS):
        return _reduce_exact(out, reduction, xp.shape[:-1])


def squashed_gaussian_entropy(mean, log_std, *, eps=0.0, dps=20):
    """Entropy of tanh(u), u ~ N(mean, exp(log_std)^2) diagonal, by quadrature: per row
    sum_i [1/2 log(2 pi e s_i^2) + E log(1 - tanh(u_i)^2 + eps)] (eps = 0: the exact entropy).
    Returns an mpf (one distribution) or an object array of the leading shape."""
    dps = _check_dps(dps)
    arrays = np.broadcast_arrays(np.asarray(mean, dtype=np.float64),
                                 np.asarray(log_std, dtype=np.float64))
    rows_m, lead = _rows(arrays[0])
    rows_l, _ = _rows(arrays[1])
    out = []
    with mpmath.workdps(dps + GUARD_DIGITS):
        eps_mp = _exact_mpf(float(eps))
        c = mpmath.log(2 * mpmath.pi * mpmath.e) / 2
        ln2 = mpmath.log(2)

        def log_jac(u):
            if eps_mp == 0:
                au = abs(u)
                return 2 * (ln2 - au - mpmath.log1p(mpmath.exp(-2 * au)))
            return mpmath.log(1 - mpmath.tanh(u) ** 2 + eps_mp)

        for mr, lr in zip(rows_m, rows_l):
            total = mpf(0)
            for mu, ls in zip(mr, lr):
                mu, ls = _exact_mpf(mu), _exact_mpf(ls)
                s = mpmath.exp(ls)
                z0 = -mu / s       # where u = 0: the integrand's kink

                def integrand(z, mu=mu, s=s):
                    return mpmath.npdf(z) * log_jac(mu + s * z)

                total += c + ls + mpmath.quad(integrand, [-mpmath.inf, z0 - 8, z0, z0 + 8,
                                                           mpmath.inf])
            out.append(total)
    res = _object(out, lead)
    return res[()] if res.ndim == 0 else res


def _fraction_values(x):
    values, shape = _values(x)
    return [Fraction(v) for v in values], shape


def _variance(values, ddof):
    n = len(values)
    if n - ddof <= 0:
        return None
    m = sum(values, Fraction(0)) / n
    return sum(((v - m) ** 2 for v in values), Fraction(0)) / (n - ddof)


def explained_variance(y_pred, y_true, *, convention="sb3"):
    """1 - Var(y - yhat)/Var(y) exactly (a Fraction; NaN as float nan): "sb3"/"cleanrl" biased,
    NaN iff Var(y) = 0; "rllib" unbiased, max(-1, 1 - Var(d)/(Var(y) + 10^-6)), NaN for n = 1."""
    yp, _ = _fraction_values(y_pred)
    yt, _ = _fraction_values(y_true)
    if convention in ("sb3", "cleanrl"):
        vy = _variance(yt, 0)
        if vy == 0:
            return math.nan
        return 1 - _variance([a - b for a, b in zip(yt, yp)], 0) / vy
    if convention == "rllib":
        vy = _variance(yt, 1)
        if vy is None:
            return math.nan
        ev = 1 - _variance([a - b for a, b in zip(yt, yp)], 1) / (vy + Fraction(1, 10 ** 6))
        return max(Fraction(-1), ev)
    raise ValueError(f"unknown convention {convention!r}")


def value_loss(values, targets, *, convention="rllib", vf_clip_param=10.0, reduction="mean",
               return_grad=False):
    """Exact loss (Fractions) min((v - t)^2, c) (c = vf_clip_param for "rllib", none for "sb3")
    reduced, and its gradient 2 (v - t) [/ N] where (v - t)^2 <= c, else 0."""
    _check_reduction(reduction)
    v, shape = _fraction_values(values)
    t, _ = _fraction_values(targets)
    clip = None if (convention == "sb3" or vf_clip_param is None) else Fraction(float(vf_clip_param))
    e = [a - b for a, b in zip(v, t)]
    terms = [x * x if clip is None else min(x * x, clip) for x in e]
    n = len(terms)
    if reduction == "none":
        loss = _object(terms, shape)
        loss = loss[()] if loss.ndim == 0 else loss
    else:
        loss = sum(terms, Fraction(0)) / (n if reduction == "mean" else 1)
    if not return_grad:
        return loss
    div = n if reduction == "mean" else 1
    grad = _object([2 * x / div if clip is None or x * x <= clip else Fraction(0) for x in e],
                   shape)
    return loss, grad


# ----------------------------------------------------------------------------- emulated
def _arith(storage_fmt, accum):
    return _formats.arithmetic_format(accum, storage_fmt)


def _em_reduce(terms, reduction, shape, storage, arith):
    """Reduce A values as the kernels do; round to S."""
    em, es = emulate(arith), emulate(storage)
    if reduction == "none":
        return np.array([es.round(v) for v in terms], dtype=np.float64).reshape(shape)
    total = em.sum(terms, order="pairwise")
    if reduction == "mean":
        total = em.div(total, em.round(len(terms)))
    return es.round(total)


def _em_k3(em, x):
    return em.round(_k3_mpf(x, 30))


def emulated_approx_kl(log_ratio, *, estimator="k3", method="expm1", reduction="mean",
                       accum=None):
    """precision.rl.approx_kl's algorithm op by op (kernels/rl.pyx.tp)."""
    arr = np.asarray(log_ratio)
    storage = _formats.of(arr)
    arith = _arith(storage, accum)
    em = emulate(arith)
    values, shape = _values(arr)
    terms = []
    for x in values:
        if estimator == "k1":
            terms.append(em.neg(x))
        elif estimator == "k2":
            terms.append(em.mul(em.mul(x, x), 0.5))
        elif method == "naive":
            terms.append(em.sub(em.sub(em.exp(x), 1.0), x))
        else:
            terms.append(_em_k3(em, x))
    return _em_reduce(terms, reduction, shape, storage, arith)


def _em_row_reduce(rows, reduction, lead, storage, arith):
    em = emulate(arith)
    sums = [em.sum(r, order="pairwise") for r in rows]
    return _em_reduce(sums, reduction, lead, storage, arith)


def emulated_gaussian_entropy(log_std=None, *, std=None, reduction="mean", accum=None):
    """precision.rl.gaussian_entropy's algorithm op by op."""
    arr = np.asarray(log_std if std is None else std)
    storage = _formats.of(arr)
    arith = _arith(storage, accum)
    em = emulate(arith)
    c = em.round(_HALF_LOG_2PI_E_F64)
    rows, lead = _rows(arr)
    terms = [[em.add(c, v if std is None else em.log(v)) for v in row] for row in rows]
    return _em_row_reduce(terms, reduction, lead, storage, arith)


def emulated_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q, *, reduction="mean", accum=None):
    """precision.rl.gaussian_kl's algorithm op by op."""
    arrays = np.broadcast_arrays(*(np.asarray(a) for a in (mean_p, log_std_p, mean_q, log_std_q)))
    storage = _formats.of(arrays[0])
    arith = _arith(storage, accum)
    em = emulate(arith)
    rows = [_rows(a)[0] for a in arrays]
    lead = _rows(arrays[0])[1]
    out = []
    for mp_row, lp_row, mq_row, lq_row in zip(*rows):
        terms = []
        for mp_, lp, mq, lq in zip(mp_row, lp_row, mq_row, lq_row):
            d = em.sub(lp, lq)
            z = em.div(em.sub(mp_, mq), em.exp(lq))
            terms.append(em.mul(em.add(_em_k3(em, em.add(d, d)), em.mul(z, z)), 0.5))
        out.append(terms)
    return _em_row_reduce(out, reduction, lead, storage, arith)


def _em_variance(em, values, n_a, dof_a):
    m = em.div(em.sum(values, order="pairwise"), n_a)
    sq = []
    for v in values:
        dev = em.sub(v, m)
        sq.append(em.mul(dev, dev))
    return em.div(em.sum(sq, order="pairwise"), dof_a)


def emulated_explained_variance(y_pred, y_true, *, convention="sb3", accum=None):
    """precision.rl.explained_variance's algorithm op by op."""
    yt_arr = np.asarray(y_true)
    storage = _formats.of(yt_arr)
    arith = _arith(storage, accum)
    em, es = emulate(arith), emulate(storage)
    yp, _ = _values(y_pred)
    yt, _ = _values(yt_arr)
    n = len(yt)
    rllib = convention == "rllib"
    n_a = em.round(n)
    dof_a = em.round(n - 1) if rllib else n_a
    d = [em.sub(a, b) for a, b in zip(yt, yp)]
    vy = _em_variance(em, yt, n_a, dof_a)
    vd = _em_variance(em, d, n_a, dof_a)
    if rllib:
        ev = em.sub(1.0, em.div(vd, em.add(vy, em.round(1e-6))))
        ev = -1.0 if ev < -1.0 else ev
    elif vy == 0:
        ev = math.nan
    else:
        ev = em.sub(1.0, em.div(vd, vy))
    return es.round(ev)


def emulated_value_loss(values, targets, *, convention="rllib", vf_clip_param=10.0,
                        reduction="mean", return_grad=False, accum=None):
    """precision.rl.value_loss's algorithm op by op; returns loss or (loss, grad)."""
    v_arr = np.asarray(values)
    storage = _formats.of(v_arr)
    arith = _arith(storage, accum)
    em, es = emulate(arith), emulate(storage)
    v, shape = _values(v_arr)
    t, _ = _values(targets)
    clip = math.inf if (convention == "sb3" or vf_clip_param is None) else em.round(
        float(vf_clip_param))
    div = em.round(len(v)) if reduction == "mean" else 1.0
    terms, grad = [], []
    for a, b in zip(v, t):
        e = em.sub(a, b)
        sq = em.mul(e, e)
        terms.append(sq if sq <= clip else clip)
        grad.append(es.round(em.div(em.add(e, e), div)) if sq <= clip else 0.0)
    loss = _em_reduce(terms, reduction, shape, storage, arith)
    if return_grad:
        return loss, np.array(grad, dtype=np.float64).reshape(shape)
    return loss


_TRANSCENDENTALS = ("kernel", "correct")


def _log1pmx_mpf(s: float, dps: int):
    """log1p(s) - s of a float s, with enough digits that the cancellation costs none."""
    if s == 0:
        return mpf(0)
    extra = max(0, int(-2 * math.log10(abs(s)))) if abs(s) < 1 else 0
    with mpmath.workdps(dps + GUARD_DIGITS + extra):
        v = _exact_mpf(s)
        return +(mpmath.log1p(v) - v)


class _KernelFunctions:
    """exp_A, log_A, log1p_A, k3_A, phi_A of one arithmetic, as the kernels or correctly rounded."""

    def __init__(self, em, arith, transcendentals):
        if transcendentals not in _TRANSCENDENTALS:
            raise ValueError(f"transcendentals must be one of {_TRANSCENDENTALS}, "
                             f"got {transcendentals!r}")
        self.em, self.arith, self.kernel = em, arith, transcendentals == "kernel"

    def _apply(self, name, v):
        from precision._kernels import _primitives, load     # only this mode needs them
        x = np.array([float(v)], dtype=np.float64)
        out = np.empty_like(x)
        with np.errstate(all="ignore"):
            if name in ("k3", "log1pmx"):
                load("rl").transcendental(name, self.arith.short, x, out)
            else:
                _primitives.elementary(name, self.arith.short, x, out)
        return float(out[0])

    def __call__(self, name, v):
        if self.kernel:
            return self._apply(name, v)
        if name == "k3":
            return _em_k3(self.em, v)
        if name == "log1pmx":
            if math.isnan(v) or v < -1:
                return math.nan
            if v == -1 or math.isinf(v):
                return -math.inf
            return self.em.round(_log1pmx_mpf(v, 30))
        return getattr(self.em, name)(v)


def _em_categorical_kl_row(em, fn, x, y):
    """One row of kernels/rl.pyx.tp's categorical KL, op by op."""
    pw = lambda v: em.sum(v, order="pairwise")       # noqa: E731
    n = len(x)
    m = em.max(x)
    e = [fn("exp", em.sub(v, m)) for v in x]
    t = pw(e)
    lt = fn("log", t)
    p = [em.div(v, t) for v in e]
    tiny = em.fmt.tiny
    c = pw([em.mul(pi, em.sub(yi, xi)) if pi != 0 else 0.0 for pi, xi, yi in zip(p, x, y)])
    ta, tb = [], []
    for pi, xi, yi in zip(p, x, y):
        d = em.sub(em.sub(yi, xi), c) if pi != 0 else math.nan
        ta.append(em.mul(pi, d) if pi != 0 else 0.0)
        if pi >= tiny:
            tb.append(em.mul(pi, fn("k3", d)))
        else:
            v = fn("exp", em.sub(em.sub(em.sub(yi, m), lt), c))
            tb.append(em.sub(v, em.mul(pi, em.add(1.0, d))) if pi != 0 else v)
    a, b = pw(ta), pw(tb)
    if all(math.isfinite(v) for v in (c, a, b)):
        s = em.add(a, b)
        kl = em.add(b, fn("log1pmx", s)) if abs(s) < 1 else em.sub(fn("log1p", s), a)
    else:
        top = em.max(y)
        lse = em.sub(fn("log", pw([fn("exp", em.sub(v, top)) for v in y])), lt)
        terms = [em.mul(p[i], em.sub(em.sub(x[i], m), em.sub(y[i], top))) if p[i] != 0 else 0.0
                 for i in range(n)]
        kl = em.add(pw(terms), lse)
    return 0.0 if kl < 0 else kl


def emulated_categorical_kl(logits_p, logits_q, *, reduction="mean", accum=None,
                            transcendentals="kernel"):
    """precision.rl.categorical_kl's algorithm op by op (kernels/rl.pyx.tp)."""
    _check_reduction(reduction)
    xp = np.asarray(logits_p)
    storage = _formats.of(xp)
    arith = _arith(storage, accum)
    em = emulate(arith)
    fn = _KernelFunctions(em, arith, transcendentals)
    rows_p, lead = _rows(xp)
    rows_q, _ = _rows(np.asarray(logits_q))
    kl = [_em_categorical_kl_row(em, fn, x, y) for x, y in zip(rows_p, rows_q)]
    return _em_reduce(kl, reduction, lead, storage, arith)
