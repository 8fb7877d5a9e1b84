"""RL training diagnostics: entropies, KL and its sample estimators, explained variance, value loss.

    import precision as pr
    pr.rl.approx_kl(log_ratio)                          # k3 = (r - 1) - log r, mean, no cancellation
    pr.rl.approx_kl(log_ratio, method="naive")          # what SB3 / CleanRL compute
    pr.rl.gaussian_entropy(log_std)                      # sum_i 1/2 log(2 pi e) + log sigma_i
    pr.rl.gaussian_kl(mu_p, log_std_p, mu_q, log_std_q)  # KL(p || q), diagonal Gaussians
    pr.rl.categorical_entropy(logits)
    pr.rl.categorical_kl(logits_p, logits_q)            # from both logit rows, no cancellation
    est, se = pr.rl.squashed_gaussian_entropy(mu, log_std, n_samples=100_000, seed=0)
    pr.rl.explained_variance(values, returns, convention="sb3" | "cleanrl" | "rllib")
    loss, grad = pr.rl.value_loss(values, targets, convention="rllib", return_grad=True)

Storage format S = the dtype of the arrays (all arrays of a call share it); ``accum`` names the
arithmetic format A (S or wider), as in :mod:`precision.losses`.  Every +, -, *, / is rounded to
A; exp_A, log_A, log1p_A are evaluated in double and rounded once (correctly rounded for A =
float16 and bfloat16, within 1 ulp for float32 and float64); k3_A(x) = e^x - 1 - x is evaluated
in double with relative error < 6 * 2^-53 and rounded once (correctly rounded on every float16
and bfloat16 input, within 1 ulp in float32, within 6 ulps in float64), phi_A(s) = log1p(s) - s
likewise with relative error < 18 * 2^-53 (within 1 ulp on every float16 and bfloat16 input
and in float32, within 18 ulps in float64; both proofs are in kernels/rl.h).  Scalars (1/2 log(2 pi e), RLlib's 1e-6 and vf_clip_param, the count N of
a mean) enter rounded once into A, with a PrecisionWarning when that moves them by more than
1 %, to 0 or to infinity.  Sums are the project's pairwise order (pairwise_A); the exact
algorithms are in kernels/rl.pyx.tp's docstring, their op-by-op twins in
:mod:`precision.exact.rl`, the exact (mpmath) values there too.

**Which framework logs what** (Stable-Baselines3 ``ppo/ppo.py``, CleanRL ``ppo*.py``, RLlib's
PPO learner; see ``reference/training-statistics.md`` section C):

* ``approx_kl``: SB3 logs ``train/approx_kl`` = mean((r - 1) - log r) = k3, computed naively in
  torch (``th.exp(log_ratio) - 1 - log_ratio``, storage precision), and stops the epoch when it
  exceeds 1.5 * target_kl.  CleanRL logs both ``old_approx_kl`` = mean(-log r) = k1 and
  ``approx_kl`` = k3 (naive form).  RLlib logs the analytic KL(old || new) of the action
  distributions (:func:`gaussian_kl`, :func:`categorical_kl`).  With x = log r = logp_new -
  logp_old and samples from the old policy q, Schulman's estimators of KL(q || p) are
  k1 = -x (unbiased, often negative), k2 = x^2/2 (biased, low variance), k3 = (e^x - 1) - x
  (unbiased, >= 0).  The naive k3 subtracts 1 from e^x ~ 1: for |x| below ~sqrt(u) it loses
  all its digits (float32, x = 1e-4: relative errors of order 1); ``method="expm1"`` (default)
  evaluates e^x - 1 - x without cancellation.
* entropy: SB3 logs ``train/entropy_loss`` = -mean(entropy) (so it is positive when the entropy
  is negative); its DiagGaussian entropy is summed over action dimensions, parameterised by a
  state-independent ``log_std`` (init 0).  A continuous entropy is a *differential* entropy:
  1/2 log(2 pi e sigma^2) < 0 exactly when sigma < 1/sqrt(2 pi e) = 0.2419707...  The
  tanh-squashed Gaussian (SAC, SB3's SquashedDiagGaussian) has no closed form: SB3 returns
  None and logs -mean(-log_prob) instead.
* explained variance: SB3 and CleanRL: 1 - Var(y - yhat) / Var(y) with numpy's biased
  variance, NaN when Var(y) == 0 exactly (so also for a single sample).  RLlib:
  max(-1, 1 - Var(y - yhat) / (Var(y) + 1e-6)) with torch's unbiased variance (NaN for a single
  sample, which torch.max keeps).  SB3's argument order is (y_pred, y_true), as here; RLlib's
  ``explained_variance(y, pred)`` is the other way round.
* value loss: SB3 ``F.mse_loss(returns, values)`` = mean (v - t)^2 (its optional clip_range_vf
  clips the *prediction* around the old one, not modelled here; CleanRL logs 0.5 * that mean).
  RLlib: mean(clamp((v - t)^2, 0, vf_clip_param)), vf_clip_param = 10 by default: the gradient
  is 0 wherever (v - t)^2 > vf_clip_param, i.e. |v - t| > sqrt(10) = 3.162.

Bad input raises before anything is written: TypeError for non-float or mixed dtypes,
ValueError for empty arrays, mismatched shapes, NaN or infinite values, sigma <= 0, a bad
``reduction``/``convention``/``estimator``/``method``.  A single sample is not an error for the
explained variance: it is NaN in every convention, as the frameworks report it.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from . import _checks
from . import formats as _formats
from ._kernels import load as _load
from .losses import (_COMPUTE_DTYPE, _arithmetic, _array, _batch_divisor, _check_out,
                     _kernel_view, _reduction, _same_format, _threads)
from . import losses as _losses

__all__ = [
    "HALF_LOG_2PI_E",
    "ENTROPY_ZERO_SIGMA",
    "approx_kl",
    "gaussian_entropy",
    "gaussian_kl",
    "categorical_entropy",
    "categorical_kl",
    "squashed_gaussian_entropy",
    "explained_variance",
    "value_loss",
]

HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
"""1/2 log(2 pi e) = 1.4189385332..., the entropy of N(0, 1) (float64, correctly rounded)."""
ENTROPY_ZERO_SIGMA = 1.0 / math.sqrt(2 * math.pi * math.e)
"""1/sqrt(2 pi e) = 0.2419707245...: a Gaussian's differential entropy is negative below it."""

ESTIMATORS = ("k1", "k2", "k3")
KL_METHODS = ("expm1", "naive")
CONVENTIONS = ("sb3", "cleanrl", "rllib")
VALUE_LOSS_CONVENTIONS = ("sb3", "rllib")
RLLIB_EPS = 1e-6
RLLIB_VF_CLIP_PARAM = 10.0


def _kernels():
    return _load("rl")


def _choice(value, allowed, name):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _finite(arr, name):
    with np.errstate(invalid="ignore"):
        wide = arr.astype(np.float64)
    if not np.all(np.isfinite(wide)):
        bad = "NaN" if np.isnan(wide).any() else "an infinite value"
        raise ValueError(f"{name} contains {bad}")
    return wide


def _nonempty(arr, name):
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")


def _result(buf, shape, out):
    if out is not None:
        return out
    if shape == ():
        return buf[0]
    return buf.reshape(shape)


def _reduce(values, reduction, shape, fmt, arith, out, inputs):
    """Reduce the A values (one per element of ``shape``) into S, in ``out`` or a new array."""
    target_shape = shape if reduction == "none" else ()
    if out is not None:
        _check_out(out, "out", target_shape, fmt, inputs)
        buf = out.reshape(-1)
    else:
        buf = np.empty(max(1, int(np.prod(target_shape, dtype=np.int64))), dtype=fmt.dtype)
    batch = _batch_divisor(values.shape[0], arith) if reduction == "mean" else 1.0
    getattr(_kernels(), f"reduce_{fmt.short}_{arith.short}")(
        values, _kernels().REDUCTIONS[reduction], batch, _kernel_view(buf, fmt))
    return _result(buf, target_shape, out)


# ----------------------------------------------------------------------------- KL estimators
def approx_kl(log_ratio, *, estimator="k3", method="expm1", reduction="mean", accum=None,
              out=None, num_threads=None):
    """Schulman's sample estimators of KL(q || p) from log-ratios x = log p(a) - log q(a), a ~ q.

    log_ratio: any shape, one of our formats (PPO: ``logp_new - logp_old`` of the sampled
    actions, q the old policy).  Per element, in A (kernels/rl.pyx.tp):

        k1 = -x                      (CleanRL's old_approx_kl; unbiased, can be negative)
        k2 = R(R(x * x) * 1/2)       (biased, low variance)
        k3 = k3_A(x) = e^x - 1 - x   (method "expm1", the default: rounded once from a double
                                      evaluation with relative error < 6 * 2^-53; within 1 ulp
                                      for A <= float32, 6 ulps for float64)
        k3 = R(R(exp_A(x) - 1) - x)  (method "naive": SB3's approx_kl and CleanRL's approx_kl as
                                      they compute it; all digits lost once |x| < ~sqrt(u_A))

    reduction: "mean" (R(pairwise_A / N_A), the default, what the frameworks log), "sum", or
    "none" (each term rounded to S, log_ratio's shape).  ``method`` only matters for k3.
    Returns a numpy scalar of the storage dtype (an array for "none"; ``out`` when given).
    """
    x = _array(log_ratio, "log_ratio")
    fmt = _formats.of(x)
    _choice(estimator, ESTIMATORS, "estimator")
    _choice(method, KL_METHODS, "method")
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    _nonempty(x, "log_ratio")
    _finite(x, "log_ratio")
    flat = np.ascontiguousarray(x).reshape(-1)
    threads = _threads(num_threads, flat.size)
    terms = np.empty(flat.size, dtype=_COMPUTE_DTYPE[arith.short])
    if out is not None:   # checked before the kernel writes anything
        _check_out(out, "out", x.shape if reduction == "none" else (), fmt, [("log_ratio", x)])
    getattr(_kernels(), f"logratio_terms_{fmt.short}_{arith.short}")(
        _kernel_view(flat, fmt), ESTIMATORS.index(estimator) + 1, method == "naive", terms,
        threads)
    return _reduce(terms, reduction, x.shape, fmt, arith, out, [("log_ratio", x)])


# ----------------------------------------------------------------------------- Gaussians
def _rows2d(arr):
    """(rows, d) C-contiguous view/copy of arr (..., d); a scalar is one row of one dimension."""
    a = np.ascontiguousarray(arr)
    if a.ndim == 0:
        a = a.reshape(1)
    return a.reshape(-1, a.shape[-1])


def _row_reduce(terms, reduction, lead_shape, fmt, arith, out, inputs, threads):
    rows = np.empty(terms.shape[0], dtype=terms.dtype)
    getattr(_kernels(), f"row_sums_{arith.short}")(terms, rows, threads)
    return _reduce(rows, reduction, lead_shape, fmt, arith, out, inputs)


def gaussian_entropy(log_std=None, *, std=None, reduction="mean", accum=None, out=None,
                     num_threads=None):
    """Differential entropy of a diagonal Gaussian, summed over the last axis (action dims).

    Give exactly one of ``log_std`` (SB3's and CleanRL's parameterisation) or ``std`` (> 0),
    shape (..., d) (a 1-D array is one distribution).  Per dimension, in A:

        h_i = R(c + log_std_i)   or   R(c + log_A(std_i)),   c = 1/2 log(2 pi e) rounded into A
        H   = pairwise_A(h_i)    per row (the mean does not enter)

    h_i < 0 exactly when sigma_i < 1/sqrt(2 pi e) = ENTROPY_ZERO_SIGMA = 0.2419707... (log_std <
    -1.4189385); with log_std input the kernel's sign flips at log_std = -c_A exactly.
    reduction over rows: "mean" (default; SB3 logs -mean as entropy_loss), "sum", "none"
    (shape log_std.shape[:-1]).  Returns a numpy scalar of the dtype (an array for "none").
    """
    if (log_std is None) == (std is None):
        raise ValueError("give exactly one of log_std or std")
    name = "log_std" if std is None else "std"
    a = _array(log_std if std is None else std, name)
    fmt = _formats.of(a)
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    _nonempty(a, name)
    wide = _finite(a, name)
    if std is not None and not np.all(wide > 0):
        raise ValueError(f"std must be > 0, got {wide[~(wide > 0)].reshape(-1)[0]!r}")
    rows = _rows2d(a)
    threads = _threads(num_threads, rows.size)
    c = _formats.round_scalar(HALF_LOG_2PI_E, arith, "1/2 log(2 pi e)", stacklevel=3)
    terms = np.empty(rows.shape, dtype=_COMPUTE_DTYPE[arith.short])
    if out is not None:
        _check_out(out, "out", a.shape[:-1] if reduction == "none" else (), fmt, [(name, a)])
    getattr(_kernels(), f"gaussian_entropy_terms_{fmt.short}_{arith.short}")(
        _kernel_view(rows, fmt), std is not None, c, terms, threads)
    return _row_reduce(terms, reduction, a.shape[:-1], fmt, arith, out, [(name, a)], threads)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q, *, reduction="mean", accum=None, out=None,
                num_threads=None):
    """KL(p || q) of diagonal Gaussians p = N(mean_p, exp(log_std_p)^2), q likewise, summed over
    the last axis.  The four arrays broadcast together (SB3's log_std is one (d,) vector for
    the whole batch).  Per dimension, in A (both terms >= 0: nothing cancels when p ~ q):

        KL_i = log(s_q/s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2
             = 1/2 k3(2 (ls_p - ls_q)) + 1/2 ((mu_p - mu_q) / s_q)^2
        d = R(ls_p - ls_q), z = R(R(mu_p - mu_q) / exp_A(ls_q)),
        KL_i = R(R(k3_A(R(d + d)) + R(z * z)) * 1/2)

    RLlib logs KL(old || new) = gaussian_kl(old..., new...); torch's kl_divergence(p, q) is
    KL(p || q).  reduction over rows as in :func:`gaussian_entropy`.
    """
    names = ("mean_p", "log_std_p", "mean_q", "log_std_q")
    arrays = [_array(v, n) for v, n in zip((mean_p, log_std_p, mean_q, log_std_q), names)]
    fmt = _formats.of(arrays[0])
    for arr, n in zip(arrays[1:], names[1:]):
        _same_format(arr, n, fmt, "mean_p")
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    try:
        shape = np.broadcast_shapes(*(arr.shape for arr in arrays))
    except ValueError:
        raise ValueError("mean_p, log_std_p, mean_q, log_std_q do not broadcast together: "
                         + ", ".join(str(arr.shape) for arr in arrays)) from None
    for arr, n in zip(arrays, names):
        _nonempty(arr, n)
        _finite(arr, n)
    rows = [_rows2d(np.broadcast_to(arr, shape)) for arr in arrays]
    threads = _threads(num_threads, rows[0].size)
    inputs = list(zip(names, arrays))
    if out is not None:
        _check_out(out, "out", shape[:-1] if reduction == "none" else (), fmt, inputs)
    terms = np.empty(rows[0].shape, dtype=_COMPUTE_DTYPE[arith.short])
    getattr(_kernels(), f"gaussian_kl_terms_{fmt.short}_{arith.short}")(
        *(_kernel_view(r, fmt) for r in rows), terms, threads)
    lead = shape[:-1] if len(shape) else ()
    return _row_reduce(terms, reduction, lead, fmt, arith, out, inputs, threads)


_LOG_FLOAT64_MAX = math.log(np.finfo(np.float64).max)


def _real_float64(x, name):
    """``x`` (real numbers of any float or integer dtype) in float64; TypeError for complex,
    boolean and object arrays (a cast would drop the imaginary part or guess)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" and arr.dtype != _formats.bfloat16.dtype:
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def squashed_gaussian_entropy(mean, log_std, *, n_samples=100_000, seed=0, eps=0.0):
    """Monte Carlo estimate of the entropy of a = tanh(u), u ~ N(mean, exp(log_std)^2) diagonal.

    H[a] = H[u] + E[sum_i log(1 - tanh(u_i)^2)] (change of variables; no closed form), with
    H[u] the Gaussian entropy and the expectation estimated from ``n_samples`` draws of u
    (numpy ``default_rng(seed)``, float64 throughout -- this is not a format kernel), using
    log(1 - tanh(u)^2) = 2 (log 2 - |u| - log1p(e^(-2|u|))), exact in floating point where the
    textbook form gives log(0).  ``eps`` > 0 evaluates SB3/SAC's log(1 - tanh(u)^2 + eps)
    instead (SB3 uses 1e-6), a biased version.  H[a] <= min(H[u], d log 2).

    mean, log_std: broadcastable, shape (..., d).  Returns (estimate, standard_error), float64
    arrays of the leading shape (floats for one distribution); the standard error is the
    sample standard deviation of the per-draw sums over sqrt(n_samples).  The exact value is
    ``precision.exact.rl.squashed_gaussian_entropy`` (quadrature).
    """
    m = _real_float64(mean, "mean")
    ls = _real_float64(log_std, "log_std")
    for arr, n in ((m, "mean"), (ls, "log_std")):
        _nonempty(arr, n)
        _finite(arr, n)
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, numbers.Integral) \
            or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if ls.size and ls.max() > _LOG_FLOAT64_MAX:
        # exp(log_std) would overflow: the samples, and so the estimate, would be inf/NaN
        raise ValueError(f"log_std must be <= {_LOG_FLOAT64_MAX:.6g} (exp(log_std) overflows "
                         f"float64), got {ls.max()!r}")
    eps = _checks.check_real("eps", eps)        # ValueError, not OverflowError, for 10**400
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be a real number in [0, 1), got {eps!r}")
    shape = np.broadcast_shapes(m.shape, ls.shape)
    if len(shape) == 0:
        shape = (1,)
    m = np.broadcast_to(m, shape).reshape(-1, shape[-1])
    ls = np.broadcast_to(ls, shape).reshape(-1, shape[-1])
    rng = np.random.default_rng(seed)
    gauss = np.sum(HALF_LOG_2PI_E + ls, axis=-1)
    est = np.empty(m.shape[0])
    se = np.empty(m.shape[0])
    for r in range(m.shape[0]):
        u = m[r] + np.exp(ls[r]) * rng.standard_normal((int(n_samples), m.shape[1]))
        if eps == 0:
            au = np.abs(u)
            log_jac = 2.0 * (math.log(2.0) - au - np.log1p(np.exp(-2.0 * au)))
        else:
            log_jac = np.log(1.0 - np.tanh(u) ** 2 + float(eps))
        per_draw = log_jac.sum(axis=1)
        est[r] = gauss[r] + per_draw.mean()
        se[r] = per_draw.std(ddof=1) / math.sqrt(n_samples)
    lead = shape[:-1]
    if lead == ():
        return float(est[0]), float(se[0])
    return est.reshape(lead), se.reshape(lead)


# ----------------------------------------------------------------------------- categorical
def categorical_entropy(logits, *, reduction="mean", accum=None, num_threads=None):
    """Entropy of softmax(logits) per row: H = sum_i p_i (L - z_i), L = log-sum-exp shift.

    Computed with precision.losses' kernels: p = softmax(logits) rounded to S, then
    H = softmax_cross_entropy(logits, p) (the cross-entropy of the logits against their own
    probabilities, every term >= 0).  p enters rounded to S, so the result is within about
    u_S * H (plus the loss kernel's own error, 1 ulp with a wider ``accum``) of the exact entropy.
    """
    x = _array(logits, "logits")
    _nonempty(x, "logits")
    _finite(x, "logits")
    probs = _losses.softmax(x, accum=accum, num_threads=num_threads)
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 1 else x
    p2 = probs.reshape(x2.shape)
    loss = _losses.softmax_cross_entropy(x2, p2, reduction=reduction, accum=accum,
                                         num_threads=num_threads)
    if reduction == "none" and x.ndim > 2:
        return loss.reshape(x.shape[:-1])
    return loss


def categorical_kl(logits_p, logits_q, *, reduction="mean", accum=None, num_threads=None):
    """KL(softmax(logits_p) || softmax(logits_q)) per row, from both logit rows (RLlib's logged
    ``kl`` for discrete actions is KL(old || new): ``categorical_kl(old_logits, new_logits)``;
    torch's ``kl_divergence(Categorical(logits=x), Categorical(logits=y))`` is the same order).

    logits_p, logits_q: same shape (..., C) and format S (a 1-D array is one distribution).
    Per row x = logits_p[r], y = logits_q[r], in A (kernels/rl.pyx.tp; exp_A, log_A, log1p_A
    rounded once from double, k3_A(d) = e^d - 1 - d and phi_A(s) = log1p(s) - s rounded once from
    rl.h's cancellation-free double evaluations):

        m = max_j x_j,  t = pairwise_A(exp_A(R(x_j - m))),  p_i = R(exp_A(R(x_i - m)) / t)
        delta_i = R(y_i - x_i),  c = pairwise_A(R(p_i delta_i)),  d_i = R(delta_i - c)
        a = pairwise_A(R(p_i d_i)),  b = pairwise_A(R(p_i k3_A(d_i))),  s = R(a + b)
        KL = |s| < 1 ? R(b + phi_A(s)) : R(log1p_A(s) - a),  clamped at 0

    Exactly, for any shift c, KL = log sum_i p_i e^(d_i) - sum_i p_i d_i = log1p(a + b) - a =
    b + phi(a + b): the centering makes a ~ 0, b >= 0 and phi(a + b) ~ -(a + b)^2/2 are both
    second order in the logit differences, so nothing cancels when p ~ q.  Where p_i is
    subnormal in A (or 0: its terms of c and a are 0), its term of b is R(E_i - R(p_i R(1 + d_i)))
    with E_i = exp_A(R(R(R(y_i - m) - log_A t) - c)) = p_i e^(d_i) computed from the logits: q's
    mass there, which the normalisation needs and a subnormal p_i cannot carry; that costs an
    absolute error of a few subnormals of A per class.  Only the per-row KL (and its reduction)
    is rounded to S.  If c, a or b overflows A (a logit difference beyond A's range, in practice
    float16 arithmetic), the row falls back to KL = sum_i p_i ((x_i - m) - (y_i - n)) +
    log_A sum e^(y - n) - log_A t (n = max y), which is +inf when a difference still overflows.

    Accuracy (first order in u = u_A): KL is stationary in p where the formula is evaluated
    (dKL/dp_i = k3(d_i) - s (d_i + k3(d_i)) / (1 + s), second order) and dKL/dy_i = q_i - p_i, so
    the relative errors eps_i <= (|x_i - m| + log2 C + 4) u of the computed p_i and the
    roundings of d_i cost |err| <~ u [(max|x - m| + log2 C + 4) sum_i p_i (k3(d_i) + |s d_i|) +
    sum_i |q_i - p_i| |d_i|] plus (log2 C + 4) u KL for the sums and the last operations; for
    near-equal rows (|d_i| << 1, KL ~ 1/2 Var_p(d)) that is a *relative* error of about
    (max|x - m| + 2 log2 C + 10) u_A, then one rounding into S.  (y_i - x_i is exact in A when
    y_i and x_i are within a factor of 2, or A is wider than S and their exponents are close;
    otherwise its rounding e_i <= u |y_i - x_i| is a
    change of the logits itself, which costs the absolute error sum_i |q_i - p_i| e_i +
    1/2 sum_i p_i e_i^2 (about: to second order) -- not relative to KL: when p and q agree to
    u |y - x|, the computed KL is only that small.)  So
    bfloat16 logits with accum="float32" give KLs of 1e-6 to within 1 ulp of bfloat16, where
    rounding p into bfloat16 first (this function before) cost an absolute error of about
    2^-8 (C + sum p |log p/q|).  The fallback's error is absolute, ~ (log2 C + 4) u (1 + max |x -
    m| + max |y - n|): it only runs when KL is far from tiny.

    reduction over rows: "mean" (default), "sum", "none" (shape logits.shape[:-1]).  Bad input
    raises before anything runs: TypeError for non-float or mixed dtypes, ValueError for
    different shapes, empty arrays, NaN or infinite logits.  Rows are computed in parallel
    (``num_threads``), each in its fixed order: identical bits for any thread count.
    """
    xp = _array(logits_p, "logits_p")
    xq = _array(logits_q, "logits_q")
    fmt = _formats.of(xp)
    _same_format(xq, "logits_q", fmt, "logits_p")
    if xp.shape != xq.shape:
        raise ValueError(f"logits_p {xp.shape} and logits_q {xq.shape} must have the same shape")
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    for arr, n in ((xp, "logits_p"), (xq, "logits_q")):
        _nonempty(arr, n)
        _finite(arr, n)
    rows_p, rows_q = _rows2d(xp), _rows2d(xq)
    threads = _threads(num_threads, rows_p.size)
    cd = _COMPUTE_DTYPE[arith.short]
    work = [np.empty(rows_p.shape, dtype=cd) for _ in range(3)]
    kl = np.empty(rows_p.shape[0], dtype=cd)
    getattr(_kernels(), f"categorical_kl_rows_{fmt.short}_{arith.short}")(
        _kernel_view(rows_p, fmt), _kernel_view(rows_q, fmt), *work, kl, threads)
    return _reduce(kl, reduction, xp.shape[:-1], fmt, arith, None,
                   [("logits_p", xp), ("logits_q", xq)])


# ----------------------------------------------------------------------------- value function
def _paired_vectors(a, b, name_a, name_b):
    x = _array(a, name_a)
    y = _array(b, name_b)
    fmt = _formats.of(y)
    _same_format(x, name_a, fmt, name_b)
    if x.shape != y.shape:
        raise ValueError(f"{name_a} {x.shape} and {name_b} {y.shape} must have the same shape")
    _nonempty(y, name_b)
    _finite(x, name_a)
    _finite(y, name_b)
    return x, y, fmt


def explained_variance(y_pred, y_true, *, convention="sb3", accum=None):
    """Explained variance of the value predictions y_pred against the returns y_true.

    In A, with d_i = R(y_i - yhat_i), mean(v) = R(pairwise_A(v) / n_A) and
    var(v) = R(pairwise_A(R(R(v_i - mean(v))^2)) / R(n - ddof)_A) (two passes):

        "sb3", "cleanrl":  var(y) == 0 ? NaN : R(1 - R(var(d) / var(y)))          ddof = 0
        "rllib":           max(-1, R(1 - R(var(d) / R(var(y) + eps))))            ddof = 1

    eps = 1e-6 rounded into A (RLlib's SMALL_NUMBER).  One sample: NaN in every convention (SB3:
    var(y) = 0; RLlib: 0/0, which torch.max keeps).  Arguments in SB3's order (y_pred, y_true);
    any shape (flattened), same shape and dtype.  Returns a numpy scalar of the storage dtype.
    """
    yp, yt, fmt = _paired_vectors(y_pred, y_true, "y_pred", "y_true")
    _choice(convention, CONVENTIONS, "convention")
    arith = _arithmetic(accum, fmt)
    n = yt.size
    rllib = convention == "rllib"
    ddof = 1 if rllib else 0
    n_a = _formats.round_scalar(n, arith, "the sample count n", stacklevel=3)
    dof_a = _formats.round_scalar(n - ddof, arith, "n - 1", stacklevel=3) if ddof else n_a
    eps = _formats.round_scalar(RLLIB_EPS, arith, "eps", stacklevel=3) if rllib else 0.0
    cd = _COMPUTE_DTYPE[arith.short]
    work_y = np.empty(n, dtype=cd)
    work_d = np.empty(n, dtype=cd)
    _, _, ev = getattr(_kernels(), f"explained_variance_{fmt.short}_{arith.short}")(
        _kernel_view(np.ascontiguousarray(yp).reshape(-1), fmt),
        _kernel_view(np.ascontiguousarray(yt).reshape(-1), fmt),
        work_y, work_d, n_a, dof_a, rllib, eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fmt.dtype.type(ev)     # ev is a value of S already: exact


def value_loss(values, targets, *, convention="rllib", vf_clip_param=RLLIB_VF_CLIP_PARAM,
               reduction="mean", return_grad=False, accum=None, out=None, grad_out=None,
               num_threads=None):
    """Value-function loss and its gradient with respect to ``values``.

    Per element, in A, e = R(v - t):

        "rllib":  l_i = min(R(e * e), c)   c = vf_clip_param rounded into A (default 10; None:
                                           no clipping)
        "sb3":    l_i = R(e * e)           (F.mse_loss; CleanRL logs 1/2 of it)
        grad_i  = R(e * e) <= c ? R(R(e + e) / N_A) : 0     ("mean"; "sum" and "none": R(e + e))

    so RLlib's gradient is exactly 0 wherever (v - t)^2 > vf_clip_param (|v - t| > sqrt(10) for
    the default), the mask torch's clamp backward applies (its boundary, equality, passes).
    2e / N is correctly rounded here; torch computes (1/N) * (2e) or (2/N) * e, one rounding more.
    reduction: "mean" (default), "sum", "none".  Returns loss, or (loss, grad) with return_grad
    (grad: values' shape and dtype, or ``grad_out``).
    """
    v, t, fmt = _paired_vectors(values, targets, "values", "targets")
    _choice(convention, VALUE_LOSS_CONVENTIONS, "convention")
    reduction = _reduction(reduction)
    arith = _arithmetic(accum, fmt)
    if not isinstance(return_grad, (bool, np.bool_)):
        raise TypeError(f"return_grad must be True or False, got {return_grad!r}")
    if convention == "sb3" or vf_clip_param is None:
        clip = math.inf
    else:
        if isinstance(vf_clip_param, (bool, np.bool_)) or not isinstance(
                vf_clip_param, (numbers.Real, np.floating)):
            raise TypeError(f"vf_clip_param must be a real number or None, got "
                            f"{type(vf_clip_param).__name__}")
        if not float(vf_clip_param) > 0:
            raise ValueError(f"vf_clip_param must be > 0, got {vf_clip_param!r}")
        clip = _formats.round_scalar(vf_clip_param, arith, "vf_clip_param", stacklevel=3)
    inputs = [("values", v), ("targets", t)]
    if grad_out is not None:
        if not return_grad:
            raise ValueError("grad_out is given but return_grad is False")
        _check_out(grad_out, "grad_out", v.shape, fmt, inputs)
    if out is not None:
        _check_out(out, "out", v.shape if reduction == "none" else (), fmt,
                   inputs + [("grad_out", grad_out)])
    n = v.size
    divisor = _batch_divisor(n, arith) if reduction == "mean" else 1.0
    vf = np.ascontiguousarray(v).reshape(-1)
    tf = np.ascontiguousarray(t).reshape(-1)
    threads = _threads(num_threads, n)
    terms = np.empty(n, dtype=_COMPUTE_DTYPE[arith.short])
    grad = None
    if return_grad:
        grad = grad_out if grad_out is not None else np.empty(v.shape, dtype=fmt.dtype)
        gbuf = _kernel_view(grad.reshape(-1), fmt)
    else:
        gbuf = _kernel_view(np.empty(1, dtype=fmt.dtype), fmt)
    getattr(_kernels(), f"value_loss_terms_{fmt.short}_{arith.short}")(
        _kernel_view(vf, fmt), _kernel_view(tf, fmt), clip, divisor, terms, gbuf,
        bool(return_grad), threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _formats.PrecisionWarning)   # N_A warned once above
        loss = _reduce(terms, reduction, v.shape, fmt, arith, out, inputs)
    return (loss, grad) if return_grad else loss
