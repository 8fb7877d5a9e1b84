"""One cell of the optimizer-behaviour study: what each kind of cell runs and measures.

Every optimizer is used through the public API of ``precision.optim`` only (constructor, ``step``,
``state_of``): ``pr.optim.SGD`` (plain, momentum 0.9, Nesterov 0.9), ``Adagrad``, ``Adadelta``,
``RMSprop``, ``Adam``, ``AdamW``, in the torch convention unless a cell names another.  Cells by
``part``:

* ``trajectory`` (items 1 and 7): a surface, a format, an optimizer at a fixed lr, a remedy
  (``none``; ``state-f32``: state_format float32; ``master``: float32 state and master weights;
  ``kahan``; ``stochastic``).  Records the path, the excess f − f* after every step, and per step
  the coordinates the update left unchanged although their gradient was nonzero (swamped: w ⊕ u = w).
* ``sweep`` (items 4 and 5): a problem (surface or classifier), a format, an optimizer; for every lr
  of the grid the final excess and the first step at which the excess reached the target.
* ``response`` (item 2): a 1-element parameter, constant gradient +g until steady state, then −g.
  The update of each step is read exactly by setting the parameter to 0 before the step (the same
  array object, so the optimizer keeps its state; the gradient does not depend on the parameter).
* ``nag-damping`` (item 2): Sutskever et al. (2013): on a quadratic direction of curvature λ,
  Nesterov momentum is classical momentum with momentum μ(1 − ηλ).  PyTorch's Nesterov iterate p is
  Sutskever's look-ahead point θ + μv, so p_t must equal θ_t + μ(θ_t − θ_{t−1}) where θ is classical
  momentum (torch's SGD, momentum μ(1 − ηλ)) from the same start.
* ``adagrad`` (item 3): Adagrad under a constant gradient g, stepped until its accumulator stops
  growing (bfloat16, float16) or for a fixed number of steps (float32, float64: the stall is computed
  by :func:`theory.adagrad_stall`); effective lr lr/(√G + ε) and distance travelled.
* ``first-step`` / ``window`` (item 4): the first update from zero state, and the share of weight the
  last 1/(1 − ρ) gradients hold in the second-moment average, read from ``state_of``.
* ``memory`` (item 6): state bytes per parameter element, summed from the state arrays ``state_of``
  returns, for each optimizer and option.

PrecisionWarnings raised by the optimizers (a hyperparameter that rounds to 0, to 1 …) are recorded
per cell (``warnings``) rather than shown.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

import precision as pr
from precision import formats as _formats
from . import theory
from .surfaces import SURFACES, classifier, gradient_in

__all__ = ["run_cell", "summarize", "make_optimizer", "OPTIMIZERS", "REMEDIES", "TRAJECTORY_LR",
           "SWEEP_LRS", "TARGET_FRACTION"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam")
REMEDIES = {
    "none": {},
    "state-f32": {"state_format": "float32"},
    "master": {"state_format": "float32", "master_weights": True},
    "kahan": {"update": "kahan"},
    "stochastic": {"update": "stochastic"},
}
# lr of the trajectory runs, per surface: from a float64 sweep, a value at which each optimizer makes
# visible progress in the run's steps without diverging (not each one's best).
TRAJECTORY_LR = {
    "quadratic": {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "adagrad": 1.0, "adadelta": 1.0,
                  "rmsprop": 0.03, "adam": 0.1},
    "rosenbrock": {"sgd": 3e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 1.0,
                   "adadelta": 1.0, "rmsprop": 0.01, "adam": 0.1},
    "saddle": {"sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "adagrad": 0.3, "adadelta": 1.0,
               "rmsprop": 0.01, "adam": 0.03},
    "flip": {"sgd": 0.03, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.3, "adadelta": 1.0,
             "rmsprop": 0.01, "adam": 0.03},
}
SWEEP_LRS = tuple(float(f"{10 ** (k / 2):.3g}") for k in range(-10, 1))    # 1e-5 … 1, ½ decade
TARGET_FRACTION = 1e-3      # target: excess ≤ 1e-3 × the starting excess


def make_optimizer(name: str, lr: float, *, remedy: str = "none", convention: str = "torch", **extra):
    """An optimizer of the study by name (public API of precision.optim only)."""
    options = dict(REMEDIES[remedy], convention=convention, **extra)
    if name == "sgd":
        return pr.optim.SGD(lr=lr, **options)
    if name == "momentum":
        return pr.optim.SGD(lr=lr, momentum=options.pop("momentum", 0.9), **options)
    if name == "nesterov":
        return pr.optim.SGD(lr=lr, momentum=options.pop("momentum", 0.9), nesterov=True, **options)
    if name == "adagrad":
        return pr.optim.Adagrad(lr=lr, **options)
    if name == "adadelta":
        return pr.optim.Adadelta(lr=lr, **options)
    if name == "rmsprop":
        return pr.optim.RMSprop(lr=lr, **options)
    if name == "adam":
        return pr.optim.Adam(lr=lr, **options)
    if name == "adamw":
        return pr.optim.AdamW(lr=lr, **options)
    raise ValueError(f"unknown optimizer {name!r}")


class _Warnings:
    """Collects the PrecisionWarnings of a cell (distinct messages, in order)."""

    def __enter__(self):
        self._context = warnings.catch_warnings(record=True)
        self.caught = self._context.__enter__()
        warnings.simplefilter("always", pr.PrecisionWarning)
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        seen = []
        for w in self.caught:
            text = str(w.message)
            if issubclass(w.category, pr.PrecisionWarning) and text not in seen:
                seen.append(text)
        self.messages = seen
        return False


# ------------------------------------------------------------------------------ descent runs
def _problem(name: str, seed: int):
    if name == "classifier":
        return classifier(seed)
    return SURFACES[name]


def _start(problem, F) -> np.ndarray:
    return np.ascontiguousarray(F.round(np.asarray(problem.start, dtype=np.float64)).astype(F.dtype))


def _gradient(problem, theta64, F):
    if problem.name == "classifier":
        return problem.gradient(theta64, F)
    return gradient_in(problem.grad(theta64), F)


def descend(problem, fmt, optimizer, lr, steps, *, remedy="none", record_path=False, target=None):
    """Run one optimizer on one problem; returns the measurements (see the module docstring)."""
    F = _formats.format(fmt)
    theta = _start(problem, F)
    opt = make_optimizer(optimizer, lr, remedy=remedy)
    excess0 = problem.excess(theta.astype(np.float64))
    excess = np.full(steps + 1, np.nan)
    excess[0] = excess0
    swamped = np.zeros(steps, dtype=np.int64)
    path = np.full((steps + 1, theta.size), np.nan) if record_path else None
    if record_path:
        path[0] = theta.astype(np.float64).reshape(-1)
    blew_up = None
    reached = None
    for t in range(steps):
        theta64 = theta.astype(np.float64)
        g = _gradient(problem, theta64, F)
        if not np.all(np.isfinite(g)):
            blew_up = t
            break
        before = theta.copy()
        opt.step(theta, g)
        swamped[t] = int(np.count_nonzero((g != 0) & (theta == before)))
        now = theta.astype(np.float64)
        if not np.all(np.isfinite(now)):
            blew_up = t + 1
            break
        e = problem.excess(now)
        if not math.isfinite(e) or e > 1e30:
            blew_up = t + 1
            break
        excess[t + 1] = e
        if record_path:
            path[t + 1] = now.reshape(-1)
        if target is not None and reached is None and e <= target:
            reached = t + 1
    out = {"excess": excess, "swamped": swamped, "blew_up_step": blew_up, "reached_step": reached,
           "excess0": excess0}
    if record_path:
        out["path"] = path
    if remedy == "master":
        out["master_minus_param"] = float(np.max(np.abs(
            opt.state_of(theta)["master"].astype(np.float64) - theta.astype(np.float64))))
    return out


def _final(excess) -> float:
    finite = excess[np.isfinite(excess)]
    return float(finite[-1]) if finite.size else math.nan


def _trajectory(p):
    problem = SURFACES[p["surface"]]
    with _Warnings() as caught:
        r = descend(problem, p["format"], p["optimizer"], p["lr"], p["steps"], remedy=p["remedy"],
                    record_path=p["remedy"] == "none")
    excess, swamped = r["excess"], r["swamped"]
    first = np.flatnonzero(swamped > 0)
    r.update({
        "final_excess": _final(excess) if r["blew_up_step"] is None else math.nan,
        "min_excess": float(np.nanmin(excess)),
        "swamped_share": float(swamped.sum() / (2 * max(1, swamped.size))),
        "swamped_share_last_half": float(swamped[swamped.size // 2:].sum()
                                         / (2 * max(1, swamped.size - swamped.size // 2))),
        "first_swamped_step": int(first[0] + 1) if first.size else None,
        "excess_at_first_swamp": float(excess[first[0]]) if first.size else math.nan,
        "warnings": caught.messages,
    })
    return r


def _sweep(p):
    problem = _problem(p["problem"], p.get("seed", 0))
    lrs = list(p["lrs"])
    final, reached, blew = [], [], []
    with _Warnings() as caught:
        for lr in lrs:
            excess0 = problem.excess(_start(problem, _formats.format(p["format"])).astype(np.float64))
            r = descend(problem, p["format"], p["optimizer"], lr, p["steps"],
                        target=TARGET_FRACTION * excess0)
            final.append(_final(r["excess"]) if r["blew_up_step"] is None else math.inf)
            reached.append(-1 if r["reached_step"] is None else r["reached_step"])
            blew.append(-1 if r["blew_up_step"] is None else r["blew_up_step"])
    return {"lrs": np.array(lrs), "final_excess": np.array(final), "reached_step": np.array(reached),
            "blew_up_step": np.array(blew), "excess0": excess0,
            "target": TARGET_FRACTION * excess0, "warnings": caught.messages}


# ------------------------------------------------------------------------------ response time
def _response(p):
    F = _formats.format(p["format"])
    mu = p.get("momentum", p["betas"][0] if "betas" in p else 0.0)
    steady = int(math.ceil(30 / (1 - mu))) if mu else 50
    after = int(math.ceil(3 / (1 - mu))) + 20 if mu else 20
    extra = {k: (tuple(p[k]) if isinstance(p[k], list) else p[k])
             for k in ("momentum", "betas", "alpha") if k in p}
    lr = p["lr"]
    with _Warnings() as caught:
        opt = make_optimizer(p["optimizer"], lr, convention=p.get("convention", "torch"), **extra)
        theta = np.zeros(1, dtype=F.dtype)
        plus = np.full(1, p["g"], dtype=F.dtype)
        minus = -plus
        updates = []
        for t in range(steady + after):
            theta[0] = 0
            opt.step(theta, plus if t < steady else minus)
            updates.append(float(theta[0]))
    updates = np.array(updates)
    before = updates[steady - 1]
    flipped = updates[steady:]
    sign = np.sign(before)
    turned = np.flatnonzero(np.sign(flipped) == -sign) if sign != 0 else np.array([], dtype=int)
    flip = int(turned[0] + 1) if turned.size else None
    plain = lr * abs(float(F.round(p["g"])))
    old_way = flipped[:turned[0]] if turned.size else flipped
    F_mu = float(F.round(mu)) if mu else 0.0
    nesterov = p["optimizer"] == "nesterov"
    return {"flip_step": flip, "steady_update": float(before),
            "overshoot": float(np.sum(np.abs(old_way)) / plain),
            "steady_over_plain": float(abs(before) / plain),
            "mu_in_format": F_mu,
            "predicted_flip_step": theory.flip_step(mu, nesterov) if mu else 1,
            "predicted_flip_step_rounded_mu": theory.flip_step(F_mu, nesterov) if mu else 1,
            "predicted_overshoot": theory.overshoot(mu, nesterov) if mu else 0.0,
            "updates_after_flip": flipped, "warnings": caught.messages}


def _nag_damping(p):
    """Sutskever's identity, per quadratic direction λ (module docstring)."""
    F = _formats.format(p["format"])
    mu, lr, steps = p["mu"], p["lr"], p["steps"]
    rows = []
    with _Warnings() as caught:
        for lam in p["curvatures"]:
            damped = mu * (1 - lr * lam)
            nag = make_optimizer("nesterov", lr, momentum=mu)
            cm = make_optimizer("momentum", lr, momentum=damped)
            p_nag = np.ones(1, dtype=F.dtype)
            theta = np.ones(1, dtype=F.dtype)
            lam_f = F.dtype.type(lam)
            deviation, previous, scale = 0.0, 1.0, 0.0
            for _ in range(steps):
                nag.step(p_nag, np.asarray(lam_f * p_nag, dtype=F.dtype))
                prior = float(theta[0])
                cm.step(theta, np.asarray(lam_f * theta, dtype=F.dtype))
                lookahead = float(theta[0]) + mu * (float(theta[0]) - prior)
                deviation = max(deviation, abs(float(p_nag[0]) - lookahead))
                scale = max(scale, abs(float(p_nag[0])))
                previous = prior
            del previous
            rows.append({"curvature": lam, "damped_momentum": damped,
                         "max_deviation": deviation, "relative_deviation": deviation / scale})
    return {"directions": rows, "warnings": caught.messages}


# ------------------------------------------------------------------------------ Adagrad
def _adagrad(p):
    F = _formats.format(p["format"])
    g, lr, eps = p["g"], p["lr"], 1e-10
    predicted = theory.adagrad_stall(g, F)
    limit = p["steps"]
    with _Warnings() as caught:
        opt = make_optimizer("adagrad", lr)
        theta = np.zeros(1, dtype=F.dtype)
        grad = np.full(1, g, dtype=F.dtype)
        last_growing, previous = 0, 0.0
        samples = sorted({int(round(x)) for x in np.geomspace(1, limit, 60)})
        eff_lr, travelled, at = [], 0.0, []
        for t in range(1, limit + 1):
            theta[0] = 0
            opt.step(theta, grad)
            travelled += abs(float(theta[0]))
            G = float(opt.state_of(theta)["sum"][0])
            if G != previous:
                last_growing = t
            previous = G
            if t in samples:
                at.append(t)
                eff_lr.append(abs(float(theta[0])) / abs(float(F.round(g))))
    ideal = [lr / (math.sqrt(t) * abs(g) + eps) for t in at]
    return {"measured_last_growing_step": last_growing if last_growing < limit else None,
            "accumulator": previous, "steps_run": limit,
            "predicted_last_growing_step": predicted["last_growing_step"],
            "predicted_accumulator": predicted["accumulator"],
            "sample_steps": np.array(at), "effective_lr": np.array(eff_lr),
            "ideal_effective_lr": np.array(ideal), "travelled": travelled,
            "ideal_travelled": sum(lr / math.sqrt(t) for t in range(1, limit + 1)),
            "warnings": caught.messages}


# ------------------------------------------------------------------------------ first steps, windows
FIRST_STEP_CASES = (
    # (label, optimizer, convention, extra hyperparameters, predicted |step|/lr as a function of g)
    ("RMSprop torch α=0.99", "rmsprop", "torch", {}, lambda g: theory.rmsprop_first_step(0.99, g, 1e-8)),
    ("RMSprop keras ρ=0.9", "rmsprop", "keras", {}, None),
    ("RMSprop optax ρ=0.9", "rmsprop", "optax", {}, None),
    ("RMSprop torch α=0.9", "rmsprop", "torch", {"alpha": 0.9}, lambda g: theory.rmsprop_first_step(0.9, g, 1e-8)),
    ("Adadelta torch ρ=0.9 ε=1e-6", "adadelta", "torch", {}, lambda g: theory.adadelta_first_step(0.9, 1e-6, g)),
    ("Adadelta Zeiler ρ=0.95 ε=1e-6", "adadelta", "torch", {"rho": 0.95, "eps": 1e-6},
     lambda g: theory.adadelta_first_step(0.95, 1e-6, g)),
    ("Adadelta keras ρ=0.95 ε=1e-7", "adadelta", "keras", {}, None),
    ("Adam torch", "adam", "torch", {}, lambda g: 1.0),
    ("Adagrad torch", "adagrad", "torch", {}, lambda g: 1.0),
)


def _keras_optax_prediction(optimizer, convention, g):
    # eps inside the root: |g| / sqrt((1 − ρ) g² + eps)
    if optimizer == "rmsprop":
        eps = 1e-7 if convention == "keras" else 1e-8
        return abs(g) / math.sqrt(0.1 * g * g + eps)
    if optimizer == "adadelta":         # keras: ρ 0.95, ε 1e-7
        return theory.adadelta_first_step(0.95, 1e-7, g)
    raise ValueError(optimizer)


def _first_step(p):
    F = _formats.format(p["format"])
    lr = p["lr"]
    rows = []
    with _Warnings() as caught:
        for label, name, convention, extra, predict in FIRST_STEP_CASES:
            for g in p["gradients"]:
                opt = make_optimizer(name, lr, convention=convention, **extra)
                theta = np.zeros(1, dtype=F.dtype)
                opt.step(theta, np.full(1, g, dtype=F.dtype))
                step = abs(float(theta[0])) / lr
                gf = float(F.round(g))
                pred = predict(gf) if predict else _keras_optax_prediction(name, convention, gf)
                rows.append({"case": label, "g": g, "step_over_lr": step, "predicted": pred})
    return {"rows": rows, "warnings": caught.messages}


def _window(p):
    F = _formats.format(p["format"])
    rows = []
    with _Warnings() as caught:
        for rho in p["rhos"]:
            n = theory.window_steps(rho)
            opt = make_optimizer("rmsprop", 1e-3, alpha=rho)
            theta = np.zeros(1, dtype=F.dtype)
            one = np.ones(1, dtype=F.dtype)
            for _ in range(n):
                theta[0] = 0
                opt.step(theta, one)
            share = float(opt.state_of(theta)["square_avg"][0])
            rows.append({"rho": rho, "rho_in_format": float(F.round(rho)), "window": n,
                         "weight_share": share, "predicted": theory.window_weight(rho)})
    return {"rows": rows, "warnings": caught.messages}


# ------------------------------------------------------------------------------ memory
MEMORY_CASES = (
    ("SGD", "sgd", {}), ("SGD momentum", "momentum", {}), ("SGD Nesterov", "nesterov", {}),
    ("Adagrad", "adagrad", {}), ("Adadelta", "adadelta", {}), ("RMSprop", "rmsprop", {}),
    ("RMSprop momentum", "rmsprop", {"momentum": 0.9}), ("RMSprop centered", "rmsprop", {"centered": True}),
    ("RMSprop centered+momentum", "rmsprop", {"centered": True, "momentum": 0.9}),
    ("Adam", "adam", {}), ("Adam AMSGrad", "adam", {"amsgrad": True}), ("AdamW", "adamw", {}),
)
MEMORY_SETUPS = (
    # (label, parameter format, options)
    ("float32", "float32", {}),
    ("bfloat16", "bfloat16", {}),
    ("bf16, f32 state", "bfloat16", {"state_format": "float32"}),
    ("bf16, f32 state+master", "bfloat16", {"state_format": "float32", "master_weights": True}),
    ("bf16, Kahan", "bfloat16", {"update": "kahan"}),
)


def _memory(p):
    n = p["elements"]
    rows = []
    with _Warnings() as caught:
        for label, name, extra in MEMORY_CASES:
            row = {"optimizer": label}
            for setup, fmt, options in MEMORY_SETUPS:
                F = _formats.format(fmt)
                opt = make_optimizer(name, 1e-3, **extra, **options)
                theta = np.zeros(n, dtype=F.dtype)
                opt.step(theta, np.full(n, 0.5, dtype=F.dtype))
                state = opt.state_of(theta)
                nbytes = sum(a.nbytes for k, a in state.items() if isinstance(a, np.ndarray))
                row[setup] = nbytes / n
                row[setup + " ×model"] = nbytes / theta.nbytes
                row[setup + " arrays"] = ",".join(sorted(k for k, a in state.items()
                                                          if isinstance(a, np.ndarray)))
            rows.append(row)
    return {"rows": rows, "setups": [s for s, _, _ in MEMORY_SETUPS], "warnings": caught.messages}


_PARTS = {"trajectory": _trajectory, "sweep": _sweep, "response": _response,
          "nag-damping": _nag_damping, "adagrad": _adagrad, "first-step": _first_step,
          "window": _window, "memory": _memory}


def run_cell(params: dict) -> dict:
    """Run one cell (module docstring); deterministic."""
    return _PARTS[params["part"]](params)


def summarize(params: dict, result: dict) -> dict:
    """The summary.csv measurements of one cell."""
    part = params["part"]
    if part == "trajectory":
        return {k: result.get(k) for k in ("final_excess", "min_excess", "swamped_share",
                                           "swamped_share_last_half", "first_swamped_step",
                                           "excess_at_first_swamp", "blew_up_step")}
    if part == "sweep":
        from .analysis import lr_range

        lo, hi, width = lr_range(result)
        finite = [v for v in result["final_excess"] if math.isfinite(v)]
        return {"best_final_excess": min(finite) if finite else math.nan, "target": result["target"],
                "lr_low": lo, "lr_high": hi, "width_decades": width}
    if part == "response":
        return {k: result.get(k) for k in ("flip_step", "predicted_flip_step",
                                           "predicted_flip_step_rounded_mu", "overshoot",
                                           "predicted_overshoot", "steady_over_plain", "mu_in_format")}
    if part == "adagrad":
        return {k: result.get(k) for k in ("measured_last_growing_step", "predicted_last_growing_step",
                                           "accumulator", "predicted_accumulator", "travelled",
                                           "ideal_travelled")}
    if part == "nag-damping":
        return {"max_relative_deviation": max(r["relative_deviation"] for r in result["directions"])}
    return {"rows": len(result.get("rows", []))}
