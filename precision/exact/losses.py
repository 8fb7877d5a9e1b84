"""The emulated twin of :mod:`precision.losses`: its algorithm replayed one rounding at a time.

    twin = pr.exact.emulate("float32").losses()          # A = float32; S = the inputs' dtype
    loss, grad = twin.softmax_cross_entropy(x16, t16, return_grad=True)
    pr.exact.emulate("float16").softmax(x16)            # shortcut: the same with A = float16

:class:`EmulatedLosses` runs the algorithm documented in :mod:`precision.losses` (its module
docstring) for arithmetic A = the emulated format and storage S = the dtype of the inputs: every
+, -, *, / is one MPFR operation rounded once into A (:func:`precision.exact.emulate`), sums
are the project's pairwise order (the level-by-level implementation of
:func:`precision.exact.pairwise_sum`, not the kernels' binary counter, so the two orders are
checked against each other), and each output is rounded once from A into S.  Results are numpy
arrays of S (0-d for a reduced loss).

exp, log and log1p: ``transcendentals="correct"`` (default) uses MPFR's correctly rounded
functions, which are what the kernels compute for A = float16 and bfloat16 (so there the kernels
must be bit-identical to this twin).  For A = float32 and float64 the kernels' exp/log/log1p are
within 1 ulp, not always correctly rounded: the exp of z <= 0 is exp_nonpositive.h's, log and
float64's log1p are libm's in double, and float32's log1p is fp.h's own (kernels/log1p_f32.h:
branch-free in double, relative error <= 2^-49 proved there, rounded once: within
0.5 + 2^-25 ulp); ``transcendentals="kernel"`` then calls the kernels' own
primitives (fp.h's log and log1p, the loss kernels' exp of z <= 0) to isolate everything else:
with it the kernels must be bit-identical in every policy.  That mode needs the compiled
extension modules and is not independent of them in those three functions (test_primitives.py
and test_losses.py check them against MPFR on their own).

Refinement.  With A wider than S and soft or smoothed targets the kernels recompute, in double or
double-double, the gradient rows whose error bound in A reaches 1/8 ulp of S (module docstring of
:mod:`precision.losses`; ``kernels/losses_refine.h``).  This twin replays the *check* (the same
doubles, the same operations in the same order) and reports its verdict in
:attr:`EmulatedLosses.refined_rows` after each softmax_cross_entropy call, but returns the
unrefined gradient of the algorithm in A for those rows: a refined row is promised to be within
1 ulp of S of the exact gradient (:func:`precision.exact.softmax_cross_entropy`), not equal to
anything this twin computes.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from precision import formats as _formats

from .emulate import check_storage, emulate
from .emulate import pairwise_sum as _pairwise_sum

__all__ = ["EmulatedLosses", "TRANSCENDENTALS", "REFINE_ZCAP", "refine_cancel_cu",
           "refine_depth"]

TRANSCENDENTALS = ("correct", "kernel")
_REDUCTIONS = ("mean", "sum", "none")

# the largest |z| the refinement check counts (beyond it exp(z) is 0 or subnormal in A)
REFINE_ZCAP = {"f16": 18.0, "bf16": 93.0, "f32": 104.0, "f64": 745.0}


def refine_cancel_cu(zmin, zcap, n_classes, u):
    """c u_A of the refinement check: c = 2 Z + 2 d + 17 (kernels/losses_refine.h)."""
    Z = -zmin if -zmin < zcap else zcap
    return (2.0 * Z + float(2 * refine_depth(n_classes) + 17)) * u


def refine_depth(n: int) -> int:
    """Additions on the longest path of the pairwise sum of n values (the kernels'
    losses_pairwise_depth)."""
    if n <= 128:
        return (n + 7) // 8 + 3
    levels, leaves = 0, (n + 127) // 128
    while leaves > 1:
        leaves = (leaves + 1) // 2
        levels += 1
    return 16 + 3 + levels


def _rows(x):
    arr = np.asarray(x)
    with np.errstate(all="ignore"):
        return arr.astype(np.float64).reshape(-1, arr.shape[-1]).tolist()


class EmulatedLosses:
    """precision.losses' algorithm in arithmetic ``arith`` (A), one rounding at a time.

    Methods take and return what the functions of :mod:`precision.losses` do (without
    ``accum``, ``out`` and ``num_threads``): arrays of one storage format S (their dtype), A at
    least as wide as S.  ``refined_rows``: after :meth:`softmax_cross_entropy`, one bool per row,
    True where the kernel refines the row's gradient (module docstring).
    """

    def __init__(self, arith, transcendentals: str = "correct"):
        if transcendentals not in TRANSCENDENTALS:
            raise ValueError(
                f"transcendentals must be one of {TRANSCENDENTALS}, got {transcendentals!r}")
        self.A = _formats.format(arith)
        self.E = emulate(self.A)
        self.transcendentals = transcendentals
        self.S = None              # the storage format of the current call
        self.refined_rows = []

    def __repr__(self):
        return f"emulate({self.A.name!r}).losses(transcendentals={self.transcendentals!r})"

    # -- storage -----------------------------------------------------------------------
    def _storage(self, *arrays):
        """S of a call: the dtype shared by its float arrays (A must be S or wider)."""
        floats = [a for a in arrays if a is not None and np.asarray(a).dtype.kind in "fV"]
        S = _formats.of(np.asarray(floats[0]))
        for a in floats[1:]:
            if _formats.of(np.asarray(a)) is not S:
                raise TypeError(f"arrays of one call must share a format: {S.name} and "
                                f"{_formats.of(np.asarray(a)).name}")
        check_storage(S, self.A)
        self.S = S
        self._to_S = emulate(S).round
        return S

    def store(self, values):
        """Round A values once into S: a numpy array of S's dtype."""
        flat = [self._to_S(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]
        return np.array(flat, dtype=np.float64).reshape(np.shape(values)).astype(self.S.dtype)

    # -- primitives ------------------------------------------------------------------
    def _elementary(self, name, values):
        values = [float(v) for v in values]
        if self.transcendentals == "kernel":
            from precision._kernels import _primitives, load    # only this mode needs them
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
        """pairwise_A of a list of values."""
        return self.E.sum([float(v) for v in values], order="pairwise")

    # -- one row ---------------------------------------------------------------------
    def parts(self, x):
        """(a, k, z, e, s, L, D) of one row x (a list of floats, values of S): the shared
        intermediates of the module docstring of precision.losses."""
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

    def _smoothing(self, eps, n_classes):
        if eps == 0:
            return None
        exact = Fraction(float(eps))
        return self.E.round(1 - exact), self.E.round(exact / n_classes)

    def _ce_row(self, x, t, label, smooth, want_grad, batch):
        """(row loss in A, gradient row in A or None, refined?); t soft targets or None."""
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
        if t is not None:
            terms = [E.mul(ti, E.sub(L, zi)) if ti != 0 else 0.0 for ti, zi in zip(t, z)]
            loss = self.pairwise(terms)
        else:
            loss = E.sub(L, z[label])
        if not want_grad:
            return loss, None, False
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
        refined = False
        if soft_or_smoothed:
            # entry k's magnitude: |g_k| + 2 min(Tk, t_k s) / D, read in t_k's place
            t_check = list(t)
            t_check[k] = E.div(min(Tk, E.mul(tk, s)), D)
            refined = self._refines(grad, t_check, z, T, batch, a,
                                    tight=(x, k, e, t, s, D, Tk, tk, smooth is not None))
        return loss, grad, refined

    # -- the refinement check (kernels/losses_refine.h), replayed in double ---------------
    def _refines(self, grad, t, z, T, batch, a, tight=None):
        """True if the kernel recomputes this row's gradient with more digits: A is wider
        than S and some entry's error bound in A reaches 1/8 ulp of S (the same doubles, the
        same operations in the same order as the kernels' check; for A = float32 its float
        form, :meth:`_cancels_f32`), with Z at its cap and with the row's own Z; for A =
        float32 with 16-bit S also losses_cancels_tight_S (half an ulp, replayed by
        :meth:`_cancels_tight` from the row's values in ``tight``)."""
        if self.A.p <= self.S.p or not math.isfinite(a):
            return False
        u_a, eta_a = 2.0 ** -self.A.p, float(self.A.smallest_subnormal)
        zcap = REFINE_ZCAP[self.A.short]
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

        if self.A.short == "f32":
            cancels = self._cancels_f32(grad, t, two_inv, abs_err, us8, etas8)
        C = len(grad)
        if not cancels(refine_cancel_cu(-zcap, zcap, C, u_a)):
            return False
        # Z of the row: R(min finite x - a) (-inf if that overflows A: Z is then at its cap)
        x = tight[0]
        zmin = self.E.sub(min([v for v in x if math.isfinite(v)] + [a]), a)
        if self.A.short == "f32" and self.S.bits == 16:
            # a conjunction: refined iff the tight stage and the row's-Z stage both flag it
            return (self._cancels_tight(grad, T, batch, a, abs_err, *tight)
                    and cancels(refine_cancel_cu(zmin, zcap, C, u_a)))
        return cancels(refine_cancel_cu(zmin, zcap, C, u_a))

    @staticmethod
    def _cancels_f32(grad, t, two_inv, abs_err, us8, etas8):
        """losses_cancels_f32 (kernels/losses_refine.h), the check for A = float32 in float:
        the constants from the same doubles, then per entry the same float32 operations."""
        f32 = np.float32

        def cancels(cu):
            room = us8 - cu
            y = (etas8 - abs_err) * (1.0 - 2.0 ** -20) - 2.0 ** -147
            A = f32(room * (1.0 - 2.0 ** -16)) if room > us8 * 2.0 ** -10 else f32(0.0)
            B = f32(cu * two_inv * (1.0 + 2.0 ** -16)) + f32(2.0 ** -147)
            C0 = f32(abs_err * (1.0 + 2.0 ** -16)) + f32(2.0 ** -147)
            K = f32(cu * (1.0 + 2.0 ** -16))
            E0 = f32(y) if y > 0 else f32(0.0)
            for gj, tj in zip(grad, t):
                G, MB = abs(f32(gj)), abs(f32(tj)) * B
                if G * A < MB + C0 and G * K + MB >= E0:
                    return True
            return False
        return cancels

    def _cancels_tight(self, grad, T, batch, a, abs_err, x, k, e, t, s, D, Tk, tk, smoothed):
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
        zcap = REFINE_ZCAP["f32"]
        Z = -zmin if -zmin < zcap else zcap
        eps_z = 0.0 if exact else u * Z
        eps_t = 3.0 * u if smoothed else 0.0

        def add(p, q):          # double additions, in summation.h's order
            return p + q

        e0 = [float(v) for v in e]
        e0[k] = 0.0
        t0 = [float(v) for v in t]
        t0[k] = 0.0
        s_d = _pairwise_sum(e0, add, 0.0)
        Tk_d = _pairwise_sum(t0, add, 0.0)
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

    # -- reductions --------------------------------------------------------------------
    @staticmethod
    def _reduction(reduction, allowed=_REDUCTIONS):
        if reduction not in allowed:
            raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
        return "mean" if reduction == "batchmean" else reduction

    def _reduce(self, row_values, reduction):
        """Row values (in A) reduced and stored in S (array for "none", 0-d array otherwise)."""
        if reduction == "none":
            return self.store(row_values)
        total = self.pairwise(row_values)
        if reduction == "mean":
            total = self.E.div(total, self.E.round(len(row_values)))
        return self.store(total)

    # -- the functions of precision.losses ------------------------------------------------
    def logsumexp(self, x):
        """R(a + L) per row."""
        self._storage(x)
        out = []
        for row in _rows(x):
            a, k, z, e, s, L, D = self.parts(row)
            out.append(self.E.add(a, L))
        return self.store(out).reshape(np.shape(x)[:-1])

    def softmax(self, x):
        """p_i = R(e_i / D) per row."""
        self._storage(x)
        out = []
        for row in _rows(x):
            a, k, z, e, s, L, D = self.parts(row)
            out.append([self.E.div(ei, D) for ei in e])
        return self.store(out).reshape(np.shape(x))

    def log_softmax(self, x):
        """R(z_i - L) per row."""
        self._storage(x)
        out = []
        for row in _rows(x):
            a, k, z, e, s, L, D = self.parts(row)
            out.append([self.E.sub(zi, L) for zi in z])
        return self.store(out).reshape(np.shape(x))

    def softmax_cross_entropy(self, logits, targets, *, reduction="mean", return_grad=False,
                              label_smoothing=0.0):
        """The loss (and with ``return_grad`` the gradient, unrefined: module docstring) of
        soft targets (logits' shape and dtype) or class indices (an integer array)."""
        reduction = self._reduction(reduction)
        t_arr = np.asarray(targets)
        soft = t_arr.dtype.kind not in "iu"
        self._storage(logits, targets if soft else None)
        rows = _rows(logits)
        C = len(rows[0])
        t_rows = _rows(targets) if soft else [None] * len(rows)
        labels = [None] * len(rows) if soft else np.ravel(t_arr).tolist()
        smooth = self._smoothing(label_smoothing, C)
        batch = self.E.round(len(rows)) if reduction == "mean" else 1.0
        losses, grads, refined_rows = [], [], []
        for x, t, y in zip(rows, t_rows, labels):
            loss, grad, refined = self._ce_row(x, t, y, smooth, return_grad, batch)
            losses.append(loss)
            grads.append(grad)
            refined_rows.append(refined)
        self.refined_rows = refined_rows
        loss = self._reduce(losses, reduction)
        if np.ndim(logits) == 1 and reduction == "none":
            loss = loss.reshape(())
        if not return_grad:
            return loss
        return loss, self.store(grads).reshape(np.shape(logits))

    def kl_divergence(self, targets, logits, *, reduction="mean"):
        """pairwise_A(t_i > 0 ? R(t_i * R(log_A(t_i) + R(L - z_i))) : 0) per row, reduced."""
        reduction = self._reduction(reduction, _REDUCTIONS + ("batchmean",))
        self._storage(targets, logits)
        E = self.E
        values = []
        for t, x in zip(_rows(targets), _rows(logits)):
            a, k, z, e, s, L, D = self.parts(x)
            logs = self._elementary("log", [ti if ti > 0 else 1.0 for ti in t])
            terms = [E.mul(ti, E.add(lt, E.sub(L, zi))) if ti > 0 else 0.0
                     for ti, lt, zi in zip(t, logs, z)]
            values.append(self.pairwise(terms))
        return self._reduce(values, reduction)

    def entropy(self, probs, *, reduction="mean"):
        """pairwise_A(p_i > 0 ? R(p_i * R(-log_A(p_i))) : 0) per row, reduced."""
        reduction = self._reduction(reduction)
        self._storage(probs)
        E = self.E
        values = []
        for p in _rows(probs):
            logs = self._elementary("log", [pi if pi > 0 else 1.0 for pi in p])
            terms = [E.mul(pi, -lp) if pi > 0 else 0.0 for pi, lp in zip(p, logs)]
            values.append(self.pairwise(terms))
        return self._reduce(values, reduction)
