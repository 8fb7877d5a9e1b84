"""Test helpers for the loss kernels: the algorithm's error bound and the inputs.

(The algorithm replayed op by op, the kernels' twin, is in the library:
:class:`precision.exact.losses.EmulatedLosses`, ``precision.exact.emulate(A).losses()``.)

* :func:`forward_bound` is the a-priori error bound of the same algorithm against the exact value
  (a first-order running-error analysis in the style of Blanchard, Higham & Higham 2021, written
  out below), evaluated for the given inputs.
* :func:`make_logits` / :func:`make_targets` draw the inputs the tests use, extremes included.
"""
from __future__ import annotations

import math

import numpy as np

import precision as pr

# finite logits whose intermediates stay within every format's range (bounds hold for these)
LOGIT_KINDS = ("normal", "small", "wide", "ties", "equal", "huge_spread", "near_max",
               "one_hot_like")
# logits for which only IEEE propagation is promised (bit-identity with the emulation)
SPECIAL_LOGIT_KINDS = ("overflowing_spread", "specials")
TARGET_KINDS = ("dirichlet", "sparse", "one_hot", "uniform", "subnormal", "softmax")


# ============================================================================ the error bound
def pairwise_depth(n: int) -> int:
    """Largest number of rounded additions on any element's path through pairwise_A(n terms)."""
    if n <= 1:
        return 0
    leaves = -(-n // 128)
    lane = -(-min(n, 128) // 8)
    return lane + 3 + math.ceil(math.log2(leaves))


def gamma(k: int, u: float) -> float:
    return k * u / (1 - k * u)


class _Budget:
    """Error model of one arithmetic format: a rounded result v has |error| <= u|v| + half_tiny
    (a transcendental: rho times that, rho = 1 when correctly rounded, 2 within 1 ulp).
    half_tiny is taken as the whole smallest subnormal: float64's half of it is not a float64."""

    def __init__(self, fmt, rho):
        self.u = fmt.u
        self.half_tiny = fmt.smallest_subnormal
        self.rho = rho

    def op(self, magnitude):
        return self.u * magnitude + self.half_tiny

    def fn(self, magnitude):
        return self.rho * (self.u * magnitude + self.half_tiny)


def forward_bound(logits, targets, storage, arith, *, kind, label_smoothing=0.0,
                  reduction="mean"):
    # evaluated in float64: for float64 inputs near +-max a bound can overflow to inf (vacuous);
    # those inputs are still checked bit for bit against the emulation
    with np.errstate(over="ignore", invalid="ignore"):
        return _forward_bound(logits, targets, storage, arith, kind=kind,
                              label_smoothing=label_smoothing, reduction=reduction)


def _forward_bound(logits, targets, storage, arith, *, kind, label_smoothing=0.0,
                   reduction="mean"):
    """Bound on |computed - exact| for each output of precision.losses' algorithm.

    kind: "logsumexp", "softmax", "log_softmax", "ce" (returns (loss bound, grad bound)),
    "kl", "entropy" (targets = probs, logits ignored).  Inputs are exact values of S given as
    float64 arrays; targets are soft rows or class indices.  The analysis (u = u_A, each rounded
    op adds u|result| + tiny/2, transcendentals rho times that, sums of n non-negative terms
    gamma_d with d = pairwise_depth(n)):

      z_i = x_i - a           dz_i = u|z_i|
      e_i = exp(z_i)          de_i = (exp(u|z_i|) - 1) e_i + fn(e_i)           (propagated + own)
      s  = sum_{i!=k} e_i     ds   = sum de_i + gamma_d (s + sum de_i)
      L  = log1p(s)           dL   = ds / (1 + s - ds) + fn(L + ...)
      D  = 1 + s              dD   = ds + op(D)
      lse = a + L             dL + op(|a + L|)
      log_softmax_i = z_i - L dz_i + dL + op(|z_i| + L)                        (no cancellation)
      p_i = e_i / D           (de_i D + e_i dD) / (D (D - dD)) + op(p_i)
      t'_i (smoothing)        gamma_3 t'_i + 2 tiny
      w_i = L - z_i           dL + dz_i + op(w_i);  term_i = t_i w_i: dt_i w_i + t_i dw_i + op
      row loss                sum dterm_i + gamma_d (sum term_i + sum dterm_i)
      g_j = T p_j - t_j       dT p_j + T dp_j + dT dp_j + op(T p_j) + dt_j + op(|g_j|)
      g_k = (Tk - t_k s) / D  numerator n: dTk + dt_k s + t_k ds + op(t_k s) + op(|n|),
                              then (dn D + |n| dD) / (D (D - dD)) + op(|g_k|)
      reductions              rows: sum + gamma_dN (...);  mean: / N + op

    Second-order terms are kept where they enter (dD in D - dD, exp(u|z|) - 1); the result is
    multiplied by 1.01 to cover the rest.  Rows whose intermediates overflow A are not covered
    (the caller excludes them).  The final rounding into S (when S is narrower than A) adds
    u_S |value| + tiny_S / 2.
    """
    S, A = pr.format(storage), pr.format(arith)
    rho = 1 if A.bits == 16 else 2
    B = _Budget(A, rho)
    u = A.u
    X = np.atleast_2d(np.asarray(logits if kind != "entropy" else targets, dtype=np.float64))
    n_rows, C = X.shape
    d_row = pairwise_depth(C)
    soft = targets is not None and np.asarray(targets).dtype.kind == "f"
    if kind == "entropy":
        P = np.atleast_2d(np.asarray(targets, dtype=np.float64))
        row_val, row_err = [], []
        for p in P:
            pos = p > 0
            w = np.where(pos, -np.log(np.where(pos, p, 1.0)), 0.0)
            dw = np.where(pos, B.fn(w), 0.0)
            term = p * w
            dterm = np.where(pos, p * dw + B.op(term + p * dw), 0.0)
            row_val.append(term.sum())
            row_err.append(dterm.sum() + gamma(d_row, u) * (term.sum() + dterm.sum()))
        return _finish(np.array(row_val), np.array(row_err), reduction, S, A, B)

    out_rows = []
    T_rows = None
    if soft or kind == "kl":
        T_rows = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    labels = None if soft or kind != "ce" else np.ravel(np.asarray(targets)).astype(int)
    for r in range(n_rows):
        x = X[r]
        a = x.max()
        k = int(np.argmax(x == a))
        z = x - a
        e = np.exp(z)
        dz = u * np.abs(z)
        with np.errstate(over="ignore", invalid="ignore"):
            # exp(z + dz) - exp(z), written so that it neither loses digits near z = 0 nor
            # turns into inf * 0 where exp(z) underflows in float64
            de = np.where(e > 0, np.expm1(dz) * e, np.exp(z + dz)) + B.fn(e)
        mask = np.ones(C, bool)
        mask[k] = False
        s = e[mask].sum()
        sde = de[mask].sum()
        ds = sde + gamma(d_row, u) * (s + sde)
        L = math.log1p(s)
        dL = ds / (1 + s - ds) + B.fn(L + ds)
        D = 1 + s
        dD = ds + B.op(D + ds)
        parts = dict(a=a, k=k, z=z, e=e, dz=dz, de=de, s=s, ds=ds, L=L, dL=dL, D=D, dD=dD)
        if kind == "logsumexp":
            out_rows.append((a + L, dL + B.op(abs(a + L) + dL)))
        elif kind == "log_softmax":
            val = z - L
            out_rows.append((val, dz + dL + B.op(np.abs(z) + L + dz + dL)))
        elif kind == "softmax":
            p = e / D
            dp = (de * D + e * dD) / (D * (D - dD))
            out_rows.append((p, dp + B.op(p + dp)))
        elif kind == "kl":
            t = T_rows[r]
            pos = t > 0
            w = L - z
            dw = dL + dz + B.op(w + dL + dz)
            lt = np.log(np.where(pos, t, 1.0))
            inner = lt + w
            dinner = B.fn(np.abs(lt)) + dw + B.op(np.abs(lt) + w + dw)
            term = t * inner
            dterm = np.where(pos, t * dinner + B.op(np.abs(term) + t * dinner), 0.0)
            term = np.where(pos, term, 0.0)
            absum = np.abs(term).sum() + dterm.sum()
            out_rows.append((term.sum(), dterm.sum() + gamma(d_row, u) * absum))
        elif kind == "ce":
            out_rows.append(_ce_row_bound(parts, T_rows[r] if soft else None,
                                          None if soft else labels[r], label_smoothing,
                                          C, d_row, B, u))
        else:
            raise ValueError(kind)
    if kind in ("logsumexp", "kl"):
        vals = np.array([v for v, _ in out_rows])
        errs = np.array([e for _, e in out_rows])
        if kind == "logsumexp":
            return _to_storage(vals, errs * 1.01, S, A)
        return _finish(vals, errs, reduction, S, A, B)
    if kind in ("softmax", "log_softmax"):
        vals = np.array([v for v, _ in out_rows])
        errs = np.array([e for _, e in out_rows])
        return _to_storage(vals, errs * 1.01, S, A)
    # ce
    loss_vals = np.array([o[0] for o in out_rows])
    loss_errs = np.array([o[1] for o in out_rows])
    g_vals = np.array([o[2] for o in out_rows])
    g_errs = np.array([o[3] for o in out_rows])
    loss_bound = _finish(loss_vals, loss_errs, reduction, S, A, B)
    if reduction == "mean":
        g_vals = g_vals / n_rows
        g_errs = g_errs / n_rows + B.op(np.abs(g_vals) + g_errs / n_rows)
    return loss_bound, _to_storage(g_vals, g_errs * 1.01, S, A)


def _ce_row_bound(P, t, label, eps, C, d_row, B, u):
    """(loss value, loss bound, gradient values, gradient bounds) of one CE row."""
    z, e, dz, L, dL, D, dD, s, ds, k = (P[n] for n in ("z", "e", "dz", "L", "dL", "D", "dD",
                                                          "s", "ds", "k"))
    if t is None:
        t = np.zeros(C)
        t[label] = 1.0
        dt = np.zeros(C)
        if eps:
            t = (1 - eps) * t + eps / C
            dt = gamma(3, u) * t + 4 * B.half_tiny
    else:
        dt = np.zeros(C)
        if eps:
            t = (1 - eps) * t + eps / C
            dt = gamma(3, u) * t + 4 * B.half_tiny
    w = L - z
    dw = dL + dz + B.op(w + dL + dz)
    pos = t > 0
    term = np.where(pos, t * w, 0.0)
    dterm = np.where(pos, dt * w + (t + dt) * dw + B.op(term + dt * w + (t + dt) * dw), 0.0)
    loss = term.sum()
    if label is not None and not eps:
        dloss = dw[label]
    else:
        dloss = dterm.sum() + gamma(d_row, u) * (loss + dterm.sum())
    # gradient
    p = e / D
    dp = (P["de"] * D + e * dD) / (D * (D - dD)) + B.op(p)
    mask = np.ones(C, bool)
    mask[k] = False
    Tk = t[mask].sum()
    dTk = dt[mask].sum() + gamma(d_row, u) * (Tk + dt[mask].sum())
    T = Tk + t[k]
    dT = dTk + dt[k] + B.op(T + dTk + dt[k])
    g = T * p - t
    dg = dT * p + T * dp + dT * dp + B.op(T * p + dT * p + T * dp) + dt + B.op(np.abs(g) + dT * p
                                                                              + T * dp + dt)
    num = Tk - t[k] * s
    dprod = dt[k] * s + t[k] * ds + B.op(t[k] * s + dt[k] * s + t[k] * ds)
    dnum = dTk + dprod + B.op(abs(num) + dTk + dprod)
    gk = num / D
    dgk = (dnum * D + abs(num) * dD) / (D * (D - dD))
    g[k] = gk
    dg[k] = dgk + B.op(abs(gk) + dgk)
    return loss, dloss, g, dg


def _finish(vals, errs, reduction, S, A, B):
    """Reduce row values and bounds over rows, then into S."""
    if reduction == "none":
        return _to_storage(vals, errs * 1.01, S, A)
    n = len(vals)
    d = pairwise_depth(n)
    total = vals.sum()
    err = errs.sum() + gamma(d, A.u) * (np.abs(vals).sum() + errs.sum())
    if reduction == "mean":
        total = total / n
        err = err / n + B.op(abs(total) + err / n)
    return _to_storage(np.array(total), np.array(err) * 1.01, S, A)


def _to_storage(vals, errs, S, A):
    """(exact values, bound after the final rounding into S)."""
    if S.short == A.short:
        return errs
    return errs * (1 + S.u) + S.u * np.abs(vals) + S.smallest_subnormal


# ============================================================================ inputs
def make_logits(rng, fmt, n, c, kind):
    """(n, c) logits of fmt (exact values), drawn by kind (LOGIT_KINDS)."""
    fmt = pr.format(fmt)
    if kind == "normal":
        x = rng.normal(size=(n, c)) * rng.choice([0.5, 2.0, 5.0])
    elif kind == "small":
        x = rng.normal(size=(n, c)) * 1e-3
    elif kind == "wide":       # magnitudes over many binades, both signs
        x = rng.choice([-1.0, 1.0], size=(n, c)) * 2.0 ** rng.uniform(-20, 4, size=(n, c))
    elif kind == "ties":       # few distinct values: many ties, repeated maxima
        x = rng.choice(rng.normal(size=3) * 3, size=(n, c))
    elif kind == "equal":
        x = np.full((n, c), rng.normal() * 10)
    elif kind == "huge_spread":  # a dominant logit far above the rest (confident rows)
        x = rng.normal(size=(n, c))
        x[np.arange(n), rng.integers(0, c, n)] += rng.uniform(10, min(80.0, fmt.max / 4))
    elif kind == "near_max":   # rows at +max or -max scale (spread within the format's range)
        sign = rng.choice([-1.0, 1.0], size=(n, 1))
        x = fmt.max * rng.uniform(0.5, 1.0, size=(n, c)) * sign
        x[0, 0] = fmt.max * sign[0, 0]
    elif kind == "overflowing_spread":  # x_i - max x overflows the format (documented)
        x = fmt.max * rng.uniform(0.6, 1.0, size=(n, c)) * rng.choice([-1.0, 1.0], size=(n, c))
    elif kind == "specials":   # NaN and infinities among ordinary logits
        x = rng.normal(size=(n, c)) * 3
        x[rng.random((n, c)) < 0.2] = -np.inf
        x[rng.random((n, c)) < 0.05] = np.inf
        x[rng.random((n, c)) < 0.05] = np.nan
    elif kind == "one_hot_like":  # one large logit per row, others very negative
        x = np.full((n, c), -rng.uniform(5, 30))
        x[np.arange(n), rng.integers(0, c, n)] = rng.uniform(0, 5)
    else:
        raise ValueError(kind)
    return fmt.round(x)


def make_targets(rng, fmt, logits, kind):
    """Soft targets (rows summing to 1 within the storage rounding) of fmt, by kind."""
    fmt = pr.format(fmt)
    n, c = logits.shape
    if kind == "dirichlet":
        t = rng.dirichlet(np.full(c, rng.choice([0.2, 1.0, 5.0])), size=n)
    elif kind == "sparse":     # zeros in most classes
        t = rng.dirichlet(np.ones(c), size=n) * (rng.random((n, c)) < 0.3)
        t[np.arange(n), rng.integers(0, c, n)] += 0.1
    elif kind == "one_hot":
        t = np.zeros((n, c))
        t[np.arange(n), rng.integers(0, c, n)] = 1.0
    elif kind == "uniform":
        t = np.full((n, c), 1.0 / c)
    elif kind == "subnormal":  # a few probabilities in the subnormal range of fmt
        t = rng.dirichlet(np.ones(c), size=n)
        tiny = fmt.smallest_subnormal * rng.integers(1, 50, size=(n, c))
        t = np.where(rng.random((n, c)) < 0.3, tiny, t)
    elif kind == "softmax":    # targets near the model's own prediction (converged distillation)
        x = np.asarray(logits, dtype=np.float64)
        with np.errstate(all="ignore"):
            e = np.exp(x - x.max(axis=1, keepdims=True))
        t = e / e.sum(axis=1, keepdims=True)
        t = np.where(np.isfinite(t), t, 1.0 / c)
    else:
        raise ValueError(kind)
    t = t / t.sum(axis=1, keepdims=True)
    return fmt.round(t)


def exceeds_range(logits, soft_targets, labels, arith, reduction):
    """True when an intermediate of the algorithm leaves A's range although the inputs are
    finite: the spread max x - min x (z_i = x_i - a overflows), C - 1 (a bound on s), or, for
    "sum"/"mean", the sum of the row losses (CE with either target kind, KL).  The kernels then
    overflow as documented; bounds and the no-overflow promise exclude such inputs."""
    A = pr.format(arith)
    x = np.asarray(logits, dtype=np.float64)
    x = np.atleast_2d(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if (x.max(axis=1) - x.min(axis=1) > A.max).any() or x.shape[1] - 1 > A.max:
            return True
        if reduction == "none":
            return False
        a = x.max(axis=1, keepdims=True)
        lse = a + np.log(np.exp(x - a).sum(axis=1, keepdims=True))
        w = lse - x                                        # -log p, >= 0
        t = np.atleast_2d(np.asarray(soft_targets, dtype=np.float64))
        rows = [(t * w).sum(axis=1), w[np.arange(len(x)), np.asarray(labels)],
                w.max(axis=1)]                             # the last covers label smoothing
        return any(not (np.abs(r).sum() < A.max * (1 - 8 * A.u)) for r in rows)
