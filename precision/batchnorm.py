"""Batch normalisation in every format: the layer, its gradient, and its statistics as each
framework keeps them.

    import precision as pr
    bn = pr.batchnorm
    rs = bn.RunningStats(64, convention="torch", state_format="bfloat16", accum="float32")
    y, mean, invstd = bn.batch_norm(x, w, b, running=rs, training=True, return_saved=True)
    dx, dw, db = bn.batch_norm_backward(dy, x, w, mean=mean, invstd=invstd)
    y = bn.batch_norm(x, w, b, running=rs, training=False)          # inference: running stats
    m, v = bn.population_stats(dataset, axis=(0, 2, 3))           # exact, then rounded once
    m, v = bn.inference_stats(batch_means, batch_vars, batch_size)  # Ioffe & Szegedy, Alg. 2

Layout: x is (N, C) or (N, C, *spatial) with channels on ``channel_axis`` (1, PyTorch's; -1 for
Keras/Flax channels-last); statistics reduce over every other axis, n = N * H * W elements per
channel, in precision.stats' pairwise order.  S is x's format; ``accum`` the arithmetic format A
(S or wider); R(.) rounds to A; every result is rounded once into S.

Forward (Ioffe & Szegedy 2015, Algorithm 1), per channel:
    training   mean, var = precision.stats moments of ``method`` (two-pass by default; the
               biased variance, M2 / n, as every framework normalises with; one-pass is
               clamped at 0 as Flax does)
    inference  mean, var = the running statistics (loaded exactly into A)
    invstd = R(1 / R(sqrt(R(var + eps_A))))
    y = R(R(R(R(x - mean) * invstd) * weight) + bias)           (R(R(x - mean) * invstd) without
                                                                 weight and bias)
Backward (the form PyTorch's CPU kernel uses), with d = R(x - mean), sums pairwise in A:
    sum_dy = sum dy,  dot = sum R(d * dy)
    grad_bias = sum_dy,  grad_weight = R(dot * invstd)
    training   k = R(R(R(dot * invstd) * invstd) / n_A),  gm = R(sum_dy / n_A)
               dx = R(R(R(R(dy - gm) - R(d * k)) * invstd) * weight)
    inference  dx = R(R(dy * invstd) * weight)                  (the statistics are constants)

Running statistics (``RunningStats``): every convention updates
    new = R(R(w_old * old) + R(w_new * b))
in the update's arithmetic format A_u (``accum``, default the state format), the batch
statistic b and the old value loaded into A_u (b rounded once if it is wider), w_new and
w_old = 1 - w_new computed exactly and rounded once into A_u, and ``new`` rounded once into the
``state_format`` of the buffers:
    "torch"   w_new = momentum (default 0.1: the weight of the NEW batch); momentum=None:
              w_new = 1 / num_batches_tracked (the cumulative average, counted after the
              increment).  running_var stores the UNBIASED variance b = R(var * c),
              c = n / (n - 1) rounded once (n = N*H*W; n = 1 is an error, as in PyTorch).
              Buffers start at mean 0, var 1.  (PyTorch computes M2 / (n - 1) directly.)
    "keras"   momentum (default 0.99) is the weight of the OLD value: w_old = momentum,
              w_new = 1 - momentum; biased variance (Keras 3 BatchNormalization).
    "flax"    as "keras" (flax.linen.BatchNorm, momentum 0.99, biased variance), with the
              batch variance clamped at 0 first: Flax's fast variance max(0, E[x^2] - E[x]^2).
    "cudnn"   cudnnBatchNormalizationForwardTraining: w_new = exponentialAverageFactor
              (``momentum``); momentum=None is the documented cumulative setting
              1 / (1 + calls so far); unbiased variance.
Ioffe & Szegedy's inference statistics (Algorithm 2, steps 8-10): E[x] = the mean of the batch
means, Var[x] = m / (m - 1) times the mean of the batch variances (m the batch size): what
"torch" with momentum=None computes over equal batches.  ``population_stats`` gives the exact
mean and variance of a whole dataset instead, rounded once; the two differ by the
between-batch spread of the means.

Twins: ``precision.exact.batchnorm`` (exact values in mpmath, and the op-by-op replays).
"""
from __future__ import annotations

import numbers
from fractions import Fraction

import numpy as np

from . import _checks
from . import formats as _formats
from . import stats as _stats

__all__ = [
    "CONVENTIONS",
    "DEFAULT_MOMENTUM",
    "RunningStats",
    "batch_norm",
    "batch_norm_backward",
    "population_stats",
    "inference_stats",
]

CONVENTIONS = ("torch", "keras", "flax", "cudnn")
DEFAULT_MOMENTUM = {"torch": 0.1, "keras": 0.99, "flax": 0.99, "cudnn": None}
_UNBIASED = {"torch": True, "keras": False, "flax": False, "cudnn": True}


def _real(value, name):
    # ValueError, not OverflowError, for an int beyond float64 (momentum=10**400)
    return _checks.check_real(name, value)


def update_weights(convention: str, momentum, calls_after: int):
    """(w_new, w_old) of an update as exact rationals (module docstring); ``calls_after`` is
    the number of updates including this one."""
    if momentum is None:
        w_new = Fraction(1, calls_after)
    elif convention in ("keras", "flax"):
        w_new = 1 - Fraction(momentum)
    else:
        w_new = Fraction(momentum)
    return w_new, 1 - w_new


class RunningStats:
    """Running mean and variance buffers of ``num_features`` channels in one framework's
    convention (module docstring).

    convention: "torch" (default), "keras", "flax" or "cudnn"; momentum: the convention's
    (None for the cumulative average where the convention has one: "torch", "cudnn"; default
    DEFAULT_MOMENTUM[convention]); state_format: the buffers' format (default float32);
    accum: the update's arithmetic format (default the state format; at least as wide).
    Attributes: ``mean``, ``var`` (arrays of the state format, writable: set them to start
    elsewhere), ``num_batches_tracked`` (updates so far).
    """

    def __init__(self, num_features, *, convention="torch", momentum="default",
                 state_format="float32", accum=None):
        if isinstance(num_features, (bool, np.bool_)) or not isinstance(num_features,
                                                                        numbers.Integral):
            raise TypeError(f"num_features must be an int, got {type(num_features).__name__}")
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, "
                             f"got {convention!r}")
        if isinstance(momentum, str) and momentum == "default":
            momentum = DEFAULT_MOMENTUM[convention]
        if momentum is None:
            if convention not in ("torch", "cudnn"):
                raise ValueError(f"momentum=None (the cumulative average) exists in the torch "
                                 f"and cudnn conventions, not {convention!r}")
        else:
            momentum = _real(momentum, "momentum")
            if not 0.0 <= momentum <= 1.0:
                raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}")
        self.convention = convention
        self.momentum = momentum
        self.state_format = _formats.format(state_format)
        self.arith = _formats.arithmetic_format(accum, self.state_format)
        self.num_features = int(num_features)
        self.mean = np.zeros(self.num_features, dtype=self.state_format.dtype)
        self.var = np.ones(self.num_features, dtype=self.state_format.dtype)
        self.num_batches_tracked = 0
        if momentum is not None:   # warn once, here, if the weights change meaning in A_u
            w_new, w_old = update_weights(convention, momentum, 1)
            _formats.round_scalar(w_new, self.arith, "the new batch's weight", stacklevel=3)
            _formats.round_scalar(w_old, self.arith, "the old value's weight", stacklevel=3)

    def __repr__(self):
        return (f"RunningStats({self.num_features}, convention={self.convention!r}, "
                f"momentum={self.momentum!r}, state_format={self.state_format.name!r}, "
                f"accum={self.arith.name!r})")

    def _vector(self, values, name):
        arr = _stats._array(values, name)
        if arr.shape != (self.num_features,):
            raise ValueError(f"{name} must have shape ({self.num_features},), got {arr.shape}")
        return arr

    def update(self, batch_mean, batch_var, count):
        """Fold one batch's statistics into the buffers (module docstring).

        batch_mean, batch_var: (num_features,) arrays of any of our formats: the batch's mean
        and its BIASED variance (M2 / n), as batch_norm computes them; count: n, the number of
        elements per channel (N * H * W).  Returns self.
        """
        bm = self._vector(batch_mean, "batch_mean")
        bv = self._vector(batch_var, "batch_var")
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, numbers.Integral):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        if count < 1 or (count < 2 and _UNBIASED[self.convention]):
            raise ValueError(f"count must be >= {2 if _UNBIASED[self.convention] else 1} in "
                             f"the {self.convention} convention (the unbiased variance divides "
                             f"by n - 1), got {count}")
        A = self.arith
        ad = _stats.arith_dtype(A)
        calls = self.num_batches_tracked + 1
        w_new, w_old = update_weights(self.convention, self.momentum, calls)
        wn = _stats.exact_in(w_new, A)
        wo = _stats.exact_in(w_old, A)
        with np.errstate(all="ignore"):
            b_mean = np.asarray(A.round(bm), dtype=ad)
            b_var = np.asarray(A.round(bv), dtype=ad)
            if self.convention == "flax":
                b_var = np.where(b_var < 0, np.zeros_like(b_var), b_var)   # max(0, v); NaN stays
            if _UNBIASED[self.convention]:
                b_var = b_var * _stats.exact_in(Fraction(count, count - 1), A)
            old_mean = self.mean.astype(ad)
            old_var = self.var.astype(ad)
            new_mean = wo * old_mean + wn * b_mean
            new_var = wo * old_var + wn * b_var
        self.mean[...] = _stats.to_storage(new_mean, self.state_format)
        self.var[...] = _stats.to_storage(new_var, self.state_format)
        self.num_batches_tracked = calls
        return self


# ----------------------------------------------------------------------------- the layer
def _channel_layout(x, channel_axis):
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis,
                                                                    numbers.Integral):
        raise TypeError(f"channel_axis must be an int, got {type(channel_axis).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, ...) (at least 2 dimensions), got {x.shape}")
    if not -x.ndim <= channel_axis < x.ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for {x.ndim} dimensions")
    c_axis = channel_axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != c_axis)
    return _stats.Layout(x, axes), c_axis


def _param(value, name, fmt, c):
    if value is None:
        return None
    arr = _stats._array(value, name)
    if arr.dtype != fmt.dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but x is {fmt.name}: all arrays of a "
                        f"call must share one storage format")
    if arr.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {arr.shape}")
    return arr


def _eps(eps, arith):
    e = _real(eps, "eps")
    if e < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    return np.asarray(_formats.round_scalar(e, arith, "eps", stacklevel=4),
                      dtype=_stats.arith_dtype(arith))[()]


def _invstd(var, eps_a, ad):
    one = np.asarray(1, dtype=ad)[()]
    with np.errstate(all="ignore"):
        return one / np.sqrt(var + eps_a)


def _compute(values, arith):
    return np.ascontiguousarray(np.asarray(values).astype(_stats.compute_dtype(arith)))


def _check_out(out, x, fmt):
    if out is None:
        return
    _checks.check_out(out, "out", x.shape, fmt.dtype, [("x", x)])


def batch_norm(x, weight=None, bias=None, *, running=None, training=True, eps=1e-5,
               channel_axis=1, method="two-pass", accum=None, return_saved=False, out=None,
               num_threads=None):
    """Batch-normalise x (module docstring's forward).

    x: (N, C, ...) with channels on ``channel_axis``; weight, bias: (C,) of x's format or None
    (no affine map; both or neither); running: a :class:`RunningStats` of C features, updated
    in place when ``training`` (its own convention, state format and arithmetic) and read when
    not; training: batch statistics (default) or the running ones (``running`` required);
    eps: added to the variance (rounded once into A, default 1e-5 as PyTorch; Keras uses
    1e-3, Flax 1e-5); method: the batch variance's (precision.stats); accum: A;
    return_saved: also return (mean, invstd) per channel as arrays of A's dtype, the input of
    :func:`batch_norm_backward`; out: where to write y (x's shape and dtype, C-contiguous).
    Returns y (or ``out``), or (y, mean, invstd).
    """
    x = _stats._array(x)
    fmt = _formats.of(x)
    arith = _formats.arithmetic_format(accum, fmt)
    ad = _stats.arith_dtype(arith)
    layout, c_axis = _channel_layout(x, channel_axis)
    c = x.shape[c_axis]
    weight = _param(weight, "weight", fmt, c)
    bias = _param(bias, "bias", fmt, c)
    if (weight is None) != (bias is None):
        raise ValueError("give both weight and bias, or neither (no affine map)")
    if running is not None:
        if not isinstance(running, RunningStats):
            raise TypeError(f"running must be a RunningStats, got {type(running).__name__}")
        if running.num_features != c:
            raise ValueError(f"running has {running.num_features} features, x has {c} channels")
    elif not training:
        raise ValueError("inference (training=False) normalises with running statistics: "
                         "pass running=")
    method = _stats._method(method)
    order = _stats._order(None, method)
    if layout.n < 1:
        raise ValueError(f"x has no elements per channel (shape {x.shape})")
    if training and running is not None and _UNBIASED[running.convention] and layout.n < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got input "
                         f"shape {x.shape} (the unbiased running variance divides by n - 1)")
    _check_out(out, x, fmt)
    eps_a = _eps(eps, arith)
    nt = _stats.threads(num_threads, x.size)
    if training:
        mean, var, _ = _stats.moments_a(layout, method, order, 0, arith, fmt, nt)
        if method == "one-pass":
            var = np.where(var < 0, np.zeros_like(var), var)
    else:
        mean = np.asarray(arith.round(running.mean), dtype=ad)
        var = np.asarray(arith.round(running.var), dtype=ad)
    invstd = _invstd(var, eps_a, ad)
    y = out if out is not None else np.empty(x.shape, dtype=fmt.dtype)
    if layout.K:
        affine = weight is not None
        ones = np.ones(c, dtype=_stats.compute_dtype(arith))
        kernel = getattr(_stats._kernels(), f"bn_forward_{fmt.short}_{arith.short}")
        kernel(_stats.kernel_view(layout.flat), layout.A, layout.K, layout.B,
               _compute(mean, arith), _compute(invstd, arith),
               _compute(weight, arith) if affine else ones,
               _compute(bias, arith) if affine else ones, affine,
               _stats.kernel_view(y.reshape(-1)), nt)
    if training and running is not None:
        running.update(mean, var, layout.n)
    if return_saved:
        return y, mean, invstd
    return y


def batch_norm_backward(grad_out, x, weight=None, *, mean, invstd, training=True,
                        channel_axis=1, accum=None, num_threads=None):
    """Gradients of :func:`batch_norm` (module docstring's backward).

    grad_out, x: (N, C, ...) of one format; weight: (C,) or None; mean, invstd: the forward's
    saved per-channel values (``return_saved=True``; for inference, the running statistics'
    mean and invstd); training: whether the forward used batch statistics.  Returns
    (grad_x, grad_weight, grad_bias), rounded once into x's format (the last two None without
    weight).
    """
    x = _stats._array(x)
    dy = _stats._array(grad_out, "grad_out")
    fmt = _formats.of(x)
    if dy.dtype != x.dtype:
        raise TypeError(f"grad_out has dtype {dy.dtype} but x is {fmt.name}")
    if dy.shape != x.shape:
        raise ValueError(f"grad_out has shape {dy.shape}, x {x.shape}")
    arith = _formats.arithmetic_format(accum, fmt)
    ad = _stats.arith_dtype(arith)
    layout, c_axis = _channel_layout(x, channel_axis)
    dlayout, _ = _channel_layout(dy, channel_axis)
    c = x.shape[c_axis]
    weight = _param(weight, "weight", fmt, c)
    vectors = []
    for name, v in (("mean", mean), ("invstd", invstd)):
        arr = np.asarray(v)
        if arr.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {arr.shape}")
        try:
            _formats.of(arr)
        except TypeError:
            raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}") from None
        vectors.append(np.asarray(arith.round(arr), dtype=ad))
    mu, s = vectors
    if layout.n < 1:
        raise ValueError(f"x has no elements per channel (shape {x.shape})")
    nt = _stats.threads(num_threads, x.size)
    order = "pairwise"
    sum_dy = _stats.reduce_terms(dlayout, "x", order, arith, fmt, nt)
    dot = _stats.reduce_terms(layout, "devdot", order, arith, fmt, nt, centre=mu,
                              y_flat=dlayout.flat)
    g = weight.astype(ad) if weight is not None else np.ones(c, dtype=ad)
    with np.errstate(all="ignore"):
        if training:
            n_a = _stats.count_in(layout.n, arith)
            kk = ((dot * s) * s) / n_a
            gm = sum_dy / n_a
        else:
            kk = gm = np.zeros(c, dtype=ad)
        grad_weight = dot * s
    dx = np.empty(x.shape, dtype=fmt.dtype)
    if layout.K:
        kernel = getattr(_stats._kernels(), f"bn_backward_{fmt.short}_{arith.short}")
        kernel(_stats.kernel_view(dlayout.flat), _stats.kernel_view(layout.flat), layout.A,
               layout.K, layout.B, _compute(mu, arith), _compute(s, arith), _compute(g, arith),
               _compute(gm, arith), _compute(kk, arith), training,
               _stats.kernel_view(dx.reshape(-1)), nt)
    if weight is None:
        return dx, None, None
    return dx, _stats.to_storage(grad_weight, fmt), _stats.to_storage(sum_dy, fmt)


# ------------------------------------------------------------------------ reference statistics
def population_stats(x, axis=0, *, ddof=0, fmt="float64"):
    """The exact mean and variance (divisor n - ddof) of a whole dataset over ``axis``,
    each rounded once into ``fmt``: what the running statistics try to estimate."""
    from .exact import stats as _exact_stats

    x = _stats._array(x)
    target = _formats.format(fmt)
    m, v = _exact_stats.moments(x, axis, ddof=ddof)
    return target.round(m), target.round(v)


def inference_stats(batch_means, batch_vars, batch_size, *, fmt="float64"):
    """Ioffe & Szegedy's inference statistics (Algorithm 2): E[x] = mean of the batch means,
    Var[x] = m / (m - 1) * mean of the batch (biased) variances, m = batch_size elements per
    channel; computed exactly and rounded once into ``fmt``.

    batch_means, batch_vars: (num_batches, C) arrays (any of our formats), one row per batch.
    """
    bm = _stats._array(batch_means, "batch_means")
    bv = _stats._array(batch_vars, "batch_vars")
    if bm.ndim != 2 or bm.shape != bv.shape or bm.shape[0] == 0:
        raise ValueError(f"batch_means and batch_vars must be (num_batches >= 1, C) arrays of "
                         f"one shape, got {bm.shape} and {bv.shape}")
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (the factor m / (m - 1)), got {batch_size}")
    target = _formats.format(fmt)
    k = bm.shape[0]
    means, variances = [], []
    with np.errstate(invalid="ignore"):
        bm64 = bm.astype(np.float64)
        bv64 = bv.astype(np.float64)
    if not (np.all(np.isfinite(bm64)) and np.all(np.isfinite(bv64))):
        raise ValueError("batch statistics must be finite")
    for j in range(bm.shape[1]):
        means.append(sum(Fraction(v) for v in bm64[:, j].tolist()) / k)
        variances.append(Fraction(batch_size, batch_size - 1)
                         * sum(Fraction(v) for v in bv64[:, j].tolist()) / k)
    return (target.round(np.array(means, dtype=object)),
            target.round(np.array(variances, dtype=object)))
