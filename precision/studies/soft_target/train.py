"""The soft-target stall study: train in each format with this project's kernels and measure exactly.

One cell = one training run: a problem (:mod:`precision.studies.soft_target.problems`), a storage format and an
accumulation format, an optimizer (gd, momentum, adam, lbfgs) with its state format, and a variant
(``plain``, or the attribution runs ``exact-gradient`` and ``master-f64``). All training arithmetic
goes through the project's kernels:

    logits      Z = matmul(X̃, W)                     (precision.linalg.matmul; the intercept is a
                                                       column of ones in X̃, so it is summed in order)
    loss, G     softmax_cross_entropy(Z, T, reduction="mean", return_grad=True, accum=A)
    gradient    ∇W = matmul(X̃ᵀ, G)                   (X̃ᵀ a transposed view, pairwise sums over rows)
    update      precision.optim SGD / Adam ``step(W, ∇W)`` in place, in W's format

(the MLP, z = [relu(X̃ W̃1), 1] W̃2 with X̃ = [X, 1] and W̃ = [W; b], runs forward and backward through
the same matmul; the ReLU and its derivative mask are exact in any format).
L-BFGS is scipy's L-BFGS-B with objective and gradient computed as above on the parameters rounded
to the format, cast to float64 for scipy, and ftol = gtol = 0, so it stops only when its line search
finds no decrease of the reported loss (or at maxiter).

Measured per iteration i (the parameters θ_i the run holds before update i; θ_T after the last):
``reported_loss[i]`` (the format's value), ``rounded_away[i]`` (the share of parameters left
unchanged by update i although their gradient was nonzero), and, on a schedule (every iteration up
to 64, then every ~6 %), ``exact_excess`` = CE(θ_i) − min CE, evaluated exactly (problems.py). The
gradient's error against the exact gradient is measured at a few iterations. Stall detection
(precision.study.stall): the patience rule on the reported loss (patience 10; 50 for momentum, whose
loss oscillates on a 1/(1 − β) time scale; 1 for L-BFGS, whose steps are line searches, and L-BFGS
runs that stop by themselves freeze at their last iterate), the final-band rule, and the floor of
the exact excess.

Attribution variants (gradient descent and Adam): ``exact-gradient`` — the gradient computed in
float64 from the held parameters and rounded once to the format, then the format's update (isolates
update swamping); ``master-f64`` — the format's gradient (its kernels on the parameters rounded to the
format) applied to float64 master weights by the same optimizer run in float64 (state included), whose
excess is measured (isolates gradient resolution). Adam only: ``eps-stable`` — Adam in the format
with ε raised to ε_s = 2^ceil(log2(lr·λ_max/4)) (:func:`stable_adam_eps`), which caps its largest
effective step lr/(√v̂ + ε) at 4/λ_max.

Adam's stability (recorded for every Adam cell): near θ*, with D = diag(lr/(√v̂_i + ε)) frozen, the
iteration m ← β1 m + (1 − β1) g, θ ← θ − D m on the quadratic model is, along each eigenvector of
D^½ H D^½ with eigenvalue a, x_{t+1} = (1 + β1 − (1 − β1) a) x_t − β1 x_{t−1}: stable iff
a < A_c = 2(1 + β1)/(1 − β1) (= 38 for β1 = 0.9; Cohen et al. 2022, "Adaptive gradient methods at
the edge of stability"). ``adam_sharpness`` is λ_max(D^½ H D^½) at the iterations
``adam_sharpness_iterations`` (H: the Hessian at θ*; bias corrections included in v̂). Once the
gradient has vanished, v̂ decays by β2 per step, the preconditioned sharpness grows like β2^(−t/2)
up to lr·λ_max/ε, and when it crosses A_c the iterate is unstable along the top direction: the excess
grows until the gradient refills v̂. ``eps-stable`` keeps lr·λ_max/ε ≤ 4 < A_c.
"""
from __future__ import annotations

import math
import os
import warnings

# Cells run in parallel processes on problems of a few dozen parameters, and scipy's L-BFGS-B calls
# its own OpenBLAS on tiny vectors thousands of times per cell: a BLAS thread pool only adds wake-ups
# (and, on a busy machine, spinning). One BLAS thread per cell process unless the user set it; this
# must run before scipy is first imported, which the study does lazily.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from precision import formats as _formats
from precision.linalg import matmul as _matmul
from . import theory
from .problems import make_problem, mlp_gradient64
from precision.study.stall import floor, loss_freeze_iteration

def matmul(a, b, *, accum=None):
    """precision.linalg.matmul on one thread: a study runs its cells in parallel processes, and
    these products are small (threads would only add OpenMP start-up and, on a busy machine,
    spinning). Bit-identical for any thread count."""
    return _matmul(a, b, accum=accum, num_threads=1)


__all__ = ["run_cell", "summarize", "eval_schedule", "SUMMARY_COLUMNS", "hyperparameters",
           "DEFAULTS"]

DEFAULTS = {
    "momentum": 0.9,
    "adam_lr": 1e-2,
    "adam_betas": (0.9, 0.999),
    "adam_eps": 1e-8,
    "patience": 10,
    "lbfgs_patience": 1,
    "momentum_patience": 50,     # heavy ball's loss is not monotone on a ~1/(1 − β) time scale
    "adam_stable_cap": 4.0,      # eps-stable: lr·λ_max/ε ≤ this (< 2(1 + β1)/(1 − β1) = 38)
}
VARIANTS = ("plain", "exact-gradient", "master-f64", "eps-stable")
DENSE_EVALUATIONS = 64
SCHEDULE_RATIO = 1.06
GRADIENT_SAMPLES = (0, 10, 100, 1000, 10000)

SUMMARY_COLUMNS = [
    "loss_freeze_iteration", "loss_freeze_band_iteration", "excess_at_loss_freeze", "excess_floor",
    "floor_status", "floor_iteration", "final_excess", "final_reported_loss", "min_loss",
    "loss_resolution", "unit_roundoff", "predicted_excess_at_loss_freeze",
    "freeze_ratio", "predicted_floor", "floor_ratio", "predicted_swamping_floor",
    "predicted_gradient_floor", "predicted_representation_floor", "predicted_line_search_floor",
    "excess_floor_over_u2", "rounded_away_final", "grad_rel_error_final", "blew_up_iteration",
    "iterations_run", "lr", "adam_eps", "min_excess", "min_excess_iteration", "max_excess_after_min",
    "rebound_iteration", "sharpness_at_rebound", "adam_unstable_iteration", "hessian_condition",
    "stop_message",
]
BLOW_UP_COLUMNS = ["blow_up_nonfinite", "blow_up_x_over_0", "blow_up_0_over_0", "blow_up_other"]
SUMMARY_COLUMNS += BLOW_UP_COLUMNS + ["lr_times_lambda_max", "adam_lr_lambda_over_eps"]
REBOUND_FACTOR = 100.0   # a rebound: the excess rises above this × max(its running minimum, u²)


# --------------------------------------------------------------------------------------------------
# kernels (through the public API)

def _loss_and_logit_grad(logits, targets, accum):
    from precision.losses import softmax_cross_entropy

    loss, grad = softmax_cross_entropy(logits, targets, reduction="mean", return_grad=True,
                                       accum=accum, num_threads=1)
    return loss, grad


def _make_optimizer(name, hyper, fmt, state_format):
    from precision import optim

    if name in ("gd", "momentum"):
        return optim.SGD(lr=hyper["lr"], momentum=hyper["momentum"])
    if name == "adam":
        return optim.Adam(lr=hyper["lr"], betas=(DEFAULTS["adam_betas"][0], hyper["beta2"]), eps=hyper["eps"],
                          state_format=None if state_format == fmt.name else state_format)
    raise ValueError(f"unknown optimizer {name!r}")


# --------------------------------------------------------------------------------------------------
# models

class _Model:
    """Loss and parameter gradients of a problem's model in one format (storage S, accumulation A)."""

    def __init__(self, problem, fmt, accum):
        self.problem = problem
        self.fmt = fmt
        self.accum = accum
        self.x = fmt.round(problem.x)
        self.targets = fmt.round(problem.targets)
        assert np.array_equal(self.x.astype(np.float64), problem.x), "features not exact in the format"
        assert np.array_equal(self.targets.astype(np.float64), problem.targets), "targets not exact"
        self.names = ("w",) if problem.kind == "linear" else ("w1", "b1", "w2", "b2")
        if problem.kind == "mlp":   # x̃ = [x, 1]: the first layer's bias is summed by matmul too
            self.x_aug = np.concatenate([self.x, np.ones((problem.n_rows, 1), dtype=fmt.dtype)], axis=1)

    def init(self):
        return {k: self.fmt.round(self.problem.init[k]) for k in self.names}

    def loss_and_grads(self, params):
        acc = self.accum.name
        if self.problem.kind == "linear":
            z = matmul(self.x, params["w"], accum=acc)
            loss, g = _loss_and_logit_grad(z, self.targets, acc)
            return loss, {"w": matmul(self.x.T, g, accum=acc)}
        # biases as the last row of each layer's weights, inputs with a trailing column of ones
        # (exact copies: concatenation does no arithmetic)
        w1, b1, w2, b2 = (params[k] for k in self.names)
        zero = np.zeros((), dtype=self.fmt.dtype)
        pre = matmul(self.x_aug, np.concatenate([w1, b1[None, :]]), accum=acc)
        hidden = np.concatenate([np.maximum(pre, zero), np.ones((pre.shape[0], 1), dtype=pre.dtype)],
                                axis=1)                                  # [relu(pre), 1]
        z = matmul(hidden, np.concatenate([w2, b2[None, :]]), accum=acc)
        loss, g = _loss_and_logit_grad(z, self.targets, acc)
        d_pre = np.where(pre > 0, matmul(g, w2.T, accum=acc), zero)   # ReLU's mask: exact
        g1 = matmul(self.x_aug.T, d_pre, accum=acc)
        g2 = matmul(hidden.T, g, accum=acc)
        return loss, {"w1": g1[:-1], "b1": g1[-1], "w2": g2[:-1], "b2": g2[-1]}

    def exact_gradient64(self, params):
        """∇CE in float64 from the exact parameter values (error ~1e-16 |x||p − t|)."""
        if self.problem.kind == "mlp":
            return mlp_gradient64(self.problem.x, self.problem.targets,
                                  {k: params[k].astype(np.float64) for k in self.names})
        w = params["w"].astype(np.float64)
        z = self.problem.x @ w
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        return {"w": self.problem.x.T @ (p - self.problem.targets) / self.problem.n_rows}


def _flat(params, names):
    return np.concatenate([np.asarray(params[k], dtype=np.float64).ravel() for k in names])


def _unflat(theta, like, names):
    out, i = {}, 0
    for k in names:
        size = like[k].size
        out[k] = theta[i:i + size].reshape(like[k].shape)
        i += size
    return out


# --------------------------------------------------------------------------------------------------
# hyperparameters

def stable_adam_eps(problem, lr: float) -> float:
    """ε_s = 2^ceil(log2(lr·λ_max/c)), c = DEFAULTS["adam_stable_cap"]: the smallest power of two with
    lr·λ_max/ε ≤ c, so Adam's preconditioned sharpness never exceeds c < 2(1 + β1)/(1 − β1)."""
    lam = problem.info.get("hessian_max_eigenvalue", 1.0)
    return 2.0 ** math.ceil(math.log2(lr * lam / DEFAULTS["adam_stable_cap"]))


def adam_stability_threshold(beta1: float | None = None) -> float:
    """A_c = 2(1 + β1)/(1 − β1): the largest stable eigenvalue of D^½ H D^½ (module docstring)."""
    beta1 = DEFAULTS["adam_betas"][0] if beta1 is None else beta1
    return 2.0 * (1.0 + beta1) / (1.0 - beta1)


def hyperparameters(problem, optimizer: str, variant: str = "plain", *, lr_lambda=None, adam_lr=None,
                    eps_ratio=None, adam_beta2=None) -> dict:
    """lr (a power of two, exact in every format), momentum and (Adam) ε for a problem and optimizer.

    gd and momentum: lr = 2^floor(log2(1/λ_max(H))) / 2 (λ_max: the Hessian's largest eigenvalue at
    the optimum), so lr·λ_max lies in (1/4, 1/2]: stable, and slow enough on the best-conditioned
    direction that the loss trace resolves when it freezes. The MLP gets lr = 2^floor(log2(1.5/λ_max)),
    lr·λ_max in (3/4, 3/2] (stable: below 2): its Hessian's nonzero eigenvalues spread over a factor
    ~400, and the smaller step would need ~10^5 iterations to reach float32's floor.
    adam: DEFAULTS["adam_lr"], ε = DEFAULTS["adam_eps"] (variant ``eps-stable``:
    :func:`stable_adam_eps`); lbfgs: none.
    Mechanism cells override them: ``lr_lambda`` sets GD's lr = lr_lambda/λ_max (the lr sweep);
    ``adam_lr`` sets Adam's lr; ``eps_ratio`` sets ε = lr·λ_max/eps_ratio (Adam's stability sweep,
    run with ``adam_beta2`` = 0.99 so that v̂ decays within the run: the limit depends on β1 only).
    """
    lam = problem.info.get("hessian_max_eigenvalue", 1.0)
    if optimizer in ("gd", "momentum"):
        if lr_lambda is not None:
            return {"lr": float(lr_lambda) / lam,
                    "momentum": DEFAULTS["momentum"] if optimizer == "momentum" else 0.0}
        if problem.kind == "mlp":
            lr = 2.0 ** math.floor(math.log2(1.5 / lam))
        else:
            lr = 2.0 ** (math.floor(math.log2(1.0 / lam)) - 1)
        return {"lr": lr, "momentum": DEFAULTS["momentum"] if optimizer == "momentum" else 0.0}
    if optimizer == "adam":
        lr = DEFAULTS["adam_lr"] if adam_lr is None else float(adam_lr)
        eps = stable_adam_eps(problem, lr) if variant == "eps-stable" else DEFAULTS["adam_eps"]
        if eps_ratio is not None:
            eps = lr * lam / float(eps_ratio)
        beta2 = DEFAULTS["adam_betas"][1] if adam_beta2 is None else float(adam_beta2)
        return {"lr": lr, "momentum": 0.0, "eps": eps, "beta2": beta2}
    return {"lr": math.nan, "momentum": 0.0}


def eval_schedule(iterations: int) -> np.ndarray:
    """Iterations where the exact excess is evaluated: 0..63, then every ~6 %, and the last."""
    points = set(range(min(DENSE_EVALUATIONS, iterations + 1)))
    value = float(DENSE_EVALUATIONS)
    while value < iterations:
        points.add(int(value))
        value *= SCHEDULE_RATIO
    points.add(iterations)
    return np.array(sorted(points), dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# training loops: each returns held (list of float64 parameter vectors θ_0..θ_n), reported losses,
# rounded-away shares, gradient samples {iteration: flat gradient in the format}, and extras

def _train_first_order(model, optimizer, variant, iterations, hyper, state_format):
    """GD / momentum / Adam on one flat parameter vector θ (the model's arrays are views into it, so
    one elementwise optimizer step updates them all: the same arithmetic as a step per array).

    master-f64: the same optimizer in float64 (state included) updates float64 master weights from
    the format's gradient at the master weights rounded to the format."""
    fmt = model.fmt
    names = model.names
    like = model.init()
    theta = _flat(like, names).astype(fmt.dtype)          # exact: the start is in the format
    params = _unflat(theta, like, names)                  # views into theta
    master = theta.astype(np.float64) if variant == "master-f64" else None
    if master is not None:
        opt = _make_optimizer(optimizer, hyper, _formats.float64, "float64")
    else:
        opt = _make_optimizer(optimizer, hyper, fmt, state_format)
    stepped = master if master is not None else theta
    sharpness = _AdamSharpness(model.problem, hyper, iterations) if optimizer == "adam" else None
    held, losses, rounded, grads = [], [], [], {}
    blew_up = None
    anatomy = {}
    for i in range(iterations + 1):
        if master is not None:
            theta[:] = fmt.round(master)
        loss, g = model.loss_and_grads(params)
        losses.append(loss)
        held.append(master.copy() if master is not None else theta.astype(np.float64))
        g = np.concatenate([np.ravel(g[k]) for k in names])
        if i in GRADIENT_SAMPLES:
            grads[i] = g.astype(np.float64)
        if i == iterations:
            break
        if not np.isfinite(held[-1]).all():
            blew_up = i
            break
        if variant == "exact-gradient":
            exact = model.exact_gradient64(params)
            g = fmt.round(np.concatenate([np.ravel(exact[k]) for k in names]))
        before = stepped.copy()
        opt.step(stepped, g.astype(stepped.dtype) if master is not None else g)
        if sharpness is not None:
            sharpness.record(i + 1, opt.state_of(stepped))
        if optimizer == "adam" and "blow_up_anatomy" not in anatomy and not np.isfinite(stepped).all():
            anatomy["blow_up_anatomy"] = _adam_blow_up_anatomy(before, stepped, opt.state_of(stepped))
        active = g != 0
        nonzero = int(active.sum())
        rounded.append(int((active & (stepped == before)).sum()) / nonzero if nonzero else 0.0)
    extra = {"blew_up_iteration": blew_up, **anatomy.get("blow_up_anatomy", {})}
    if sharpness is not None:
        extra.update(sharpness.result())
    return held, losses, rounded, grads, extra


def _adam_blow_up_anatomy(before, after, state) -> dict:
    """How Adam's first non-finite step came about, per parameter that became non-finite:
    ``blow_up_x_over_0``: v = 0 but m ≠ 0 (x/0 = ±inf: v underflowed while m did not),
    ``blow_up_0_over_0``: m = v = 0 (0/0 = NaN: a zero gradient from the start),
    ``blow_up_other``: anything else (an overflow, or a non-finite gradient), and
    ``blow_up_nonfinite``: how many parameters became non-finite (previously finite)."""
    bad = ~np.isfinite(np.asarray(after, dtype=np.float64)) & np.isfinite(np.asarray(before, np.float64))
    m = np.asarray(state["exp_avg"]).astype(np.float64)
    v = np.asarray(state["exp_avg_sq"]).astype(np.float64)
    x_over_0 = bad & (v == 0) & (m != 0)
    zero_over_0 = bad & (v == 0) & (m == 0)
    return {"blow_up_nonfinite": int(bad.sum()), "blow_up_x_over_0": int(x_over_0.sum()),
            "blow_up_0_over_0": int(zero_over_0.sum()),
            "blow_up_other": int((bad & ~x_over_0 & ~zero_over_0).sum())}


class _AdamSharpness:
    """λ_max(D^½ H D^½), D = diag(lr/(√(v/bc2) + ε)), after the steps of a schedule (module docstring)."""

    def __init__(self, problem, hyper, iterations):
        self.hessian = problem.hessian
        self.lr, self.eps = float(hyper["lr"]), float(hyper["eps"])
        self.beta2 = hyper["beta2"]
        self.when = set(eval_schedule(iterations).tolist()) - {0}
        self.iterations, self.values = [], []

    def record(self, t, state):
        if self.hessian is None or t not in self.when:
            return
        v = np.asarray(state["exp_avg_sq"]).astype(np.float64)
        bc2 = -math.expm1(t * math.log1p(-self.beta2))        # 1 − β2^t without cancellation
        d = self.lr / (np.sqrt(v / bc2) + self.eps)
        if not np.isfinite(d).all():
            value = math.nan
        else:
            root = np.sqrt(d)
            value = float(np.linalg.eigvalsh(root[:, None] * self.hessian * root[None, :])[-1])
        self.iterations.append(t)
        self.values.append(value)

    def result(self):
        values = np.array(self.values, dtype=np.float64)
        its = np.array(self.iterations, dtype=np.int64)
        return {"adam_sharpness_iterations": its, "adam_sharpness": values,
                "adam_unstable_iteration": first_upward_crossing(its, values,
                                                                 adam_stability_threshold())}


def first_upward_crossing(iterations, values, level) -> int | None:
    """The first iteration at which `values` rises above `level` after having been at or below it
    (Adam's first steps, with v̂ ≈ g², can start above it: that transient does not count)."""
    values = np.asarray(values, dtype=np.float64)
    below = np.flatnonzero(values <= level)
    if not below.size:
        return None
    above = np.flatnonzero(values[below[0]:] > level)
    return int(np.asarray(iterations)[below[0] + above[0]]) if above.size else None


def _train_lbfgs(model, iterations):
    from scipy.optimize import minimize

    fmt = model.fmt
    params0 = model.init()
    names = model.names
    cache = {}

    def evaluate(theta):
        prm = {k: fmt.round(v) for k, v in _unflat(theta, params0, names).items()}
        key = _flat(prm, names).tobytes()
        if key not in cache:
            loss, g = model.loss_and_grads(prm)
            cache.clear()  # only the latest point is needed by the callback
            cache[key] = (loss, _flat(g, names), _flat(prm, names))
        return cache[key]

    def fun(theta):
        loss, g, _ = evaluate(theta)
        with np.errstate(over="ignore", invalid="ignore"):
            return float(loss), g.astype(np.float64)

    held, losses, grads = [], [], {}

    def record(theta):
        loss, g, flat = evaluate(theta)
        i = len(held)
        held.append(flat)
        losses.append(loss)
        if i in GRADIENT_SAMPLES:
            grads[i] = g

    theta0 = _flat(params0, names)
    record(theta0)

    def callback(intermediate_result):
        record(intermediate_result.x)

    with np.errstate(all="ignore"):
        result = minimize(fun, theta0, jac=True, method="L-BFGS-B", callback=callback,
                          options={"maxiter": iterations, "maxfun": 20 * iterations, "ftol": 0.0,
                                   "gtol": 0.0, "maxcor": 10})
    rounded = [math.nan] * (len(held) - 1)
    return held, losses, rounded, grads, {"stop_message": str(result.message), "nfev": int(result.nfev),
                                          "blew_up_iteration": None}


# --------------------------------------------------------------------------------------------------
# the cell

def run_cell(params: dict) -> dict:
    """One training run (module docstring). params: problem, condition, size, seed, format,
    accumulate, optimizer, state_format, variant, iterations. Cells with ``part = "symptoms"`` are
    the question's experiments (:mod:`precision.studies.soft_target.symptoms`)."""
    if params.get("part") == "symptoms":
        from . import symptoms

        return symptoms.run_cell(params)
    problem = make_problem(params["problem"], int(params.get("seed", 0)), params.get("condition"),
                           params.get("size", "quick"))
    fmt = _formats.format(params["format"])
    accum = _formats.format(params.get("accumulate") or fmt.name)
    optimizer = params["optimizer"]
    variant = params.get("variant", "plain")
    iterations = int(params["iterations"])
    state_format = params.get("state_format") or fmt.name
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (expected one of {VARIANTS})")
    if variant == "eps-stable" and optimizer != "adam":
        raise ValueError("the eps-stable variant is for Adam only")
    if variant != "plain" and optimizer == "lbfgs":
        raise ValueError(f"the {variant} variant is for first-order optimizers only")
    hyper = hyperparameters(problem, optimizer, variant, lr_lambda=params.get("lr_lambda"),
                            adam_lr=params.get("adam_lr"), eps_ratio=params.get("eps_ratio"),
                            adam_beta2=params.get("adam_beta2"))
    model = _Model(problem, fmt, accum)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            if optimizer == "lbfgs":
                held, losses, rounded, grads, extra = _train_lbfgs(model, iterations)
            else:
                held, losses, rounded, grads, extra = _train_first_order(
                    model, optimizer, variant, iterations, hyper, state_format)
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})

    reported = np.array([np.asarray(v, dtype=fmt.dtype).reshape(()) for v in losses], dtype=fmt.dtype)
    n_run = len(held) - 1
    patience = {"lbfgs": DEFAULTS["lbfgs_patience"],
                "momentum": DEFAULTS["momentum_patience"]}.get(optimizer, DEFAULTS["patience"])
    freeze = loss_freeze_iteration(reported, patience=patience, fmt=fmt)
    freeze_it = freeze.patience_iteration
    if optimizer == "lbfgs" and freeze_it is None and n_run < iterations:
        freeze_it = n_run   # L-BFGS stopped by itself: its next step found no reported decrease

    schedule = set(eval_schedule(n_run).tolist())
    for it in (freeze_it, freeze.band_iteration):
        if it is not None and it <= n_run:
            schedule.add(int(it))
    schedule = np.array(sorted(schedule), dtype=np.int64)
    like = model.init()
    excess = np.array([_excess(problem, _unflat(held[i], like, model.names)) for i in schedule])
    lookup = dict(zip(schedule.tolist(), excess.tolist()))
    if optimizer == "lbfgs":
        # L-BFGS stops by itself: its floor is where it stopped.
        finite = np.isfinite(excess)
        fl_value = float(excess[-1]) if finite.all() else math.inf
        fl_status = "stopped" if finite.all() else "blew_up"
        floor_iteration = n_run if finite.all() else None
    else:
        fl = floor(excess)
        fl_value, fl_status = fl.value, fl.status
        floor_iteration = int(schedule[fl.iteration]) if fl.iteration is not None else None

    rebound = rebound_summary(schedule, excess, fmt.u)
    grad_iters, grad_rel, grad_ulp = _gradient_errors(problem, model, held, grads, fmt)
    errors = (gradient_errors_near_optimum(problem, model)
              if problem.kind == "mlp" and optimizer in ("gd", "momentum") else None)
    predictions = theory.predicted_floors(problem, fmt, optimizer, hyper["lr"], hyper["momentum"],
                                          gradient_errors=errors)
    return {
        "reported_loss": reported,
        "rounded_away": np.array(rounded, dtype=np.float64),
        "eval_iterations": schedule,
        "exact_excess": excess,
        "loss_freeze_iteration": freeze_it,
        "loss_freeze_band_iteration": freeze.band_iteration,
        "excess_at_loss_freeze": lookup.get(freeze_it, math.nan) if freeze_it is not None else math.nan,
        "excess_floor": fl_value,
        "floor_status": fl_status,
        "floor_iteration": floor_iteration,
        "final_excess": float(excess[-1]),
        "min_loss": problem.min_loss64,
        "grad_error_iterations": np.array(grad_iters, dtype=np.int64),
        "grad_rel_error": np.array(grad_rel, dtype=np.float64),
        "grad_max_ulp_error": np.array(grad_ulp, dtype=np.float64),
        "lr": hyper["lr"],
        "momentum": hyper["momentum"],
        "adam_eps": hyper.get("eps", math.nan),
        "lr_times_lambda_max": hyper["lr"] * problem.info.get("hessian_max_eigenvalue", math.nan),
        "adam_lr_lambda_over_eps": (hyper["lr"] * problem.info.get("hessian_max_eigenvalue", math.nan)
                                    / hyper["eps"] if hyper.get("eps") else math.nan),
        "adam_stability_threshold": adam_stability_threshold() if optimizer == "adam" else math.nan,
        "adam_sharpness_iterations": extra.get("adam_sharpness_iterations", np.zeros(0, np.int64)),
        "adam_sharpness": extra.get("adam_sharpness", np.zeros(0)),
        "adam_unstable_iteration": extra.get("adam_unstable_iteration"),
        **rebound,
        "iterations_run": n_run,
        "hessian_condition": problem.info.get("hessian_condition", math.nan),
        "warnings": messages,
        "stop_message": extra.get("stop_message", ""),
        "blew_up_iteration": extra.get("blew_up_iteration"),
        **{k: extra.get(k) for k in BLOW_UP_COLUMNS},
        **predictions,
    }


def rebound_of(result: dict) -> dict:
    """:func:`rebound_summary` of a cell's stored trace (recomputed, so the rule can change without
    recomputing cells), plus ``sharpness_at_rebound`` (Adam: the preconditioned sharpness recorded at
    the rebound iteration; NaN otherwise)."""
    out = rebound_summary(result.get("eval_iterations", []), result.get("exact_excess", []),
                          float(result.get("unit_roundoff") or 0.0))
    its = np.asarray(result.get("adam_sharpness_iterations", []), dtype=np.int64)
    values = np.asarray(result.get("adam_sharpness", []), dtype=np.float64)
    hit = np.flatnonzero(its == out["rebound_iteration"]) if out["rebound_iteration"] is not None else []
    out["sharpness_at_rebound"] = (float(values[hit[0]]) if len(hit) and its.size == values.size
                                   else math.nan)
    return out


def rebound_summary(iterations, excess, unit_roundoff: float = 0.0) -> dict:
    """Minimum of an exact-excess trace, where it was reached, the largest excess after it, and the
    first iteration at which the excess rose above REBOUND_FACTOR × max(its running minimum, u²)
    (None: never; the u² term ignores wandering within the u²-scale floors).

    iterations, excess: the evaluation schedule and the excess there (non-finite entries: a blow-up,
    which counts as a rebound only if a finite minimum came before it).
    """
    its = np.asarray(iterations, dtype=np.int64)
    excess = np.asarray(excess, dtype=np.float64)
    finite = np.isfinite(excess)
    if not finite.any():
        return {"min_excess": math.nan, "min_excess_iteration": None,
                "max_excess_after_min": math.nan, "rebound_iteration": None}
    k = int(np.argmin(np.where(finite, excess, np.inf)))
    with np.errstate(invalid="ignore"):
        running = np.minimum.accumulate(np.where(finite, excess, np.inf))
        risen = ~finite | (excess > REBOUND_FACTOR * np.maximum(running, unit_roundoff ** 2))
    risen[:int(np.argmax(finite))] = False        # nothing before the first finite value
    first = np.flatnonzero(risen)
    after = excess[k:]
    return {"min_excess": float(excess[k]), "min_excess_iteration": int(its[k]),
            "max_excess_after_min": float(np.max(np.where(np.isfinite(after), after, np.inf))),
            "rebound_iteration": int(its[first[0]]) if first.size else None}


def _excess(problem, params):
    return problem.excess(params)


GRADIENT_ERROR_POINTS = 16
GRADIENT_ERROR_SPREAD = 4.0   # perturbations of θ* of about this many units u·max|θ*|


def gradient_errors_near_optimum(problem, model, points: int = GRADIENT_ERROR_POINTS) -> np.ndarray:
    """(K, P) errors g_F(θ_k) − ∇CE(θ_k) of the format's gradient (the study's kernels) at θ_0 = θ*
    and θ_k = θ* + N(0, (4·u·max|θ*|)²) noise (k ≥ 1, fixed seed), each rounded to the format.
    ∇CE is computed in float64 (mpmath for float64 runs, whose float64 errors are what is measured)."""
    fmt = model.fmt
    names = model.names
    like = model.init()
    rng = np.random.default_rng(20240)
    scale = GRADIENT_ERROR_SPREAD * fmt.u * float(np.max(np.abs(problem.w_star)))
    rows = []
    for k in range(points):
        theta = problem.w_star + (0.0 if k == 0 else rng.normal(size=problem.w_star.size) * scale)
        params = {name: fmt.round(v) for name, v in _unflat(theta, like, names).items()}
        _, g = model.loss_and_grads(params)
        if fmt.name == "float64":
            exact = np.array([float(v) for v in problem.gradient_mp(params).ravel()])
        else:
            exact = _flat(model.exact_gradient64(params), names)
        rows.append(_flat(g, names) - exact)
    return np.array(rows)


def _gradient_errors(problem, model, held, grads, fmt):
    """(iterations, ‖g − g*‖/‖g*‖, max |ulp error|) of the computed gradient at sample iterations."""
    from precision.errors import ulp_error

    iters, rel, ulps = [], [], []
    like = model.init()
    for i in sorted(grads):
        params = _unflat(held[i], like, model.names)
        if not np.isfinite(held[i]).all() or not np.isfinite(grads[i]).all():
            continue
        exact = problem.gradient_mp(params).ravel()
        exact64 = np.array([float(v) for v in exact])
        norm = float(np.linalg.norm(exact64))
        iters.append(i)
        rel.append(float(np.linalg.norm(grads[i] - exact64) / norm) if norm > 0 else math.inf)
        with np.errstate(all="ignore"):
            ulps.append(float(np.max(np.abs(ulp_error(fmt.round(grads[i]), exact, fmt)))))
    return iters, rel, ulps


# --------------------------------------------------------------------------------------------------
# summary row

def applicable_floor(params: dict, result: dict) -> float:
    """The predicted floor of the mechanism a run keeps: GD/momentum with float64 master weights
    (``master-f64``, no swamping) -> the gradient-resolution floor; otherwise ``predicted_floor``."""
    if params.get("variant") == "master-f64" and params.get("optimizer") in ("gd", "momentum"):
        return result.get("predicted_gradient_floor", math.nan)
    return result.get("predicted_floor", math.nan)


def summarize(params: dict, result: dict) -> dict:
    """The summary.csv measurements of one cell (after the cell's parameters)."""
    if params.get("part") == "symptoms":
        from . import symptoms

        return symptoms.summarize(params, result)
    row = {}
    for key in SUMMARY_COLUMNS:
        row[key] = result.get(key)
    row["predicted_floor"] = applicable_floor(params, result)
    row.update(rebound_of(result))
    row["freeze_ratio"] = _ratio(result.get("excess_at_loss_freeze"),
                                 result.get("predicted_excess_at_loss_freeze"))
    row["floor_ratio"] = _ratio(result.get("excess_floor"), row["predicted_floor"])
    u = result.get("unit_roundoff")
    row["excess_floor_over_u2"] = _ratio(result.get("excess_floor"), u * u if u else None)
    rounded = np.asarray(result.get("rounded_away", []), dtype=np.float64)
    row["rounded_away_final"] = float(rounded[-1]) if rounded.size else math.nan
    rel = np.asarray(result.get("grad_rel_error", []), dtype=np.float64)
    row["grad_rel_error_final"] = float(rel[-1]) if rel.size else math.nan
    reported = np.asarray(result.get("reported_loss", []))
    row["final_reported_loss"] = float(reported[-1]) if reported.size else math.nan
    return row


def _ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return math.nan
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b
