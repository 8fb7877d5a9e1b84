"""Test helpers for the loss kernels: the algorithm replayed op by op, its error bound, inputs.

* :class:`EmulatedLosses` runs precision.losses' documented algorithm (module docstring of
  precision/losses.py) one operation at a time with ``precision.exact.emulate(A)``: every +, -, *,
  / rounded once into A by MPFR, sums in the project's pairwise order (the level-by-level
  implementation of precision.exact, not the kernels' binary counter), outputs rounded once into
  S.  exp, log and log1p are MPFR's (correctly rounded) by default, or the kernels' own primitives
  (``transcendentals="kernel"``: fp.h's log and log1p, and the loss kernels' own exp of z <= 0)
  to isolate everything else for a bit-exact comparison in float32 and float64 arithmetic.
* :func:`forward_bound` is the a-priori error bound of the same algorithm against the exact value
  (a first-order running-error analysis in the style of Blanchard, Higham & Higham 2021, written
  out below), evaluated for the given inputs.
* :func:`make_logits` / :func:`make_targets` draw the inputs the tests use, extremes included.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

import precision as pr
from precision.exact import emulate
from precision.exact.emulate import pairwise_sum as emulate_pairwise
from precision._kernels import _primitives, load

# finite logits whose intermediates stay within every format's range (bounds hold for these)
LOGIT_KINDS = ("normal", "small", "wide", "ties", "equal", "huge_spread", "near_max",
               "one_hot_like")
# logits for which only IEEE propagation is promised (bit-identity with the emulation)
SPECIAL_LOGIT_KINDS = ("overflowing_spread", "specials")
TARGET_KINDS = ("dirichlet", "sparse", "one_hot", "uniform", "subnormal", "softmax")


# ============================================================================ the emulation
class EmulatedLosses:
    """precision.losses' algorithm for storage S and arithmetic A, one rounding at a time."""

    def __init__(self, storage, arith=None, transcendentals="correct"):
        self.S = pr.format(storage)
        self.A = pr.format(arith if arith is not None else storage)
        self.E = emulate(self.A)
        self.to_S = emulate(self.S).round
        if transcendentals not in ("correct", "kernel"):
            raise ValueError(transcendentals)
        self.kernel_fns = transcendentals == "kernel"

    # -- primitives ------------------------------------------------------------------
    def _elementary(self, name, values):
        values = [float(v) for v in values]
        if self.kernel_fns:
            x = np.array(values, dtype=np.float64)
            out = np.empty_like(x)
            if name == "exp":
                # the loss kernels' own exp of z <= 0 (precision._kernels.losses.exp_nonpositive)
                load("losses").exp_nonpositive(self.A.short, x, out)
                return out.tolist()
            with np.errstate(all="ignore"):
                _primitives.elementary(name, self.A.short, x, out)
            return out.tolist()
        fn = getattr(self.E, name)
        return [fn(v) for v in values]

    def pairwise(self, values):
        return self.E.sum([float(v) for v in values], order="pairwise")

    def store(self, values):
        """Round A values once into S: a numpy array of S's dtype."""
        flat = [self.to_S(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]
        return np.array(flat, dtype=np.float64).reshape(np.shape(values)).astype(self.S.dtype)

    # -- one row ---------------------------------------------------------------------
    def parts(self, x):
        """(a, k, z, e, s, L, D) of one row x (a list of floats, values of S)."""
        E = self.E
        if any(math.isnan(v) for v in x):
            a, k = math.nan, 0
        else:
            top = max(x)
            k = next(i for i, v in enumerate(x) if v == top)
            a = x[k]
        z = [E.sub(v, a) for v in x]
        e = self._elementary("exp", z)
        e_wo_k = list(e)
        e_wo_k[k] = 0.0
        s = self.pairwise(e_wo_k)
        if math.isnan(a):
            s = math.nan
        L = self._elementary("log1p", [s])[0]
        D = E.add(1.0, s)
        return a, k, z, e, s, L, D

    def smoothing(self, eps, n_classes):
        if eps == 0:
            return None
        exact = Fraction(float(eps))
        return self.E.round(1 - exact), self.E.round(exact / n_classes)

    def ce_row(self, x, t, label, smooth, want_grad, batch):
        """(row loss in A, gradient row in A or None); t soft targets or None with label."""
        E = self.E
        a, k, z, e, s, L, D = self.parts(x)
        C = len(x)
        if t is None and smooth is not None:
            c1, c2 = smooth
            t = [c2] * C
            t[label] = E.add(c1, c2)
        elif t is not None and smooth is not None:
            c1, c2 = smooth
            t = [E.add(E.mul(c1, v), c2) for v in t]
        soft_or_smoothed = t is not None
        self.refined = False
        if t is not None:
            terms = [E.mul(ti, E.sub(L, zi)) if ti != 0 else 0.0 for ti, zi in zip(t, z)]
            loss = self.pairwise(terms)
        else:
            loss = E.sub(L, z[label])
        if not want_grad:
            return loss, None
        if t is None:
            t = [0.0] * C
            t[label] = 1.0
            T = 1.0
            tk = t[k]
            Tk = 1.0 - tk
        else:
            t_wo_k = list(t)
            t_wo_k[k] = 0.0
            Tk = self.pairwise(t_wo_k)
            tk = t[k]
            T = E.add(Tk, tk)
        grad = []
        for j in range(C):
            if j == k:
                g = E.div(E.sub(Tk, E.mul(tk, s)), D)
            else:
                g = E.sub(E.mul(T, E.div(e[j], D)), t[j])
            if batch != 1:
                g = E.div(g, batch)
            grad.append(g)
        if soft_or_smoothed:
            # entry k's magnitude: |g_k| + 2 min(Tk, t_k s) / D, read in t_k's place
            t_check = list(t)
            t_check[k] = E.div(min(Tk, E.mul(tk, s)), D)
            self.refined = self.refines(grad, t_check, z, T, batch, a,
                                        tight=(x, k, e, t, s, D, Tk, tk, smooth is not None))
        return loss, grad

    # -- the refinement check (kernels/losses_refine.h), replayed in double ---------------
    def refines(self, grad, t, z, T, batch, a, tight=None):
        """True if the kernel recomputes this row's gradient with more digits: A is wider
        than S and some entry's error bound in A reaches 1/8 ulp of S (the same doubles, the
        same operations in the same order as losses_cancels / losses_cancel_cu); for A =
        float32 with 16-bit S the second stage is losses_cancels_tight_S instead (half an ulp,
        replayed by :meth:`cancels_tight` from the row's values in ``tight``)."""
        if self.A.p <= self.S.p or not math.isfinite(a):
            return False
        u_a, eta_a = 2.0 ** -self.A.p, float(self.A.smallest_subnormal)
        zcap = ZCAP[self.A.short]
        us8, etas8 = 2.0 ** -self.S.p / 8, float(self.S.smallest_subnormal) / 8
        two_inv = 2.0 / batch
        abs_err = (4.0 * T + 5.0) * eta_a

        def cancels(cu):
            for gj, tj in zip(grad, t):
                gj = abs(gj)
                bound = cu * (gj + two_inv * abs(tj)) + abs_err
                if bound > us8 * gj and bound > etas8:
                    return True
            return False

        C = len(grad)
        if not cancels(cancel_cu(-zcap, zcap, C, u_a)):
            return False
        if self.A.short == "f32" and self.S.bits == 16:
            return self.cancels_tight(grad, T, batch, a, abs_err, *tight)
        zmin = min(zi for zi in z if math.isfinite(zi))
        return cancels(cancel_cu(zmin, zcap, C, u_a))

    def cancels_tight(self, grad, T, batch, a, abs_err, x, k, e, t, s, D, Tk, tk, smoothed):
        """losses_cancels_tight_S (kernels/losses_refine.h), the same doubles in the same
        order: the sums' roundings measured against double pairwise sums of the same terms,
        z exact when x_i - a is, half an ulp of S."""
        u, eps_e = 2.0 ** -24, 2.0 ** -24 * (1.0 + 2.0 ** -18)
        finite = [v for v in x if math.isfinite(v)]
        xmin = min(finite + [a])
        nonzero = [abs(v) for v in finite + [a] if v != 0]
        exact = True
        if nonzero:     # every x_i - a a multiple of 2^(floor(log2 least) - (p_S - 1))
            q = math.frexp(min(nonzero))[1]
            M = 2.0 * max(abs(a), abs(xmin))
            exact = M < math.ldexp(1.0, 24 + (q - 1) - (self.S.p - 1))
        zmin = self.E.sub(xmin, a)
        zcap = ZCAP["f32"]
        Z = -zmin if -zmin < zcap else zcap
        eps_z = 0.0 if exact else u * Z
        eps_t = 3.0 * u if smoothed else 0.0
        add = lambda p, q: p + q  # noqa: E731  (double additions, summation.h's order)
        e0 = [float(v) for v in e]
        e0[k] = 0.0
        t0 = [float(v) for v in t]
        t0[k] = 0.0
        s_d = emulate_pairwise(e0, add, 0.0)
        Tk_d = emulate_pairwise(t0, add, 0.0)
        C = len(grad)
        gamma = 1.01 * float(refine_depth(C)) * 2.0 ** -53
        errS = abs(s - s_d) + gamma * s_d + (eps_e + eps_z) * s_d
        relD = (errS + u * D) / D
        relP = eps_e + eps_z + relD + u
        T_d = Tk_d + tk
        errT = abs(T - T_d) + (gamma + 2.0 ** -53) * T_d + eps_t * T_d
        relT = errT / T if T > 0 else 0.0
        relQ = relT + relP + u
        errTk = abs(Tk - Tk_d) + gamma * Tk_d + eps_t * Tk_d
        tks = tk * s
        us_half = 2.0 ** -self.S.p / 2
        etas_half = float(self.S.smallest_subnormal) / 2
        Gk = abs(grad[k]) * batch
        Ek = (errTk + tk * errS + (eps_t + u) * tks + u * Gk * D) / D + Gk * (relD + u)
        relQ4 = relQ * (1.0 + 4.0 * u)
        inv_batch = 1.0 / batch
        ub = u if batch != 1 else 0.0
        for j, g in enumerate(grad):
            gj = abs(g)
            G = gj * batch
            E = Ek if j == k else u * G + relQ4 * (G + abs(t[j])) + eps_t * abs(t[j])
            E = (E * inv_batch + ub * gj) * (1.0 + 2.0 ** -20) + abs_err
            if E - max(us_half * gj, etas_half) > 0:
                return True
        return False

    # -- whole calls -------------------------------------------------------------------
    @staticmethod
    def _rows(x):
        arr = np.asarray(x)
        with np.errstate(all="ignore"):
            return arr.astype(np.float64).reshape(-1, arr.shape[-1]).tolist()

    def reduce(self, row_values, reduction):
        """Row values (in A) reduced and stored in S (array for "none", 0-d array otherwise)."""
        if reduction == "none":
            return self.store(row_values)
        total = self.pairwise(row_values)
        if reduction == "mean":
            total = self.E.div(total, self.E.round(len(row_values)))
        return self.store(total)

    def logsumexp(self, x):
        out = []
        for row in self._rows(x):
            a, k, z, e, s, L, D = self.parts(row)
            out.append(self.E.add(a, L))
        return self.store(out).reshape(np.shape(x)[:-1])

    def softmax(self, x, log=False):
        out = []
        for row in self._rows(x):
            a, k, z, e, s, L, D = self.parts(row)
            if log:
                out.append([self.E.sub(zi, L) for zi in z])
            else:
                out.append([self.E.div(ei, D) for ei in e])
        return self.store(out).reshape(np.shape(x))

    def cross_entropy(self, logits, targets, reduction="mean", label_smoothing=0.0,
                      want_grad=False):
        """(loss stored in S, gradient stored in S or None), targets soft or class indices."""
        rows = self._rows(logits)
        C = len(rows[0])
        t_arr = np.asarray(targets)
        soft = t_arr.dtype.kind not in "iu"
        t_rows = self._rows(targets) if soft else [None] * len(rows)
        labels = [None] * len(rows) if soft else np.ravel(t_arr).tolist()
        smooth = self.smoothing(label_smoothing, C)
        batch = self.E.round(len(rows)) if reduction == "mean" else 1.0
        losses, grads, self.refined_rows = [], [], []
        for x, t, y in zip(rows, t_rows, labels):
            loss, grad = self.ce_row(x, t, y, smooth, want_grad, batch)
            losses.append(loss)
            grads.append(grad)
            self.refined_rows.append(self.refined)
        loss = self.reduce(losses, reduction)
        grad = self.store(grads).reshape(np.shape(logits)) if want_grad else None
        return loss, grad

    def kl_divergence(self, targets, logits, reduction="mean"):
        E = self.E
        values = []
        for t, x in zip(self._rows(targets), self._rows(logits)):
            a, k, z, e, s, L, D = self.parts(x)
            logs = self._elementary("log", [ti if ti > 0 else 1.0 for ti in t])
            terms = [E.mul(ti, E.add(lt, E.sub(L, zi))) if ti > 0 else 0.0
                     for ti, lt, zi in zip(t, logs, z)]
            values.append(self.pairwise(terms))
        return self.reduce(values, reduction)

    def entropy(self, probs, reduction="mean"):
        E = self.E
        values = []
        for p in self._rows(probs):
            logs = self._elementary("log", [pi if pi > 0 else 1.0 for pi in p])
            terms = [E.mul(pi, -lp) if pi > 0 else 0.0 for pi, lp in zip(p, logs)]
            values.append(self.pairwise(terms))
        return self.reduce(values, reduction)


# the largest |z| the refinement check counts (beyond it exp(z) is 0 or subnormal in A)
ZCAP = {"f16": 18.0, "bf16": 93.0, "f32": 104.0, "f64": 745.0}


def cancel_cu(zmin, zcap, n_classes, u):
    """c u_A of the refinement check: c = 2 Z + 2 d + 17 (kernels/losses_refine.h)."""
    Z = -zmin if -zmin < zcap else zcap
    return (2.0 * Z + float(2 * refine_depth(n_classes) + 17)) * u


def refine_depth(n: int) -> int:
    """Additions on the longest path of the pairwise sum of n values (losses_pairwise_depth)."""
    if n <= 128:
        return (n + 7) // 8 + 3
    levels, leaves = 0, (n + 127) // 128
    while leaves > 1:
        leaves = (leaves + 1) // 2
        levels += 1
    return 16 + 3 + levels


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
