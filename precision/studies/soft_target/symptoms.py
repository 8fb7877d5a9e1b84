"""The question's symptoms as experiments (cells with ``part = "symptoms"``).

The question: a classifier trained on soft targets in float32 (1) reaches the same final loss whatever
the model, even a bias alone; (2) has validation loss equal to training loss; (3) "converges" in 20–30
L-BFGS iterations, while in float64 it trains on past 2000; (4) trains normally on one-hot targets.
Each is a group of cells (``experiment``):

* ``models``  — bias-only, linear and MLP models on *identical* data (:func:`signal_data`): 4 dyadic
  features, 3 classes, soft targets t_r = softmax(z0 + a·s_r) rounded to multiples of 2^-24 with
  rows summing to exactly 1 (so float32 and float64 see the same numbers), s_r = x_r V centred, with a chosen so that the achievable KL gain
  G = H(t̄) − mean_r H(t_r) (what the best model gains over the bias alone) is the cell's ``signal``
  (1e-9 .. 1e-2 nats). Each model is trained by scipy's L-BFGS-B with ftol = gtol = 0 (it stops
  only when its line search finds no reported decrease) in float32 and float64; the cell records the
  reported final training loss, the validation loss on a held-out split of the same size (reported
  and exact, mpmath) and the exact training loss.
* ``lbfgs``  — iterations to stop on the conditioning sweep (``linear-ill-conditioned`` at κ),
  float32 vs float64, for three L-BFGS as people run them: ``scipy-default`` (L-BFGS-B with its
  default ftol = 2.2e-9, gtol = 1e-5, maxcor = 10; objective in the format, scipy's state float64),
  ``format-state`` (:func:`lbfgs_in_format`: state, two-loop recursion and backtracking line search
  all in the format, with torch.optim.LBFGS's default tolerances, tolerance_grad = 1e-7,
  tolerance_change = 1e-9 — the setting of an L-BFGS run on float32 tensors) and ``scipy-ftol0``
  (ftol = gtol = 0).
* ``targets``  — the linear model on the signal data with its soft targets and with one-hot targets
  (the argmax of each soft row: linearly separable, so the infimum of CE is 0), scipy ftol = gtol = 0.
* ``remedies``  — float32 parameters, scipy ftol = gtol = 0 on the κ = 1e4 problem, with the
  objective (and its gradient) computed ``ce`` in float32, ``ce-f64`` in float64 from the float32
  parameters, or ``kl`` as KL(t ‖ p) in float32 (:func:`precision.kl_divergence`, whose value is the
  excess itself, so its ulp shrinks with it).
"""
from __future__ import annotations

import functools
import math

import mpmath
import numpy as np

from precision import formats as _formats
from .train import matmul          # one thread: cells run in parallel processes

__all__ = ["cells", "run_cell", "summarize", "signal_data", "lbfgs_in_format", "SIGNALS"]

SIGNALS = {"quick": (1e-9, 1e-7, 1e-6, 1e-4, 1e-2),
           "full": (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)}
KAPPAS = {"quick": (1e1, 1e3, 1e5), "full": (1e1, 1e2, 1e3, 1e4, 1e5)}
FLAVOURS = ("scipy-default", "format-state", "scipy-ftol0")
MODELS = ("bias", "linear", "mlp")
OBJECTIVES = ("ce", "ce-f64", "kl")
BASE_PROBS = (0.39, 0.44, 0.17)        # the post's mean target, roughly
MAX_ITERATIONS = 3000
MODEL_ITERATIONS = 2500
HIDDEN = 8


def cells(full: bool = False, seed: int = 0) -> list[dict]:
    size = "full" if full else "quick"
    out = []

    def cell(experiment, **kw):
        out.append({"part": "symptoms", "experiment": experiment, "seed": seed, "size": "quick", **kw})

    for signal in SIGNALS[size]:
        for model in MODELS:
            for fmt in ("float32", "float64"):
                cell("models", model=model, signal=signal, format=fmt, optimizer="scipy-ftol0")
    for kappa in KAPPAS[size]:
        for flavour in FLAVOURS:
            for fmt in ("float32", "float64"):
                cell("lbfgs", condition=kappa, format=fmt, optimizer=flavour)
    for targets in ("soft", "hard"):
        for fmt in ("float32", "float64"):
            cell("targets", targets=targets, signal=1e-2, format=fmt, optimizer="scipy-ftol0")
    for objective in OBJECTIVES:
        cell("remedies", objective=objective, condition=1e4, format="float32", optimizer="scipy-ftol0")
    return out


# --------------------------------------------------------------------------------------------------
# the data of the models experiment

def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _entropy_rows(p):
    return -np.sum(p * np.log(p), axis=1)


def _gain(p):
    return float(_entropy_rows(p.mean(axis=0, keepdims=True))[0] - _entropy_rows(p).mean())


@functools.lru_cache(maxsize=None)
def signal_data(signal: float, seed: int = 0, rows: int = 256):
    """(x_train, t_train, x_val, t_val, gain, H(t̄)): identical features for every signal level;
    targets t = softmax(z0 + a·s) on the 2^-24 grid with a solved (secant on log a) so the training split's achievable
    gain H(t̄) − mean H(t) equals `signal`; gain is that value recomputed exactly (mpmath) from the
    rounded targets."""
    rng = np.random.default_rng([seed, 11, 2024])
    d, c = 4, len(BASE_PROBS)
    x = rng.integers(-8, 9, size=(2 * rows, d)) / 4.0
    v = rng.normal(size=(d, c))
    s = x @ (v - v.mean(axis=1, keepdims=True))
    s -= s[:rows].mean(axis=0)
    z0 = np.log(np.array(BASE_PROBS))

    def gain_of(a):
        return _gain(_softmax(z0 + a * s[:rows]))

    log_a = 0.5 * math.log(signal / gain_of(1e-3)) + math.log(1e-3)   # quadratic regime first
    for _ in range(30):
        g = gain_of(math.exp(log_a))
        step = 0.5 * (math.log(signal) - math.log(g))                   # gain ∝ a² near 0
        log_a += step
        if abs(step) < 1e-10:
            break
    # multiples of 2^-24 with rows summing to exactly 1: exact in float32 and float64 alike
    t = np.round(_softmax(z0 + math.exp(log_a) * s) * 2.0 ** 24) / 2.0 ** 24
    t[:, -1] = 1.0 - t[:, :-1].sum(axis=1)
    with mpmath.workdps(40):
        train = [[mpmath.mpf(v) for v in row] for row in t[:rows].tolist()]
        mean = [mpmath.fsum(col) / rows for col in zip(*train)]
        h_mean = -mpmath.fsum(m * mpmath.log(m) for m in mean)
        h_rows = mpmath.fsum(-mpmath.fsum(p * mpmath.log(p) for p in row) for row in train) / rows
        gain = float(h_mean - h_rows)
        min_bias = float(h_mean)
    return x[:rows], t[:rows], x[rows:], t[rows:], gain, min_bias


def _model_problem(model, x, t, seed):
    """A problems.Problem for a model on given data (no optimum: these runs measure losses)."""
    from .problems import Problem

    n, d = x.shape
    c = t.shape[1]
    rng = np.random.default_rng([seed, 13])
    if model == "bias":
        return Problem("signal-bias", seed, np.ones((n, 1)), t, {"w": np.zeros((1, c))}, "linear")
    if model == "linear":
        return Problem("signal-linear", seed, np.concatenate([x, np.ones((n, 1))], axis=1), t,
                       {"w": np.zeros((d + 1, c))}, "linear")
    init = {"w1": rng.integers(-8, 9, size=(d, HIDDEN)) / 16.0, "b1": np.full(HIDDEN, 0.125),
            "w2": rng.integers(-8, 9, size=(HIDDEN, c)) / 16.0, "b2": np.zeros(c)}
    return Problem("signal-mlp", seed, x, t, init, "mlp")


# --------------------------------------------------------------------------------------------------
# L-BFGS with its state and line search in a format

def lbfgs_in_format(fun, x0, fmt, max_iterations, *, history=100, tolerance_grad=1e-7,
                    tolerance_change=1e-9, c1=1e-4, max_halvings=40, callback=None):
    """L-BFGS whose every vector and scalar is held and computed in `fmt` (numpy arithmetic in the
    format's dtype; dot products as numpy/BLAS sums them), with torch.optim.LBFGS's defaults and
    stopping rules and a backtracking Armijo line search in the format:

        d = −H_k g (two-loop recursion over the last `history` pairs (s, y) with yᵀs > 1e-10; first
        step scaled by min(1, 1/‖g‖₁)); t = 1, halved until f(x + t d) ≤ f + c1·t·gᵀd (≤ max_halvings);
        stop when max|g| ≤ tolerance_grad, |f_new − f| < tolerance_change, max|t d| ≤ tolerance_change,
        the line search finds no acceptable step, or after max_iterations.

    fun(x) -> (f, g) in the format. Returns (x, f, iterations, evaluations, message).
    """
    dt = fmt.dtype
    x = np.asarray(x0).astype(dt)
    f, g = fun(x)
    evaluations = 1
    memory = []
    message = "maximum iterations"
    iterations = 0
    while iterations < max_iterations:
        if float(np.max(np.abs(g))) <= tolerance_grad:
            message = "gradient below tolerance_grad"
            break
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(memory):
            a = rho * np.dot(s, q)
            q = q - a * y
            alphas.append(a)
        if memory:
            s, y, _ = memory[-1]
            r = q * (np.dot(s, y) / np.dot(y, y))
        else:
            r = q * dt.type(min(1.0, 1.0 / float(np.sum(np.abs(g)))))
        for (s, y, rho), a in zip(memory, reversed(alphas)):
            b = rho * np.dot(y, r)
            r = r + s * (a - b)
        d = -r
        gtd = np.dot(g, d)
        if not gtd < 0:
            d, gtd, memory = -g, -np.dot(g, g), []
        step = dt.type(1.0)
        accepted = None
        for _ in range(max_halvings):
            trial = x + step * d
            f_new, g_new = fun(trial)
            evaluations += 1
            if f_new <= f + dt.type(c1) * step * gtd:
                accepted = trial
                break
            step = step * dt.type(0.5)
        if accepted is None:
            message = "line search found no acceptable step"
            break
        s, y = accepted - x, g_new - g
        ys = np.dot(y, s)
        if ys > 1e-10:
            memory.append((s, y, dt.type(1.0) / ys))
            memory = memory[-history:]
        change = abs(float(f_new) - float(f))
        moved = float(np.max(np.abs(step * d)))
        x, f, g = accepted, f_new, g_new
        iterations += 1
        if callback is not None:
            callback(x)
        if change < tolerance_change:
            message = "loss change below tolerance_change"
            break
        if moved <= tolerance_change:
            message = "step below tolerance_change"
            break
    return x, f, iterations, evaluations, message


def _scipy_lbfgs(fun, x0, fmt, max_iterations, defaults: bool):
    from scipy.optimize import minimize

    def f64(theta):
        f, g = fun(fmt.round(theta))
        return float(f), np.asarray(g, dtype=np.float64)

    options = {"maxiter": max_iterations}
    if not defaults:
        options.update(ftol=0.0, gtol=0.0, maxcor=10, maxfun=20 * max_iterations)
    with np.errstate(all="ignore"):
        result = minimize(f64, np.asarray(x0, dtype=np.float64), jac=True, method="L-BFGS-B",
                          options=options)
    x = fmt.round(result.x)
    return x, fun(x)[0], int(result.nit), int(result.nfev), str(result.message)


def _objective(model, objective="ce"):
    """fun(flat θ in the format) -> (loss, flat gradient) for the L-BFGS runners."""
    from .train import _flat, _unflat

    like = model.init()
    names = model.names
    fmt = model.fmt
    if objective == "ce-f64":
        from .train import _Model

        wide = _Model(model.problem, _formats.float64, _formats.float64)
    else:
        wide = None

    def fun(theta):
        params = _unflat(np.asarray(theta).astype(fmt.dtype), like, names)
        with np.errstate(all="ignore"):
            if wide is not None:
                loss, g = wide.loss_and_grads({k: v.astype(np.float64) for k, v in params.items()})
                return np.float64(loss), _flat(g, names)
            loss, g = model.loss_and_grads(params)
            if objective == "kl":
                from precision.losses import kl_divergence

                z = matmul(model.x, params["w"], accum=model.accum.name)
                loss = kl_divergence(model.targets, z, reduction="mean", accum=model.accum.name,
                                     num_threads=1)
        return loss, _flat(g, names).astype(fmt.dtype)

    return fun


def _run_lbfgs(model, flavour, iterations, objective="ce"):
    from .train import _flat

    fun = _objective(model, objective)
    x0 = _flat(model.init(), model.names).astype(model.fmt.dtype)
    if flavour == "format-state":
        return lbfgs_in_format(fun, x0, model.fmt, iterations)
    return _scipy_lbfgs(fun, x0, model.fmt, iterations, defaults=flavour == "scipy-default")


# --------------------------------------------------------------------------------------------------
# one cell

def run_cell(params: dict) -> dict:
    from .problems import make_problem
    from .train import _Model, _unflat

    fmt = _formats.format(params["format"])
    experiment = params["experiment"]
    seed = int(params.get("seed", 0))
    flavour = params.get("optimizer", "scipy-ftol0")
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown L-BFGS flavour {flavour!r} (expected one of {FLAVOURS})")
    out = {"unit_roundoff": fmt.u}
    if experiment in ("lbfgs", "remedies"):
        problem = make_problem("linear-ill-conditioned", seed, params["condition"], params.get("size", "quick"))
        model = _Model(problem, fmt, fmt)
        objective = params.get("objective", "ce")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}")
        x, loss, its, nfev, message = _run_lbfgs(model, flavour, MAX_ITERATIONS, objective)
        excess = problem.excess(_unflat(np.asarray(x, dtype=np.float64), model.init(), model.names))
        out.update(iterations_to_stop=its, evaluations=nfev, stop_message=message,
                   final_reported_loss=float(loss), excess_at_stop=excess, min_loss=problem.min_loss64,
                   hessian_condition=problem.info["hessian_condition"],
                   excess_over_Lu=excess / (problem.min_loss64 * fmt.u))
        return out
    if experiment not in ("models", "targets"):
        raise ValueError(f"unknown experiment {experiment!r}")
    x_tr, t_tr, x_va, t_va, gain, min_bias = signal_data(float(params["signal"]), seed)
    model_name = params.get("model", "linear")
    if experiment == "targets" and params.get("targets") == "hard":
        t_tr = np.eye(t_tr.shape[1])[np.argmax(t_tr, axis=1)]
        t_va = np.eye(t_va.shape[1])[np.argmax(t_va, axis=1)]
    train = _model_problem(model_name, x_tr, t_tr, seed)
    val = _model_problem(model_name, x_va, t_va, seed)
    model = _Model(train, fmt, fmt)
    iterations = MODEL_ITERATIONS if experiment == "models" else MAX_ITERATIONS
    x, loss, its, nfev, message = _run_lbfgs(model, flavour, iterations)
    params_final = _unflat(np.asarray(x, dtype=np.float64), model.init(), model.names)
    in_fmt = {k: fmt.round(v) for k, v in params_final.items()}
    val_loss, _ = _Model(val, fmt, fmt).loss_and_grads(in_fmt)
    reported = np.asarray(loss, dtype=fmt.dtype).reshape(())
    out.update(iterations_to_stop=its, evaluations=nfev, stop_message=message,
               final_reported_loss=float(reported), final_reported_loss_hex=float(reported).hex(),
               val_reported_loss=float(np.asarray(val_loss, dtype=fmt.dtype)),
               train_exact_loss=float(train.loss_mp(params_final, dps=40)),
               val_exact_loss=float(val.loss_mp(params_final, dps=40)),
               achievable_gain=gain, bias_min_loss=min_bias,
               loss_ulp=float(fmt.ulp(fmt.round(min_bias))))
    return out


SUMMARY_KEYS = ["iterations_to_stop", "evaluations", "stop_message", "final_reported_loss",
                "final_reported_loss_hex", "val_reported_loss", "train_exact_loss", "val_exact_loss",
                "achievable_gain", "bias_min_loss", "loss_ulp", "excess_at_stop", "excess_over_Lu",
                "hessian_condition", "min_loss"]


def summarize(params: dict, result: dict) -> dict:
    return {k: result.get(k) for k in SUMMARY_KEYS}
