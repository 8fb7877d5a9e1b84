"""The soft-target problems of the stall study, their optima, and exact evaluators of the excess loss.

Every problem is softmax cross-entropy on soft targets, mean over N rows::

    CE(θ) = (1/N) Σ_r Σ_c t_rc (lse(z_r) − z_rc),     z_r = the model's logits of row r.

**Identical data in every format.** Features, targets and initial parameters are dyadic numbers with
at most 6 significant bits inside float16's normal range (features k/4 with |k| ≤ 8, possibly times a
power of two; targets k/64 with k ≥ 1 and each row summing to exactly 1; initial weights k/16), so
float16, bfloat16, float32 and float64 hold them exactly and every run starts from the same point on
the same data.

Linear problems have logits z_r = x̃_r W with x̃_r the features (with a trailing 1 when the model has
an intercept) and W of shape (D, C):

* ``bias-only``  x̃_r = (1): every row shares one prediction p = softmax(b); the optimum is p* = t̄
  (the mean target) and min CE = H(t̄).
* ``linear``  (realizable) x̃_r = (one-hot of the row's group g, u_r): targets depend on the group
  only, t_r = t_g, and the continuous features u have zero mean inside every group, so
  W* = (log t_g + const, 0) fits every row exactly: p*_r = t_r and min CE = mean_r H(t_r).
* ``linear-noisy``  (misspecified) x̃_r = (x_r, 1), targets are the softmax of a linear function
  of x plus noise, quantized to k/64: no W fits them; the optimum is found by Newton's method and
  refined in mpmath (:func:`optimum`).
* ``linear-ill-conditioned``  as linear-noisy with feature j scaled by 2^(−s_j), s_j spread
  evenly up to log2(√κ): the condition number of XᵀX grows like κ.

``mlp``  (realizable) one hidden ReLU layer, z_r = relu(x_r W1 + b1) W2 + b2, d = 4 inputs,
  h = 6 hidden units, C = 3 classes, N = 128 rows (full: 256) in G = 6 groups. Input x_r = (c_g, u_r):
  the group's centre c_g (2 dyadic coordinates) and 2 nuisance features u_r (k/4). Targets depend on
  the group only, t_r = t_g (k/64). A *teacher* θ* of exactly the student's architecture fits them
  exactly: W1 = (W1_pos; 0) ignores the nuisance, W1_pos and b1 are dyadic (k/8) with every
  pre-activation c_g·W1_pos + b1 at least MLP_MARGIN away from the ReLU's kink, and (W2; b2) is the
  minimum-norm solution of [relu(c_g W1_pos + b1), 1] (W2; b2) = log t_g − mean_c log t_g (G ≤ h + 1
  equations per class, design of full row rank), solved in mpmath at OPT_DPS digits. So
  softmax(teacher(x_r)) = t_r, and because CE(θ) = mean_r H(t_r) + mean_r KL(t_r ‖ p_r) ≥ mean_r H(t_r)
  for every θ, the *global* minimum is known in closed form:

      min CE = (1/N) Σ_r H(t_r),    CE(θ) − min CE = (1/N) Σ_r KL(t_r ‖ p_r(θ)).

  No optimizer, no Newton refinement and no convergence tolerance enter the reference (the MLP's
  optimum is a manifold of exact fits, whose Hessian is singular; it doesn't matter). The teacher's
  W2, b2 are irrational and never fed to a format: the formats see the dyadic x, t and start only.
  Of MLP_CANDIDATES random teachers the one with the best-conditioned Hessian is kept (its nonzero
  eigenvalues still spread over a factor ~400: slow directions, mainly first-layer weights of units
  with small W2 rows). Training starts from θ* + N(0, 0.1²) rounded to multiples of 1/32 (nuisance
  weights included; exact in every format); excess at the start ≈ 0.2.

**Exact excess without cancellation** (linear problems). Let θ* be the optimum and p*_r its
predictions. Because z is linear in θ and the gradient vanishes at θ*, Σ_r x̃_rᵀ(p*_r − t_r) = 0,
so for any θ (δ_r = z_r − z*_r)::

    CE(θ) − CE(θ*) = (1/N) Σ_r [lse(z_r) − lse(z*_r) − t_r·δ_r] = (1/N) Σ_r KL(p*_r ‖ p_r).

Per row, with δ'_c = δ_c − p*·δ (softmax is shift-invariant), a = p*·δ' (≈ 0),
b = Σ_c p*_c (expm1(δ'_c) − δ'_c) ≥ 0 and φ(s) = log1p(s) − s::

    KL(p* ‖ p) = log(Σ_c p*_c e^{δ'_c}) − p*·δ' = log1p(a + b) − a = b + φ(a + b).

b and φ are second-order quantities evaluated by their Taylor series for small arguments, so
nothing cancels; δ is formed in double-double arithmetic from the exact parameter values (the
products x·w by Dekker's TwoProduct, the sums by TwoSum) and z* is kept in double-double, so δ is
accurate even for float64 runs whose δ is 1e-16. The result has a relative error of about 1e-13
(validated against mpmath in tests/test_soft_target_study.py).

The MLP's excess is the same formula with p*_r = t_r and z*_r = log t_r − mean log t_r (in
double-double, from mpmath): KL(t_r ‖ p_r) = b + φ(a + b) with δ_r = z_r − z*_r, where the student's
logits z_r are computed in double-double from the exact parameter values (:func:`dd_mlp_logits`:
TwoProduct/TwoSum through both layers, the ReLU applied to the double-double pre-activation). No
stationarity condition is needed here: KL(t ‖ softmax(z* + δ)) = log Σ_c t_c e^{δ_c} − t·δ holds for
any δ when softmax(z*) = t.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import mpmath
import numpy as np

from precision.exact.double_double import (dd_matmul, excess_kl_rows, logit_difference, two_prod,
                                           two_sum)

__all__ = ["Problem", "make_problem", "PROBLEMS", "mlp_groups", "dd_mlp_logits", "mlp_flat",
           "mlp_gradient64", "mlp_jacobian64"]

PROBLEMS = ("bias-only", "linear", "linear-noisy", "linear-ill-conditioned", "mlp")
TARGET_DENOMINATOR = 64          # targets are k/64
OPT_DPS = 60                     # digits of the optimum


# --------------------------------------------------------------------------------------------------
# data

def _dyadic_targets(probs, rng):
    """Quantize rows of probabilities to k/64 with every k ≥ 1 and Σk = 64 (largest remainder)."""
    n, c = probs.shape
    denominator = TARGET_DENOMINATOR
    free = denominator - c  # every class keeps at least 1/64: targets stay far from one-hot
    scaled = probs * free
    counts = np.floor(scaled).astype(np.int64)
    remainder = scaled - counts
    for r in range(n):
        short = free - counts[r].sum()
        order = np.argsort(-remainder[r], kind="stable")
        counts[r, order[:short]] += 1
    counts += 1
    assert (counts.sum(axis=1) == denominator).all()
    return counts / denominator


def _softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _features(rng, n, d):
    return rng.integers(-8, 9, size=(n, d)) / 4.0


@dataclass
class Problem:
    """One problem: data, initial parameters, and its optimum.

    name, seed, condition (κ for linear-ill-conditioned, else None).
    x: (N, D) float64 features of the linear model, intercept column included (bias-only: a column
        of ones). For the mlp: (N, d) inputs without intercept.
    targets: (N, C) float64 dyadic soft targets (rows sum to 1).
    init: dict of float64 dyadic initial parameters ("w" for linear; "w1", "b1", "w2", "b2" mlp).
    min_loss: the minimum of CE as an mpmath mpf (OPT_DPS digits) and min_loss64 its float64.
    p_star: (N, C) predictions at the optimum (float64); z_star_hi, z_star_lo: its logits as
        double-doubles (linear problems).
    w_star: optimum parameters (float64) of the linear model with the same per-row sums
        Σ_c w_jc as the initial parameters (the optimum gradient descent converges to: GD keeps those
        sums, since every gradient row sums to 0 over classes). MLP: the teacher θ* flattened
        (:func:`mlp_flat` order); mlp_star: the teacher as a dict (float64), mlp_star_mp: its
        second layer in mpmath.
    hessian: the Hessian of CE at the optimum, (D·C) × (D·C), row-major over (j, c) (float64); MLP:
        at the teacher, P × P in mlp_flat order (exactly the Gauss–Newton matrix, since p = t there).
    """

    name: str
    seed: int
    x: np.ndarray
    targets: np.ndarray
    init: dict
    kind: str                              # "linear" or "mlp"
    condition: float | None = None
    min_loss: object = None
    min_loss64: float = math.nan
    p_star: np.ndarray | None = None
    z_star_hi: np.ndarray | None = None
    z_star_lo: np.ndarray | None = None
    w_star: np.ndarray | None = None
    w_star_mp: object = None               # linear: object array of mpf (reference class 0)
    hessian: np.ndarray | None = None
    mlp_star: dict | None = None
    mlp_star_mp: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return self.targets.shape[0]

    @property
    def n_classes(self) -> int:
        return self.targets.shape[1]

    # ---------------------------------------------------------------- exact evaluation
    def excess(self, params) -> float:
        """CE(params) − min CE, exactly up to ~1e-13 relative (float64 result, ≥ 0).

        params: {"w": (D, C)} for linear problems, or the MLP's {"w1", "b1", "w2", "b2"} (any float
        dtype; taken exactly): mean_r KL(p*_r ‖ p_r) from double-double logits (module docstring;
        for the MLP p* = t). Non-finite parameters give +inf.
        """
        if self.kind == "linear":
            w = np.asarray(params["w"]).astype(np.float64)
            if not np.isfinite(w).all():
                return math.inf
            hi, lo = dd_matmul(self.x, w)
        else:
            if not np.isfinite(mlp_flat(params)).all():
                return math.inf
            hi, lo = dd_mlp_logits(self.x, params)
        delta = logit_difference(hi, lo, self.z_star_hi, self.z_star_lo)
        return float(np.mean(excess_kl_rows(self.p_star, delta)))

    def logits_mp(self, params):
        """Exact logits as nested lists of mpf (at the current mpmath precision)."""
        if self.kind == "linear":
            w = np.asarray(params["w"]).astype(np.float64)
            rows = []
            for xr in self.x.tolist():
                rows.append([mpmath.fsum(mpmath.mpf(xj) * mpmath.mpf(w[j, c])
                                         for j, xj in enumerate(xr)) for c in range(w.shape[1])])
            return rows
        w1, b1, w2, b2 = (np.asarray(params[k]).astype(np.float64) for k in ("w1", "b1", "w2", "b2"))
        rows = []
        for xr in self.x.tolist():
            hidden = []
            for k in range(w1.shape[1]):
                pre = mpmath.fsum(mpmath.mpf(xj) * mpmath.mpf(w1[j, k]) for j, xj in enumerate(xr))
                pre += mpmath.mpf(b1[k])
                hidden.append(pre if pre > 0 else mpmath.mpf(0))
            rows.append([mpmath.fsum(h * mpmath.mpf(w2[k, c]) for k, h in enumerate(hidden))
                         + mpmath.mpf(b2[c]) for c in range(w2.shape[1])])
        return rows

    def loss_mp(self, params, dps: int = 50):
        """CE(params) in mpmath with `dps` digits."""
        with mpmath.workdps(dps):
            total = mpmath.mpf(0)
            for z, t in zip(self.logits_mp(params), self.targets.tolist()):
                lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
                total += mpmath.fsum(mpmath.mpf(tc) * (lse - zc) for tc, zc in zip(t, z))
            return total / self.n_rows

    def excess_mp(self, params, dps: int = 50):
        """CE(params) − min CE in mpmath (`dps` digits; min CE known to OPT_DPS digits)."""
        if not all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in params.values()):
            return mpmath.inf
        with mpmath.workdps(dps):
            return self.loss_mp(params, dps) - self.min_loss

    def gradient_mp(self, params, dps: int = 30):
        """The exact gradient of CE as an object array of mpf: (D, C) for the linear model's w; for
        the MLP a flat vector in :func:`mlp_flat` order (backpropagation in mpmath)."""
        if self.kind == "mlp":
            return self._mlp_gradient_mp(params, dps)
        with mpmath.workdps(dps):
            z = self.logits_mp(params)
            n, c = self.targets.shape
            resid = []
            for zr, tr in zip(z, self.targets.tolist()):
                m = max(zr)
                e = [mpmath.exp(v - m) for v in zr]
                s = mpmath.fsum(e)
                resid.append([ec / s - tc for ec, tc in zip(e, tr)])
            d = self.x.shape[1]
            grad = np.empty((d, c), dtype=object)
            for j in range(d):
                col = self.x[:, j].tolist()
                for k in range(c):
                    grad[j, k] = mpmath.fsum(mpmath.mpf(col[r]) * resid[r][k] for r in range(n)) / n
            return grad


    def _mlp_gradient_mp(self, params, dps):
        w1, b1, w2, b2 = (np.asarray(params[k]).astype(np.float64) for k in ("w1", "b1", "w2", "b2"))
        d, h = w1.shape
        c = w2.shape[1]
        n = self.n_rows
        with mpmath.workdps(dps):
            m = lambda a: [[mpmath.mpf(v) for v in row] for row in a.tolist()]   # noqa: E731
            w1m, w2m = m(w1), m(w2)
            b1m, b2m = [mpmath.mpf(v) for v in b1.tolist()], [mpmath.mpf(v) for v in b2.tolist()]
            g_w1 = [[mpmath.mpf(0)] * h for _ in range(d)]
            g_b1 = [mpmath.mpf(0)] * h
            g_w2 = [[mpmath.mpf(0)] * c for _ in range(h)]
            g_b2 = [mpmath.mpf(0)] * c
            for xr, tr in zip(m(self.x), self.targets.tolist()):
                pre = [mpmath.fsum(xr[j] * w1m[j][k] for j in range(d)) + b1m[k] for k in range(h)]
                hid = [v if v > 0 else mpmath.mpf(0) for v in pre]
                z = [mpmath.fsum(hid[k] * w2m[k][j] for k in range(h)) + b2m[j] for j in range(c)]
                top = max(z)
                e = [mpmath.exp(v - top) for v in z]
                total = mpmath.fsum(e)
                g = [(ej / total - mpmath.mpf(tj)) / n for ej, tj in zip(e, tr)]
                for j in range(c):
                    g_b2[j] += g[j]
                for k in range(h):
                    for j in range(c):
                        g_w2[k][j] += hid[k] * g[j]
                    if pre[k] > 0:
                        back = mpmath.fsum(g[j] * w2m[k][j] for j in range(c))
                        g_b1[k] += back
                        for i in range(d):
                            g_w1[i][k] += xr[i] * back
            flat = [v for row in g_w1 for v in row] + g_b1 + [v for row in g_w2 for v in row] + g_b2
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out


# --------------------------------------------------------------------------------------------------
# optimum of the linear problems

def _ce_grad_hess64(x, t, w):
    """Gradient (D, C) and Hessian (DC, DC) of the mean CE of a linear model, in float64."""
    n = x.shape[0]
    p = _softmax64(x @ w)
    grad = x.T @ (p - t) / n
    d, c = w.shape
    hess = np.zeros((d * c, d * c))
    for r in range(n):
        cov = np.diag(p[r]) - np.outer(p[r], p[r])
        hess += np.kron(np.outer(x[r], x[r]), cov)
    return grad, hess / n


def _mp_gradient(x, t, w_mp):
    n, d = x.shape
    c = t.shape[1]
    xm = [[mpmath.mpf(v) for v in row] for row in x.tolist()]
    grad = [[mpmath.mpf(0)] * c for _ in range(d)]
    z_all = []
    for r in range(n):
        z = [mpmath.fsum(xm[r][j] * w_mp[j][k] for j in range(d)) for k in range(c)]
        z_all.append(z)
        m = max(z)
        e = [mpmath.exp(v - m) for v in z]
        s = mpmath.fsum(e)
        for k in range(c):
            resid = e[k] / s - mpmath.mpf(t[r, k])
            for j in range(d):
                grad[j][k] += xm[r][j] * resid
    return [[g / n for g in row] for row in grad], z_all


def optimum(x, t):
    """Minimizer of the mean CE of a linear model, class 0's weights fixed at 0 (identifiable).

    Newton's method in float64, then three refinement steps with the gradient evaluated in mpmath
    at OPT_DPS digits (θ ← θ − H⁻¹ g, the correction solved in float64): each step multiplies the
    gradient by about κ(H)·2^-53, so the optimum is accurate to far beyond float64.
    Returns (w_mp as nested lists of mpf, min CE mpf, z* as nested lists of mpf, Hessian (float64)).
    """
    n, d = x.shape
    c = t.shape[1]
    w = np.zeros((d, c))
    free = np.s_[:, 1:]
    for _ in range(100):
        grad, hess = _ce_grad_hess64(x, t, w)
        idx = [j * c + k for j in range(d) for k in range(1, c)]
        step = np.linalg.solve(hess[np.ix_(idx, idx)], grad[free].reshape(-1))
        w[free] -= step.reshape(d, c - 1)
        if np.max(np.abs(step)) < 1e-15 * max(1.0, np.max(np.abs(w))):
            break
    _, hess = _ce_grad_hess64(x, t, w)
    h_free = hess[np.ix_(idx, idx)]
    with mpmath.workdps(OPT_DPS):
        w_mp = [[mpmath.mpf(v) for v in row] for row in w.tolist()]
        for _ in range(3):
            grad_mp, _ = _mp_gradient(x, t, w_mp)
            g = np.array([[float(v) for v in row[1:]] for row in grad_mp]).reshape(-1)
            step = np.linalg.solve(h_free, g).reshape(d, c - 1)
            for j in range(d):
                for k in range(1, c):
                    w_mp[j][k] -= mpmath.mpf(step[j, k - 1])
        grad_mp, z_star = _mp_gradient(x, t, w_mp)
        total = mpmath.mpf(0)
        for z, tr in zip(z_star, t.tolist()):
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
            total += mpmath.fsum(mpmath.mpf(tc) * (lse - zc) for tc, zc in zip(tr, z))
        min_loss = total / n
        residual = max(abs(v) for row in grad_mp for v in row)
    return w_mp, min_loss, z_star, hess, float(residual)


def _finish_linear(problem: Problem) -> Problem:
    x, t = problem.x, problem.targets
    w_mp, min_loss, z_star, hess, residual = optimum(x, t)
    problem.min_loss = min_loss
    problem.min_loss64 = float(min_loss)
    with mpmath.workdps(OPT_DPS):
        hi = np.array([[float(v) for v in row] for row in z_star])
        lo = np.array([[float(v - mpmath.mpf(h)) for v, h in zip(row, hrow)]
                       for row, hrow in zip(z_star, hi.tolist())])
        p_star = []
        for row in z_star:
            m = max(row)
            e = [mpmath.exp(v - m) for v in row]
            s = mpmath.fsum(e)
            p_star.append([float(v / s) for v in e])
    problem.z_star_hi, problem.z_star_lo = hi, lo
    problem.p_star = np.array(p_star)
    problem.w_star_mp = w_mp
    w = np.array([[float(v) for v in row] for row in w_mp])
    # GD keeps each weight row's sum over classes: the optimum it converges to.
    row_sums = problem.init["w"].sum(axis=1, keepdims=True)
    problem.w_star = w - w.mean(axis=1, keepdims=True) + row_sums / w.shape[1]
    problem.hessian = hess
    eig = np.linalg.eigvalsh(hess)
    positive = eig[eig > 1e-12 * eig.max()]
    problem.info.update(optimum_gradient_residual=residual,
                        hessian_condition=float(positive.max() / positive.min()),
                        hessian_max_eigenvalue=float(eig.max()))
    return problem


# --------------------------------------------------------------------------------------------------
# the problems

def _init_weights(rng, shape):
    return rng.integers(-8, 9, size=shape) / 16.0


@functools.lru_cache(maxsize=None)
def make_problem(name: str, seed: int = 0, condition: float | None = None, size: str = "quick") -> Problem:
    """The problem `name` (one of PROBLEMS) for a seed; `condition` is κ for linear-ill-conditioned.

    Deterministic: the same arguments give the same data, optimum and evaluators (cached per process).
    size "quick" or "full" (full: more rows and classes).
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; expected one of {PROBLEMS}")
    big = size == "full"
    rng = np.random.default_rng([seed, PROBLEMS.index(name), 2024])
    if name == "mlp":
        return _mlp_problem(rng, seed, size)
    if name == "bias-only":
        n, c = 64, 3
        # mean target near the post's example (0.39, 0.44, 0.17), every row soft
        probs = rng.dirichlet(np.array([0.39, 0.44, 0.17]) * 12.0, size=n)
        t = _dyadic_targets(probs, rng)
        x = np.ones((n, 1))
        init = {"w": np.zeros((1, c))}
        return _finish_linear(Problem(name, seed, x, t, init, "linear"))
    if name == "linear":
        groups, n_cont, c = 4, 4, 4
        n = 128 if not big else 256
        sizes = np.array([24, 32, 32, 40]) * (n // 128)
        group_targets = _dyadic_targets(rng.dirichlet(np.full(c, 3.0), size=groups), rng)
        rows_x, rows_t = [], []
        for g, size_g in enumerate(sizes):
            half = _features(rng, size_g // 2, n_cont)
            u = np.concatenate([half, -half])      # zero mean inside the group
            onehot = np.zeros((size_g, groups))
            onehot[:, g] = 1.0
            rows_x.append(np.concatenate([onehot, u], axis=1))
            rows_t.append(np.repeat(group_targets[g:g + 1], size_g, axis=0))
        x = np.concatenate(rows_x)
        t = np.concatenate(rows_t)
        init = {"w": _init_weights(rng, (groups + n_cont, c))}
        return _finish_linear(Problem(name, seed, x, t, init, "linear"))
    # misspecified data, shared by linear-noisy, linear-ill-conditioned and mlp
    n, d, c = (128, 6, 4) if not big else (256, 8, 5)
    x = _features(rng, n, d)
    w_true = rng.normal(size=(d, c)) * 0.5
    probs = _softmax64(x @ w_true + rng.normal(size=(n, c)) * 0.7)
    t = _dyadic_targets(probs, rng)
    if name == "linear-ill-conditioned":
        condition = float(condition if condition is not None else 1e4)
        kappa = condition
        shifts = np.round(np.linspace(0.0, math.log2(math.sqrt(kappa)), d)).astype(int)
        x = x * 2.0 ** (-shifts)
    if name in ("linear-noisy", "linear-ill-conditioned"):
        xt = np.concatenate([x, np.ones((n, 1))], axis=1)
        init = {"w": _init_weights(rng, (d + 1, c))}
        problem = Problem(name, seed, xt, t, init, "linear",
                          condition=float(condition) if name == "linear-ill-conditioned" else None)
        return _finish_linear(problem)


MLP_SHAPE = {"quick": dict(groups=6, hidden=6, rows=128), "full": dict(groups=6, hidden=6, rows=256)}
MLP_MARGIN = 0.125
MLP_CANDIDATES = 2000  # teacher first layers tried (the best-conditioned one is kept)
MLP_START_NOISE = 0.1  # standard deviation of the start's perturbation of the teacher    # |teacher pre-activation| ≥ this for every (group, unit): no ReLU kink near θ*


def mlp_flat(params) -> np.ndarray:
    """The MLP's parameters as one float64 vector, in the order w1, b1, w2, b2 (each row-major)."""
    return np.concatenate([np.asarray(params[k]).astype(np.float64).ravel()
                           for k in ("w1", "b1", "w2", "b2")])


def dd_mlp_logits(x, params):
    """The MLP's logits relu(x W1 + b1) W2 + b2 from the exact parameter values, as a double-double.

    x: (N, d) dyadic features (≤ 6 significant bits, so every x·w is exact by TwoProduct); the first
    layer is summed in double-double (its error is ~2^-100 |x||W1|); the ReLU is applied to the
    double-double value (its sign is the sign of hi); the second layer multiplies each hidden
    double-double (h, l) by w exactly on h (TwoProduct) and with one rounding on l·w (~2^-106 relative).
    """
    w1, b1, w2, b2 = (np.asarray(params[k]).astype(np.float64) for k in ("w1", "b1", "w2", "b2"))
    hi, lo = dd_matmul(x, w1)
    hi, e = two_sum(hi, np.broadcast_to(b1, hi.shape))
    hi, lo = two_sum(hi, lo + e)
    active = hi > 0
    hi = np.where(active, hi, 0.0)
    lo = np.where(active, lo, 0.0)
    n, c = x.shape[0], w2.shape[1]
    z_hi = np.broadcast_to(b2, (n, c)).copy()
    z_lo = np.zeros((n, c))
    for k in range(w2.shape[0]):
        p, e = two_prod(hi[:, k:k + 1], w2[k:k + 1, :])
        z_hi, err = two_sum(z_hi, p)
        z_lo += err + e + lo[:, k:k + 1] * w2[k:k + 1, :]
    return two_sum(z_hi, z_lo)


def mlp_gradient64(x, targets, params) -> dict:
    """∇CE of the MLP in float64 (backpropagation; the mask of the ReLU is taken where x W1 + b1 > 0)."""
    w1, b1, w2, b2 = (np.asarray(params[k]).astype(np.float64) for k in ("w1", "b1", "w2", "b2"))
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    g = (_softmax64(hidden @ w2 + b2) - targets) / x.shape[0]
    d_pre = (g @ w2.T) * (pre > 0)
    return {"w1": x.T @ d_pre, "b1": d_pre.sum(axis=0), "w2": hidden.T @ g, "b2": g.sum(axis=0)}


def mlp_groups(problem) -> np.ndarray:
    """(N,) group index of each row of the MLP problem: rows with the same centre (the first two
    inputs) form a group and share their targets."""
    _, index = np.unique(np.asarray(problem.x)[:, :2], axis=0, return_inverse=True)
    return np.asarray(index).ravel()


def mlp_jacobian64(x, params) -> np.ndarray:
    """∂z_rc/∂θ (N, C, P) in float64, θ in :func:`mlp_flat` order."""
    w1, b1, w2, b2 = (np.asarray(params[k]).astype(np.float64) for k in ("w1", "b1", "w2", "b2"))
    n, d = x.shape
    h, c = w2.shape
    pre = x @ w1 + b1
    mask = (pre > 0).astype(np.float64)
    hidden = pre * mask
    eye = np.eye(c)
    # z_c = Σ_k hidden_k W2[k, c] + b2[c]
    j_w1 = x[:, None, :, None] * (mask[:, None, None, :] * w2.T[None, :, None, :])   # (N, C, d, h)
    j_b1 = mask[:, None, :] * w2.T[None, :, :]                                      # (N, C, h)
    j_w2 = hidden[:, None, :, None] * eye[None, :, None, :]                         # (N, C, h, C)
    j_b2 = np.broadcast_to(eye, (n, c, c))
    return np.concatenate([j_w1.reshape(n, c, -1), j_b1, j_w2.reshape(n, c, -1), j_b2], axis=2)


def _gauss_newton(x, targets, params):
    """(1/N) Σ_r J_rᵀ (diag t_r − t_r t_rᵀ) J_r: the Hessian of CE at a point where p_r = t_r."""
    jac = mlp_jacobian64(x, params)
    c = targets.shape[1]
    cov = np.einsum("rc,cd->rcd", targets, np.eye(c)) - np.einsum("rc,rd->rcd", targets, targets)
    return np.einsum("rcp,rcd,rdq->pq", jac, cov, jac) / x.shape[0]


def _nonzero_condition(hessian):
    eig = np.linalg.eigvalsh(hessian)
    positive = eig[eig > 1e-10 * eig.max()]
    return float(positive.max() / positive.min()), eig, positive


def _teacher_first_layer(rng, group_targets, group, nuisance_x, hidden, candidates):
    """Dyadic group centres (G, 2), first layer (2, h) and b1 (h,) of the teacher.

    Of `candidates` random draws with every |pre-activation| ≥ MLP_MARGIN and every unit active for
    some groups and inactive for others, the one whose teacher (second layer fitted in float64, see
    :func:`_mlp_problem`) has the Hessian of largest rank and, among those, the smallest condition
    number (nonzero eigenvalues), so that gradient descent reaches the precision floors quickly.
    """
    groups = group_targets.shape[0]
    centred = np.log(group_targets) - np.log(group_targets).mean(axis=1, keepdims=True)
    best, best_key = None, (0, math.inf)
    for _ in range(candidates):
        centres = rng.integers(-4, 5, size=(groups, 2)) / 2.0
        w1 = rng.integers(-8, 9, size=(2, hidden)) / 8.0
        b1 = rng.integers(-8, 9, size=hidden) / 8.0
        if len({tuple(c) for c in centres.tolist()}) < groups:
            continue
        pre = centres @ w1 + b1
        active = pre > 0
        if np.min(np.abs(pre)) < MLP_MARGIN or not (active.any(axis=0) & ~active.all(axis=0)).all():
            continue
        design = np.concatenate([np.maximum(pre, 0.0), np.ones((groups, 1))], axis=1)
        if np.linalg.matrix_rank(design) < groups:
            continue
        second = np.linalg.lstsq(design, centred, rcond=None)[0]
        star = {"w1": np.concatenate([w1, np.zeros((nuisance_x.shape[1], hidden))]), "b1": b1,
                "w2": second[:hidden], "b2": second[hidden]}
        x = np.concatenate([centres[group], nuisance_x], axis=1)
        condition, _, positive = _nonzero_condition(_gauss_newton(x, group_targets[group], star))
        key = (-positive.size, condition)   # a full-rank teacher first (no unit with a flat W2 row)
        if key < best_key:
            best, best_key = (centres, w1, b1), key
    if best is None:
        raise RuntimeError("no teacher first layer found")
    return best


def _mlp_problem(rng, seed, size) -> Problem:
    """The realizable MLP problem (module docstring): targets k/64 fitted exactly by a teacher θ*."""
    shape = MLP_SHAPE["full" if size == "full" else "quick"]
    groups, hidden, n = shape["groups"], shape["hidden"], shape["rows"]
    c, nuisance = 3, 2
    group_targets = _dyadic_targets(rng.dirichlet(np.full(c, 3.0), size=groups), rng)
    sizes = np.full(groups, n // groups)
    sizes[: n - sizes.sum()] += 1
    group = np.repeat(np.arange(groups), sizes)
    nuisance_x = _features(rng, n, nuisance)
    centres, w1_pos, b1 = _teacher_first_layer(rng, group_targets, group, nuisance_x, hidden,
                                               MLP_CANDIDATES)
    x = np.concatenate([centres[group], nuisance_x], axis=1)
    t = group_targets[group]
    w1 = np.concatenate([w1_pos, np.zeros((nuisance, hidden))])   # the teacher ignores the nuisance
    # Second layer: the minimum-norm (W2; b2) with [relu(pre_g), 1] (W2; b2) = log t_g − mean_c log t_g,
    # solved in mpmath: softmax of the teacher's logits is t_g exactly (to OPT_DPS digits).
    with mpmath.workdps(OPT_DPS):
        pre = centres @ w1_pos + b1                           # exact (dyadic)
        design = mpmath.matrix([[mpmath.mpf(max(v, 0.0)) for v in row] + [mpmath.mpf(1)]
                                for row in pre.tolist()])
        logt = [[mpmath.log(mpmath.mpf(v)) for v in row] for row in group_targets.tolist()]
        centred = mpmath.matrix([[v - mpmath.fsum(row) / c for v in row] for row in logt])
        second = design.T * (mpmath.inverse(design * design.T) * centred)   # (h + 1, C)
        w2_mp = [[second[k, j] for j in range(c)] for k in range(hidden)]
        b2_mp = [second[hidden, j] for j in range(c)]
        # realizability check: the teacher's softmax against the targets
        misfit = mpmath.mpf(0)
        for g in range(groups):
            z = [mpmath.fsum(design[g, k] * second[k, j] for k in range(hidden + 1)) for j in range(c)]
            s = mpmath.fsum(mpmath.exp(v) for v in z)
            misfit = max(misfit, max(abs(mpmath.exp(v) / s - mpmath.mpf(tv))
                                     for v, tv in zip(z, group_targets[g].tolist())))
        entropy_g = [-mpmath.fsum(mpmath.mpf(v) * mpmath.log(mpmath.mpf(v)) for v in row)
                     for row in group_targets.tolist()]
        min_loss = mpmath.fsum(entropy_g[g] * int(sizes[g]) for g in range(groups)) / n
        # the optimum's logits per row (log t − mean log t) as double-doubles
        z_hi_g = np.array([[float(centred[g, j]) for j in range(c)] for g in range(groups)])
        z_lo_g = np.array([[float(centred[g, j] - mpmath.mpf(z_hi_g[g, j])) for j in range(c)]
                           for g in range(groups)])
    star = {"w1": w1, "b1": b1.copy(), "w2": np.array([[float(v) for v in row] for row in w2_mp]),
            "b2": np.array([float(v) for v in b2_mp])}
    # Training starts from the teacher perturbed by N(0, 0.1²) noise (nuisance weights included),
    # rounded to multiples of 1/32 (|θ| < 4: at most 7 significant bits, exact in every format).
    start = {k: np.clip(np.round((v + rng.normal(size=v.shape) * MLP_START_NOISE) * 32.0) / 32.0,
                        -3.96875, 3.96875) for k, v in star.items()}
    problem = Problem("mlp", seed, x, t, start, "mlp")
    problem.mlp_star = star
    problem.mlp_star_mp = {"w2": w2_mp, "b2": b2_mp}
    problem.min_loss = min_loss
    problem.min_loss64 = float(min_loss)
    problem.p_star = t.copy()
    problem.z_star_hi, problem.z_star_lo = z_hi_g[group], z_lo_g[group]
    problem.w_star = mlp_flat(star)
    # At a realizable optimum p = t, so the Hessian is exactly the Gauss–Newton matrix
    # (1/N) Σ_r J_rᵀ (diag t_r − t_r t_rᵀ) J_r.
    problem.hessian = _gauss_newton(x, t, star)
    condition, eig, positive = _nonzero_condition(problem.hessian)
    problem.info.update(
        optimum_gradient_residual=float(misfit), teacher_max_abs_p_minus_t=float(misfit),
        hessian_condition=condition, hessian_max_eigenvalue=float(eig.max()),
        hessian_null_dimension=int(eig.size - positive.size), groups=groups, hidden=hidden,
        teacher_min_abs_preactivation=float(np.min(np.abs(pre))))
    return problem
