"""The twins of :mod:`precision.batchnorm`.

Exact (mpmath, ``dps`` digits; the statistics themselves are exact rationals):
:func:`batch_norm` and :func:`batch_norm_backward` give the mathematical values of the layer and
its gradients for the stored inputs (object arrays of mpf: round them with ``fmt.round``);
:func:`running_stats` runs a convention's recurrence in exact rational arithmetic with the
weights' exact binary values.

Emulated (every operation rounded once into A through gmpy2, in the kernels' order):
:func:`emulated_update`, :func:`emulated_batch_norm`, :func:`emulated_batch_norm_backward`.
The formulas are precision.batchnorm's docstring's; the kernels must match these bit for bit.
"""
from __future__ import annotations

from fractions import Fraction

import gmpy2
import mpmath
import numpy as np

from precision import formats as _formats
from precision.batchnorm import _UNBIASED, update_weights

from .emulate import to_mpfr
from .stats import _Arith, _floats, moments_row, sequences

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "running_stats",
    "emulated_update",
    "emulated_batch_norm",
    "emulated_batch_norm_backward",
]


def _perm(ndim, channel_axis):
    c = channel_axis % ndim
    return (c,) + tuple(i for i in range(ndim) if i != c), c


def _unsequence(rows, shape, perm, dtype=None):
    """Inverse of sequences(x, all axes but the channel): (C, n) rows back to x's shape."""
    arr = np.array(rows, dtype=dtype if dtype is not None else object)
    arr = arr.reshape([shape[p] for p in perm])
    return np.transpose(arr, np.argsort(perm))


def _channel_rows(x, channel_axis):
    x = np.asarray(x)
    perm, c = _perm(x.ndim, channel_axis)
    rows, _ = sequences(x, tuple(i for i in range(x.ndim) if i != c))
    return rows, perm


# ------------------------------------------------------------------------------- exact
def _mp(v):
    return mpmath.mpf(v) if not isinstance(v, Fraction) else mpmath.mpf(v.numerator) / v.denominator


def _exact_rows(x, channel_axis):
    rows, perm = _channel_rows(x, channel_axis)
    return [[Fraction(v) for v in _floats(r)] for r in rows], perm


def _stats_of(row):
    n = len(row)
    mean = sum(row, Fraction(0)) / n
    var = sum(((v - mean) ** 2 for v in row), Fraction(0)) / n
    return mean, var


def batch_norm(x, weight=None, bias=None, *, eps, training=True, running_mean=None,
               running_var=None, channel_axis=1, dps=40):
    """The exact batch-norm output (x - mean) / sqrt(var + eps) * weight + bias, with the batch's
    exact mean and biased variance (training) or the given running statistics."""
    x = np.asarray(x)
    rows, perm = _exact_rows(x, channel_axis)
    out_rows = []
    with mpmath.workdps(dps + 10):
        for j, row in enumerate(rows):
            if training:
                mean, var = _stats_of(row)
            else:
                mean, var = Fraction(float(running_mean[j])), Fraction(float(running_var[j]))
            invstd = 1 / mpmath.sqrt(_mp(var + Fraction(eps)))
            g = Fraction(float(weight[j])) if weight is not None else 1
            b = Fraction(float(bias[j])) if bias is not None else 0
            out_rows.append([_mp(v - mean) * invstd * _mp(g) + _mp(b) for v in row])
        return _unsequence(out_rows, x.shape, perm)


def batch_norm_backward(grad_out, x, weight=None, *, eps, training=True, running_mean=None,
                        running_var=None, channel_axis=1, dps=40):
    """Exact (grad_x, grad_weight, grad_bias) of :func:`batch_norm`'s output against grad_out:
    with xh = (x - mean) invstd, grad_bias = sum dy, grad_weight = sum dy xh, and
    grad_x = weight invstd (dy - mean(dy) - xh mean(dy xh)) when training, weight invstd dy
    otherwise."""
    x = np.asarray(x)
    rows, perm = _exact_rows(x, channel_axis)
    drows, _ = _exact_rows(grad_out, channel_axis)
    dx_rows, gw, gb = [], [], []
    with mpmath.workdps(dps + 10):
        for j, (row, drow) in enumerate(zip(rows, drows)):
            n = len(row)
            if training:
                mean, var = _stats_of(row)
            else:
                mean, var = Fraction(float(running_mean[j])), Fraction(float(running_var[j]))
            invstd = 1 / mpmath.sqrt(_mp(var + Fraction(eps)))
            g = _mp(Fraction(float(weight[j]))) if weight is not None else mpmath.mpf(1)
            xh = [_mp(v - mean) * invstd for v in row]
            sum_dy = sum(drow, Fraction(0))
            dot = mpmath.fsum(_mp(d) * h for d, h in zip(drow, xh))
            if training:
                mdy = _mp(sum_dy / n)
                mdot = dot / n
                dx_rows.append([g * invstd * (_mp(d) - mdy - h * mdot) for d, h in zip(drow, xh)])
            else:
                dx_rows.append([g * invstd * _mp(d) for d in drow])
            gw.append(dot)
            gb.append(_mp(sum_dy))
    dx = _unsequence(dx_rows, x.shape, perm)
    if weight is None:
        return dx, None, None
    obj = np.empty(len(gw), dtype=object)
    obj[:] = gw
    objb = np.empty(len(gb), dtype=object)
    objb[:] = gb
    return dx, obj, objb


def running_stats(batch_means, batch_vars, count, *, convention="torch", momentum="default",
                  init_mean=0, init_var=1):
    """The running (mean, var) after folding in each row of batch_means / batch_vars (biased
    variances of batches of ``count`` elements) with the convention's recurrence in exact
    arithmetic (Fractions), the weights taken as their exact values.  Returns object arrays."""
    from precision.batchnorm import DEFAULT_MOMENTUM

    if isinstance(momentum, str):
        momentum = DEFAULT_MOMENTUM[convention]
    bm = np.asarray(batch_means, dtype=np.float64)
    bv = np.asarray(batch_vars, dtype=np.float64)
    c = bm.shape[1]
    mean = [Fraction(init_mean)] * c
    var = [Fraction(init_var)] * c
    for t in range(bm.shape[0]):
        w_new, w_old = update_weights(convention, momentum, t + 1)
        for j in range(c):
            v = Fraction(float(bv[t, j]))
            if convention == "flax":
                v = max(v, Fraction(0))
            if _UNBIASED[convention]:
                v = v * Fraction(count, count - 1)
            mean[j] = w_old * mean[j] + w_new * Fraction(float(bm[t, j]))
            var[j] = w_old * var[j] + w_new * v
    out_m = np.empty(c, dtype=object)
    out_v = np.empty(c, dtype=object)
    out_m[:] = mean
    out_v[:] = var
    return out_m, out_v


# ---------------------------------------------------------------------------- emulated
def emulated_update(mean, var, batch_mean, batch_var, count, *, convention, momentum,
                    num_batches_tracked, state_format, accum=None):
    """RunningStats.update replayed op by op: the new (mean, var) buffers (state format)."""
    S = _formats.format(state_format)
    A = _Arith(_formats.arithmetic_format(accum, S))
    w_new, w_old = update_weights(convention, momentum, num_batches_tracked + 1)
    wn, wo = A.round(w_new), A.round(w_old)
    c = A.round(Fraction(count, count - 1)) if _UNBIASED[convention] else None
    new_m, new_v = [], []
    for om, ov, bm, bv in zip(_floats(np.asarray(mean)), _floats(np.asarray(var)),
                              _floats(np.asarray(batch_mean)), _floats(np.asarray(batch_var))):
        b_m = A.round(bm)
        b_v = A.round(bv)
        if convention == "flax" and b_v < 0:
            b_v = A.zero
        if c is not None:
            b_v = A.mul(b_v, c)
        new_m.append(float(A.add(A.mul(wo, to_mpfr(om)), A.mul(wn, b_m))))
        new_v.append(float(A.add(A.mul(wo, to_mpfr(ov)), A.mul(wn, b_v))))
    return S.round(np.array(new_m)), S.round(np.array(new_v))


def emulated_batch_norm(x, weight=None, bias=None, *, running_mean=None, running_var=None,
                        training=True, eps=1e-5, channel_axis=1, method="two-pass",
                        accum=None):
    """precision.batchnorm.batch_norm replayed op by op: (y, mean, invstd), mean and invstd
    as lists of floats (values of A)."""
    x = np.asarray(x)
    S = _formats.of(x)
    A = _Arith(_formats.arithmetic_format(accum, S))
    rows, perm = _channel_rows(x, channel_axis)
    eps_a = A.round(float(eps))
    one = gmpy2.mpfr(1)
    y_rows, means, invstds = [], [], []
    for j, r in enumerate(rows):
        vals = [to_mpfr(v) for v in _floats(r)]
        if training:
            order = "sequential" if method == "welford" else "pairwise"
            m, v, _ = moments_row(A, vals, method, order, 0)
            if method == "one-pass" and v < 0:
                v = A.zero
        else:
            m, v = A.round(float(running_mean[j])), A.round(float(running_var[j]))
        s = A.div(one, A.sqrt(A.add(v, eps_a)))
        if weight is not None:
            g, b = to_mpfr(float(weight[j])), to_mpfr(float(bias[j]))
            y_rows.append([float(A.add(A.mul(A.mul(A.sub(t, m), s), g), b)) for t in vals])
        else:
            y_rows.append([float(A.mul(A.sub(t, m), s)) for t in vals])
        means.append(float(m))
        invstds.append(float(s))
    y = S.round(_unsequence(y_rows, x.shape, perm, dtype=np.float64))
    return y, means, invstds


def emulated_batch_norm_backward(grad_out, x, weight=None, *, mean, invstd, training=True,
                                 channel_axis=1, accum=None):
    """precision.batchnorm.batch_norm_backward replayed op by op: (dx, grad_weight, grad_bias)."""
    x = np.asarray(x)
    S = _formats.of(x)
    A = _Arith(_formats.arithmetic_format(accum, S))
    rows, perm = _channel_rows(x, channel_axis)
    drows, _ = _channel_rows(grad_out, channel_axis)
    n = rows.shape[1]
    n_a = A.round(n)
    dx_rows, gws, gbs = [], [], []
    for j, (r, dr) in enumerate(zip(rows, drows)):
        xs = [to_mpfr(v) for v in _floats(r)]
        dys = [to_mpfr(v) for v in _floats(dr)]
        mu = A.round(float(mean[j]))
        s = A.round(float(invstd[j]))
        g = to_mpfr(float(weight[j])) if weight is not None else gmpy2.mpfr(1)
        sum_dy = A.sum(dys, "pairwise")
        ds = [A.sub(v, mu) for v in xs]
        dot = A.sum([A.mul(d, dy) for d, dy in zip(ds, dys)], "pairwise")
        if training:
            kk = A.div(A.mul(A.mul(dot, s), s), n_a)
            gm = A.div(sum_dy, n_a)
            dx_rows.append([float(A.mul(A.mul(A.sub(A.sub(dy, gm), A.mul(d, kk)), s), g))
                            for d, dy in zip(ds, dys)])
        else:
            dx_rows.append([float(A.mul(A.mul(dy, s), g)) for dy in dys])
        gws.append(float(A.mul(dot, s)))
        gbs.append(float(sum_dy))
    dx = S.round(_unsequence(dx_rows, x.shape, perm, dtype=np.float64))
    if weight is None:
        return dx, None, None
    return dx, S.round(np.array(gws)), S.round(np.array(gbs))
