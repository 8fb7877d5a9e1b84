"""Double-double arithmetic on numpy arrays, and KL divergence from a logit difference.

Error-free transformations (vectorised over numpy float64 arrays; no overflow assumed):

* ``two_sum(a, b) -> (s, e)``: s = fl(a + b), s + e = a + b exactly (Knuth's TwoSum);
* ``two_prod(a, b) -> (p, e)``: p = fl(a b), p + e = a b exactly (Dekker's TwoProduct with
  Veltkamp's split; no FMA is assumed, so it holds under ``-ffp-contract=off`` numpy too);
* ``dd_matmul(x, w) -> (hi, lo)``: x w as a double-double, error about 2^-100 |x| |w|.

KL divergence without cancellation, for measuring how far a model's logits z are from an
optimum z* whose probabilities p* are known:

* ``logit_difference(hi, lo, star_hi, star_lo)``: delta = z - z* (both double-doubles) with a
  per-row constant removed exactly first (softmax is shift-invariant);
* ``excess_kl_rows(p_star, delta)``: KL(p*_r || softmax(z*_r + delta_r)) per row, as
  b + phi(a + b) with delta' = delta - p*.delta, a = p*.delta', b = sum p* (expm1(delta') - delta'),
  phi(s) = log1p(s) - s, the second-order pieces by Taylor series for small arguments, so nothing
  cancels (relative error about 1e-13; tests/test_soft_target_study.py checks it against mpmath).

The soft-target study (:mod:`precision.studies.soft_target.problems`) measures its excess loss
with these; anyone measuring a float model against an exact optimum can too.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["two_sum", "two_prod", "dd_matmul", "logit_difference", "excess_kl_rows"]


# --------------------------------------------------------------------------------------------------
# error-free transformations (vectorised)

_SPLITTER = 134217729.0  # 2^27 + 1 (Veltkamp/Dekker)


def two_sum(a, b):
    """s, e with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _split(a):
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """p, e with p = fl(a·b) and p + e = a·b exactly (Dekker; no overflow assumed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def dd_matmul(x, w):
    """x·w as a double-double (hi, lo) with |hi + lo − x·w| ≈ 2^-100 |x|·|w| (x: (N, D), w: (D, C))."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, d = x.shape
    hi = np.zeros((n, w.shape[1]))
    lo = np.zeros_like(hi)
    for j in range(d):
        p, e = two_prod(x[:, j:j + 1], w[j:j + 1, :])
        hi, err = two_sum(hi, p)
        lo += err + e
    s, e = two_sum(hi, lo)
    return s, e


# --------------------------------------------------------------------------------------------------
# KL(p* ‖ p) from the logit difference, without cancellation

def logit_difference(hi, lo, star_hi, star_lo):
    """δ = (hi + lo) − (star_hi + star_lo) minus a per-row constant, accurate to ~2^-100·|z|.

    Softmax ignores a constant added to a row, and the run's logits may differ from the optimum's
    by one (the shift GD conserves) that is far larger than the rest of δ: it is removed exactly
    first (TwoSum), so the double-double low parts are not lost in it.
    """
    s1, e1 = two_sum(hi, -star_hi)
    low = e1 + (lo - star_lo)
    s2, e2 = two_sum(s1, -s1[:, :1])
    return s2 + (e2 + (low - low[:, :1]))


_FACT = [1.0 / math.factorial(k) for k in range(12)]


def _expm1_minus_x(x):
    """expm1(x) − x, with relative error ~1e-14 for all x (Taylor series for |x| < 1e-2)."""
    small = np.abs(x) < 1e-2
    series = x * x * (_FACT[2] + x * (_FACT[3] + x * (_FACT[4] + x * (_FACT[5] + x * (
        _FACT[6] + x * (_FACT[7] + x * _FACT[8]))))))
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.expm1(x) - x
    return np.where(small, series, direct)


def _log1p_minus_x(s):
    """log1p(s) − s (≤ 0), with relative error ~1e-14 (Taylor series for |s| < 1e-2)."""
    small = np.abs(s) < 1e-2
    series = -s * s * (1 / 2 - s * (1 / 3 - s * (1 / 4 - s * (1 / 5 - s * (1 / 6 - s * (
        1 / 7 - s * (1 / 8 - s / 9)))))))
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.log1p(s) - s
    return np.where(small, series, direct)


def excess_kl_rows(p_star, delta):
    """KL(p*_r ‖ softmax(z*_r + δ_r)) for every row, from p* (N, C) and δ = z − z* (N, C).

    b + φ(a + b) with δ' = δ − p*·δ, a = p*·δ', b = Σ p* (expm1(δ') − δ'), φ(s) = log1p(s) − s
    (module docstring; for a + b ≥ 1e-2, where that sum would cancel, log1p(a + b) − a).
    Rows with a non-finite δ give +inf (NaN stays NaN).
    """
    p_star = np.asarray(p_star, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = delta - np.sum(p_star * delta, axis=1, keepdims=True)
        a = np.sum(p_star * shifted, axis=1)
        b = np.sum(p_star * _expm1_minus_x(shifted), axis=1)
        total = a + b
        # small a + b: b + φ(a + b), both terms second order (no cancellation); large: log1p(a + b) − a
        # (b + log1p(s) − s would cancel b against s)
        with np.errstate(divide="ignore"):
            kl = np.where(np.abs(total) < 1e-2, b + _log1p_minus_x(total), np.log1p(total) - a)
    kl = np.where(np.isnan(delta).any(axis=1), np.nan, kl)
    kl = np.where(~np.isnan(kl) & ~np.isfinite(delta).all(axis=1), np.inf, kl)
    return np.maximum(kl, 0.0)
