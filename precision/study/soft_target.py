"""The soft-target stall study: train in each format with this project's kernels and measure exactly.

One cell = one training run: a problem (:mod:`precision.study.problems`), a storage format and an
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

Attribution variants (gradient descent only): ``exact-gradient`` — the gradient computed in float64
from the held parameters and rounded once to the format, then the format's update (isolates update
swamping); ``master-f64`` — the format's gradient (its kernels on the parameters rounded to the format)
applied to float64 master weights, whose excess is measured (isolates gradient resolution).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import formats as _formats
from ..linalg import matmul
from . import theory
from .problems import make_problem, mlp_gradient64
from .stall import floor, loss_freeze_iteration

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
}
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
    "iterations_run", "lr", "hessian_condition", "stop_message",
]


# --------------------------------------------------------------------------------------------------
# kernels (through the public API)

def _loss_and_logit_grad(logits, targets, accum):
    from precision.losses import softmax_cross_entropy

    loss, grad = softmax_cross_entropy(logits, targets, reduction="mean", return_grad=True,
                                       accum=accum, num_threads=1)
    return loss, grad


def _make_optimizer(name, lr, fmt, state_format):
    from precision import optim

    if name in ("gd", "momentum"):
        momentum = DEFAULTS["momentum"] if name == "momentum" else 0.0
        return optim.SGD(lr=lr, momentum=momentum)
    if name == "adam":
        return optim.Adam(lr=lr, betas=DEFAULTS["adam_betas"], eps=DEFAULTS["adam_eps"],
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

def hyperparameters(problem, optimizer: str) -> dict:
    """lr (a power of two, exact in every format) and momentum for a problem and optimizer.

    gd and momentum: lr = 2^floor(log2(1/λ_max(H))) / 2 (λ_max: the Hessian's largest eigenvalue at
    the optimum), so lr·λ_max lies in (1/4, 1/2]: stable, and slow enough on the best-conditioned
    direction that the loss trace resolves when it freezes. The MLP gets lr = 2^floor(log2(1.5/λ_max)),
    lr·λ_max in (3/4, 3/2] (stable: below 2): its Hessian's nonzero eigenvalues spread over a factor
    ~400, and the smaller step would need ~10^5 iterations to reach float32's floor.
    adam: DEFAULTS["adam_lr"]; lbfgs: none.
    """
    if optimizer in ("gd", "momentum"):
        lam = problem.info.get("hessian_max_eigenvalue", 1.0)
        if problem.kind == "mlp":
            lr = 2.0 ** math.floor(math.log2(1.5 / lam))
        else:
            lr = 2.0 ** (math.floor(math.log2(1.0 / lam)) - 1)
        return {"lr": lr, "momentum": DEFAULTS["momentum"] if optimizer == "momentum" else 0.0}
    if optimizer == "adam":
        return {"lr": DEFAULTS["adam_lr"], "momentum": 0.0}
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
    one elementwise optimizer step updates them all: the same arithmetic as a step per array)."""
    fmt = model.fmt
    names = model.names
    like = model.init()
    theta = _flat(like, names).astype(fmt.dtype)          # exact: the start is in the format
    params = _unflat(theta, like, names)                  # views into theta
    opt = _make_optimizer(optimizer, hyper["lr"], fmt, state_format)
    master = theta.astype(np.float64) if variant == "master-f64" else None
    lr64 = float(hyper["lr"])
    held, losses, rounded, grads = [], [], [], {}
    blew_up = None
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
        if master is not None:
            before = master.copy()
            master -= lr64 * g.astype(np.float64)
            after = master
        else:
            before = theta.copy()
            opt.step(theta, g)
            after = theta
        active = g != 0
        nonzero = int(active.sum())
        rounded.append(int((active & (after == before)).sum()) / nonzero if nonzero else 0.0)
    return held, losses, rounded, grads, {"blew_up_iteration": blew_up}


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
    accumulate, optimizer, state_format, variant, iterations."""
    problem = make_problem(params["problem"], int(params.get("seed", 0)), params.get("condition"),
                           params.get("size", "quick"))
    fmt = _formats.format(params["format"])
    accum = _formats.format(params.get("accumulate") or fmt.name)
    optimizer = params["optimizer"]
    variant = params.get("variant", "plain")
    iterations = int(params["iterations"])
    state_format = params.get("state_format") or fmt.name
    hyper = hyperparameters(problem, optimizer)
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

    grad_iters, grad_rel, grad_ulp = _gradient_errors(problem, model, held, grads, fmt)
    predictions = theory.predicted_floors(problem, fmt, optimizer, hyper["lr"], hyper["momentum"])
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
        "iterations_run": n_run,
        "hessian_condition": problem.info.get("hessian_condition", math.nan),
        "warnings": messages,
        "stop_message": extra.get("stop_message", ""),
        "blew_up_iteration": extra.get("blew_up_iteration"),
        **predictions,
    }


def _excess(problem, params):
    return problem.excess(params)


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

def summarize(params: dict, result: dict) -> dict:
    """The summary.csv measurements of one cell (after the cell's parameters)."""
    row = {}
    for key in SUMMARY_COLUMNS:
        row[key] = result.get(key)
    row["freeze_ratio"] = _ratio(result.get("excess_at_loss_freeze"),
                                 result.get("predicted_excess_at_loss_freeze"))
    row["floor_ratio"] = _ratio(result.get("excess_floor"), result.get("predicted_floor"))
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
