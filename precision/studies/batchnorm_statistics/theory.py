"""What theory predicts for each part of the batch-norm statistics study (formulas, no data).

All estimates are levels (typical values), except where a name says ``bound``.
"""
from __future__ import annotations

import math

import numpy as np

from precision import formats as _formats


# ------------------------------------------------------------------ part 1: moving averages
def ema_noise_mean(alpha, batch):
    """RMS error of an exponential moving average of i.i.d. batch means, in units of sigma, in
    steady state: Var = alpha / (2 - alpha) * sigma^2 / B."""
    return math.sqrt(alpha / (2.0 - alpha) / batch)


def ema_noise_var(alpha, batch):
    """RMS relative error of an EMA of unbiased batch variances of Gaussian data (Var of the
    unbiased sample variance is 2 sigma^4 / (B - 1))."""
    return math.sqrt(alpha / (2.0 - alpha) * 2.0 / (batch - 1))


def cumulative_noise_mean(batches, batch, dataset):
    """RMS error (sigma units) of the mean of k batch means drawn without replacement, cycling
    through a dataset of D samples: zero after every whole epoch (the mean of the batch means of
    an epoch IS the dataset mean), sqrt((1/(kB)) (1 - kB/D)) within the first epoch; after e
    whole epochs plus r samples, the leftover r samples weigh r/(kB)."""
    seen = batches * batch
    rest = seen % dataset
    if rest == 0:
        return 0.0
    return (rest / seen) * math.sqrt((1.0 / rest) * (1.0 - rest / dataset))


def ema_drift_lag(alpha, q):
    """Steady tracking error of an EMA following mu_t = mu + A q^t, as a multiple of the current
    offset A q^t: e_t = (1 - alpha)(e_{t-1} + mu_{t-1} - mu_t) gives
    c = (1 - alpha)(1 - q) / (q - 1 + alpha) (for alpha > 1 - q; else the EMA lags without bound)."""
    if q - 1.0 + alpha <= 0:
        return math.inf
    return (1.0 - alpha) * (1.0 - q) / (q - 1.0 + alpha)


def deterministic_mean_error(alpha, batches, mu, sigma, offset, q):
    """RMS over channels (in units of the final sigma) of the error a running mean keeps from its
    start at 0 and from following mu_t = mu + offset sigma q^t, sigma_t = sigma (1 + q^t / 2) (no
    noise): the recurrence m_t = (1 - a_t) m_{t-1} + a_t mu_t run in float64, a_t = alpha, or 1/t
    for the cumulative average (alpha None)."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    m = np.zeros_like(mu)
    for t in range(1, batches + 1):
        a = 1.0 / t if alpha is None else alpha
        m = (1.0 - a) * m + a * (mu + offset * sigma * q ** (t - 1))
    final_mu = mu + offset * sigma * q ** batches
    final_sigma = sigma * (1.0 + 0.5 * q ** batches) if offset else sigma
    return float(np.sqrt(np.mean(((m - final_mu) / final_sigma) ** 2)))


# ------------------------------------------------------------------ part 2: cumulative average
def _half_gaps(m, fmt):
    f = _formats.format(fmt)
    mf = f.round(m)
    up = 0.5 * (float(f.next_up(mf)) - float(mf))
    down = 0.5 * (float(mf) - float(f.next_down(mf)))
    return float(mf), up, down


def predicted_last_change(m, fmt, mu=1.0, sigma=0.1, limit=10**6):
    """The median batch of the last change of a cumulative average frozen at m, if an increment
    (x - m)/k is lost exactly when it is within half the gap to m's neighbour on its side
    (upward: half the gap above m, downward: half the gap below; they differ by 2x at a power of
    two), x ~ N(mu, sigma^2): the n with prod_{k > n} (1 - p_k) = 1/2,
    p_k = P(x - m > k up) + P(m - x > k down)."""
    from scipy.special import log_ndtr
    m, up, down = _half_gaps(m, fmt)
    last = int(min(limit, (abs(mu - m) + 12 * sigma) / min(up, down) + 1))
    ks = np.arange(1, last + 1, dtype=np.float64)
    p = np.exp(log_ndtr((mu - m - ks * up) / sigma)) + np.exp(log_ndtr((m - ks * down - mu) / sigma))
    p = np.clip(p, 0.0, 1.0 - 1e-16)
    log_keep = np.log1p(-p)
    tail = np.cumsum(log_keep[::-1])[::-1]     # sum_{k >= n} log(1 - p_k)
    after = np.append(tail[1:], 0.0)           # P(no change after n) = exp(sum_{k > n})
    idx = np.nonzero(after >= math.log(0.5))[0]
    return int(ks[idx[0]]) if idx.size else last


def weight_rounding_bias(batches, arith, store, mean=1.0):
    """Predicted signed error (in ulps of ``store`` at ``mean``) of the weighted cumulative average
    m_k = R(R(w_old m_{k-1}) + R(w_new x_k)) from rounding its weights alone: with
    w_old = (1 - 1/k)(1 + d_k), w_new = (1/k)(1 + e_k) rounded once into ``arith``, the error after
    n batches is ~ mean * sum_k ((k - 1) d_k + e_k) / n (each step's error is carried with weight
    k/n).  These are the same in every channel; the study compares them with the measured error,
    most of which comes from rounding the product w_old * m instead (its exact value m - m/k sits
    at nearly the same place between two neighbours of m's grid for many consecutive k, so those
    roundings do not average out)."""
    from fractions import Fraction
    a = _formats.format(arith)
    s = _formats.format(store)
    ks = np.arange(1, batches + 1)
    if a.p <= 24:    # float64 values of 1/k and 1 - 1/k are exact enough (2^-53 << 2^-25)
        inv = 1.0 / ks
        wn = a.round(inv).astype(np.float64)
        wo = a.round(1.0 - inv).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(ks > 1, wo / (1.0 - inv) - 1.0, 0.0)
        e = wn * ks - 1.0
        bias = float(np.sum((ks - 1) * d + e)) / batches
    else:
        total = Fraction(0)
        for k in range(1, batches + 1):
            wn = Fraction(float(a.round(Fraction(1, k))))
            wo = Fraction(float(a.round(1 - Fraction(1, k))))
            if k > 1:
                total += (k - 1) * (wo / (1 - Fraction(1, k)) - 1)
            total += wn * k - 1
        bias = float(total) / batches
    return bias * mean / float(s.ulp(s.round(mean)))


# ------------------------------------------------------------------ part 3: stagnation
def stall_threshold(alpha, target, fmt, below=True):
    """The level above which an EMA moving toward ``target`` stops: alpha |target - m| < ulp(m)/2
    gives m > target - ulp(m) / (2 alpha), with ulp(m) the spacing just below the target."""
    f = _formats.format(fmt)
    ulp_below = float(f.ulp(f.next_down(f.round(target))))
    return target - ulp_below / (2.0 * alpha)


# ------------------------------------------------------------------ part 4: small batches
def biased_variance_bias(batch):
    """Relative bias of the biased variance M2/m: E = (m - 1)/m sigma^2, so -1/m."""
    return -1.0 / batch


def batch_of_two_output(d, eps):
    """|y| of a batch norm without affine map on two values a, b with d = a - b:
    |d| / 2 / sqrt(d^2 / 4 + eps) = |d| / sqrt(d^2 + 4 eps)."""
    d = np.abs(np.asarray(d, dtype=np.float64))
    return d / np.sqrt(d * d + 4.0 * eps)


# ------------------------------------------------------------------ part 5: one-pass variance
def kappa_squared(sigma_over_mu):
    """kappa^2 = 1 + mu^2 / sigma^2, the condition number of the variance as a sum of squares."""
    return 1.0 + 1.0 / (sigma_over_mu ** 2)


def one_pass_level(sigma_over_mu, fmt):
    """Typical relative error of E[x^2] - E[x]^2: each of the two terms is rounded (at least once)
    with relative error ~u, and they are ~mu^2 = (kappa^2 - 1) sigma^2 apart from the answer:
    ~ u kappa^2.  Negative results become common once u kappa^2 >~ 1."""
    return _formats.format(fmt).u * kappa_squared(sigma_over_mu)


def one_pass_bound(sigma_over_mu, n, fmt):
    """Chan, Golub & LeVeque's (1983) bound scale for sequential one-pass: n u kappa^2."""
    return n * _formats.format(fmt).u * kappa_squared(sigma_over_mu)


def two_pass_bound(sigma_over_mu, n, fmt):
    """Bound scale of two-pass: n u + (n u kappa)^2."""
    u = _formats.format(fmt).u
    return n * u + (n * u) ** 2 * kappa_squared(sigma_over_mu)


def float16_square_overflow_count(value):
    """Smallest n with n v^2 above float16's overflow threshold 65520 (values >= 65520 round to inf)."""
    return math.ceil(65520.0 / (value * value))
