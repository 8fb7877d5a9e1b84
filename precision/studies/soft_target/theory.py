"""Predicted floors of soft-target training in a format, to put beside the measured ones.

Notation: F the format, u = 2^-p its unit roundoff, ulp(x) its spacing at x (``F.ulp``), L* the
minimum of the mean cross-entropy (for the bias-only model L* = H(t̄), the entropy of the mean target),
θ* the optimum, H the Hessian of CE at θ* and H⁺ its pseudo-inverse (the softmax is invariant to adding
a constant to every logit of a row, so H is singular along those directions and gradients have no
component there). Near θ* the loss is the quadratic model

    E(θ) = CE(θ) − L* ≈ ½ Δᵀ H Δ,    g = ∇CE(θ) ≈ H Δ,    so    E ≈ ½ gᵀ H⁺ g.        (Q)

1. **Loss resolution.** A reported loss is a value of F; near L* consecutive values are ulp(L*)
   apart, so a change in the true loss below about half of that is invisible. The loss freezes when
   the excess is of order L*·u (between ulp(L*)/2 and ulp(L*)): :func:`loss_resolution` = ulp(L*),
   :func:`predicted_excess_at_loss_freeze` = L*·u. A line search that accepts a step only if the
   reported loss decreases (L-BFGS) stops there too: :func:`predicted_line_search_floor` = L*·u.

2. **Update swamping** (the ulp(w)/2 rule). A gradient step w ← R(w − R(lr·g)) leaves w unchanged
   when |lr·g| < ulp(w)/2. Gradient descent therefore stops at the first θ whose every gradient
   component satisfies |g_i| ≤ s_i = ulp(w_i)/(2·lr) (heavy-ball momentum: the steady-state step
   is lr·g/(1−β), so s_i = (1−β)·ulp(w_i)/(2·lr)). Assuming the final gradient components are
   independent and uniform on [−s_i, s_i] and the quadratic model (Q) holds::

       E_swamp = ½ Σ_i (H⁺)_ii · s_i²/3.

3. **Gradient resolution.** The computed gradient is the exact one plus rounding errors e; GD (even
   with exact updates) stops where the computed gradient vanishes, i.e. at g ≈ −e, and by (Q)
   E_grad = ½ E[eᵀ H⁺ e]. The dominant error is the rounding of the probabilities p (to ulp(p)/2)
   before p − t is formed. For the bias-only model every row shares one p, so the errors do not
   average: e_c ≈ the rounding error of p_c, uniform on ±ulp(t̄_c)/2 at the optimum p = t̄, so::

       E_grad(bias-only) = ½ Σ_c (H⁺)_cc ulp(t̄_c)²/12      (H = diag(t̄) − t̄t̄ᵀ, (H⁺)_cc ~ 1/t̄_c).

   For a linear model with features x̃_r, the errors of different rows are independent:
   Var(e_jc) = Σ_r x̃_rj² ulp(p*_rc)²/12 / N², and E_grad = ½ Σ_jc (H⁺)_jc,jc Var(e_jc).

   For the MLP the gradient is backpropagated, g = Σ_rc J_rc δ_rc with J_rc = ∂z_rc/∂θ at θ* and
   δ_rc = (p_rc − t_rc)/N, so a rounding error ε_rc of p_rc (uniform on ±ulp(p*_rc)/2) reaches the
   gradient as e = Σ_rc J_rc ε_rc/N, and E_grad = ½ E[eᵀH⁺e] =
   ½ Σ_rc (ulp(p*_rc)²/12/N²) J_rcᵀ H⁺ J_rc (rows independent). Rows of one group (same targets,
   same centre, logits differing only through the nuisance weights) round the same p the same way
   once their logits agree to below an ulp: then e = Σ_gc K_gc ε_gc with K_gc = Σ_{r∈g} J_rc/N and
   E_grad = ½ Σ_gc (ulp(t_gc)²/12) K_gcᵀ H⁺ K_gc, larger by about the group size
   (:func:`mlp_gradient_resolution_floor`). Both count only the rounding of p; in the MLP the
   forward pass (hidden activations, logits: |z| up to ~3, sums of 5–7 rounded terms) adds errors of
   the same order or larger, so the MLP's ``predicted_gradient_floor`` is instead taken from the
   format's *measured* gradient error near θ*: with e_k = g_F(θ_k) − ∇CE(θ_k) at K points θ_k
   (θ* and θ* + a few-ulp perturbations, rounded to F; g_F the study's own kernels, ∇CE exact),
   E_grad ≈ ½ mean_k e_kᵀ H⁺ e_k (:func:`gradient_error_floor`). It is a prediction in the same
   sense (no training run enters it), with the rounding model replaced by the kernels' actual errors.

4. **Representation.** Even exact training ends on a value of F: rounding θ* to F costs, for
   independent uniform rounding errors, E_repr = ½ Σ_i H_ii ulp(θ*_i)²/12.

All these are of order u² (times problem constants) except the loss-resolution floors, which are of
order u: that gap is the study's headline.
"""
from __future__ import annotations

import math

import numpy as np

from precision import formats as _formats

__all__ = ["loss_resolution", "predicted_excess_at_loss_freeze", "predicted_line_search_floor",
           "swamping_floor", "gradient_resolution_floor", "mlp_gradient_resolution_floor",
           "gradient_error_floor", "representation_floor", "predicted_floors"]


def _fmt(fmt):
    return _formats.format(fmt)


def _ulp(values, fmt):
    """ulp in fmt at each value (the value need not be in fmt), as float64."""
    fmt = _fmt(fmt)
    v = np.abs(np.asarray(values, dtype=np.float64))
    _, exp2 = np.frexp(np.where(v > 0, v, 1.0))      # v = m·2^exp2 with 1/2 <= m < 1
    exponent = np.where(v > 0, np.maximum(exp2 - 1, fmt.emin), fmt.emin)
    return np.ldexp(1.0, (exponent - fmt.p + 1).astype(int))


def loss_resolution(min_loss: float, fmt) -> float:
    """ulp(L*) in fmt: the spacing of reported losses near the minimum."""
    return float(_ulp(min_loss, fmt))


def predicted_excess_at_loss_freeze(min_loss: float, fmt) -> float:
    """L*·u: the excess below which the reported loss stops resolving improvements."""
    return float(min_loss) * _fmt(fmt).u


def predicted_line_search_floor(min_loss: float, fmt) -> float:
    """L*·u: where a line search that needs a reported decrease stops."""
    return predicted_excess_at_loss_freeze(min_loss, fmt)


def _pinv_diag(hessian):
    return np.diag(np.linalg.pinv(hessian, rcond=1e-10, hermitian=True))


def swamping_floor(hessian, w_star, lr: float, fmt, momentum: float = 0.0) -> float:
    """E_swamp = ½ Σ_i (H⁺)_ii s_i²/3 with s_i = (1 − β) ulp(w*_i)/(2 lr) (module docstring, 2).

    hessian: (P, P) at the optimum, rows in the order of ``w_star.ravel()``.
    """
    s = (1.0 - momentum) * _ulp(np.ravel(w_star), fmt) / (2.0 * lr)
    return float(0.5 * np.sum(_pinv_diag(hessian) * s * s / 3.0))


def gradient_resolution_floor(x, p_star, hessian, fmt, shared_prediction: bool) -> float:
    """E_grad (module docstring, 3). x: (N, D) features; p_star: (N, C) predictions at the optimum.

    shared_prediction: True when every row has the same prediction (bias-only): errors don't average.
    """
    x = np.asarray(x, dtype=np.float64)
    p_star = np.asarray(p_star, dtype=np.float64)
    n = x.shape[0]
    if shared_prediction:
        err_var = (_ulp(p_star[0], fmt) ** 2 / 12.0)[None, :] * (x.mean(axis=0) ** 2)[:, None]
    else:
        err_var = (x ** 2).T @ (_ulp(p_star, fmt) ** 2 / 12.0) / n ** 2
    return float(0.5 * np.sum(_pinv_diag(hessian) * err_var.ravel()))


def mlp_gradient_resolution_floor(jacobian, p_star, hessian, fmt, groups=None) -> float:
    """E_grad of the MLP (module docstring, 3). jacobian: (N, C, P) ∂z/∂θ at θ*; p_star: (N, C);
    groups: (N,) group index of each row, whose rows share one rounding error (None: independent)."""
    jac = np.asarray(jacobian, dtype=np.float64)
    p_star = np.asarray(p_star, dtype=np.float64)
    n = jac.shape[0]
    h_pinv = np.linalg.pinv(hessian, rcond=1e-10, hermitian=True)
    variance = _ulp(p_star, fmt) ** 2 / 12.0                       # (N, C): of each p's rounding
    if groups is None:
        quad = np.einsum("rcp,pq,rcq->rc", jac, h_pinv, jac)        # J_rcᵀ H⁺ J_rc
        return float(0.5 * np.sum(variance * quad) / n ** 2)
    groups = np.asarray(groups)
    total = 0.0
    for g in np.unique(groups):
        rows = groups == g
        k = jac[rows].sum(axis=0) / n                               # K_gc: (C, P)
        total += float(np.sum(variance[rows][0] * np.einsum("cp,pq,cq->c", k, h_pinv, k)))
    return 0.5 * total


def gradient_error_floor(errors, hessian) -> float:
    """½ mean_k e_kᵀ H⁺ e_k for gradient errors e_k (rows of `errors`, (K, P)): the excess at which the
    exact gradient is as large as the computed gradient's error (module docstring, 3)."""
    errors = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    h_pinv = np.linalg.pinv(hessian, rcond=1e-10, hermitian=True)
    return float(0.5 * np.mean(np.einsum("kp,pq,kq->k", errors, h_pinv, errors)))


def representation_floor(hessian, w_star, fmt) -> float:
    """E_repr = ½ Σ_i H_ii ulp(w*_i)²/12: expected excess of θ* rounded to fmt."""
    ulp = _ulp(np.ravel(w_star), fmt)
    return float(0.5 * np.sum(np.diag(hessian) * ulp * ulp / 12.0))


def predicted_floors(problem, fmt, optimizer: str, lr: float, momentum: float = 0.0,
                     gradient_errors=None) -> dict:
    """Every prediction for one run, and the one that applies to its optimizer.

    ``predicted_floor``: gd and momentum: max(swamping, gradient resolution, representation) (those
    defined); lbfgs: the line-search floor L*·u; adam: NaN (its step is not lr·g; no prediction).
    For the MLP (problems.py) the optimum is not a point but a manifold of exact fits; swamping and
    representation use the Hessian and parameters of the teacher θ* on it (the run converges to a
    nearby point of the manifold: same binades of θ, similar curvature). Its gradient-resolution
    prediction is :func:`gradient_error_floor` of ``gradient_errors`` ((K, P) errors of the format's
    gradient near θ*, computed by the caller) when given; the p-rounding-only estimates of 3. are
    returned as ``predicted_gradient_floor_p_shared`` / ``_p_independent``.
    """
    fmt = _fmt(fmt)
    min_loss = problem.min_loss64
    out = {
        "loss_resolution": loss_resolution(min_loss, fmt),
        "unit_roundoff": fmt.u,
        "predicted_excess_at_loss_freeze": predicted_excess_at_loss_freeze(min_loss, fmt),
        "predicted_line_search_floor": predicted_line_search_floor(min_loss, fmt),
        "predicted_swamping_floor": math.nan,
        "predicted_gradient_floor": math.nan,
        "predicted_representation_floor": math.nan,
        "predicted_gradient_floor_p_shared": math.nan,
        "predicted_gradient_floor_p_independent": math.nan,
    }
    if problem.hessian is not None and optimizer in ("gd", "momentum"):
        out["predicted_swamping_floor"] = swamping_floor(problem.hessian, problem.w_star, lr, fmt,
                                                         momentum)
    if problem.hessian is not None:
        out["predicted_representation_floor"] = representation_floor(problem.hessian,
                                                                     problem.w_star, fmt)
    if problem.kind == "linear":
        out["predicted_gradient_floor"] = gradient_resolution_floor(
            problem.x, problem.p_star, problem.hessian, fmt,
            shared_prediction=problem.name == "bias-only")
    if problem.kind == "mlp" and problem.mlp_star is not None:
        from .problems import mlp_groups, mlp_jacobian64

        jac = mlp_jacobian64(problem.x, problem.mlp_star)
        out["predicted_gradient_floor_p_shared"] = mlp_gradient_resolution_floor(
            jac, problem.p_star, problem.hessian, fmt, groups=mlp_groups(problem))
        out["predicted_gradient_floor_p_independent"] = mlp_gradient_resolution_floor(
            jac, problem.p_star, problem.hessian, fmt)
        if gradient_errors is not None:
            out["predicted_gradient_floor"] = gradient_error_floor(gradient_errors, problem.hessian)
    if optimizer in ("gd", "momentum"):
        floors = [out[k] for k in ("predicted_swamping_floor", "predicted_gradient_floor",
                                   "predicted_representation_floor") if math.isfinite(out[k])]
        out["predicted_floor"] = max(floors) if floors else math.nan
    elif optimizer == "lbfgs":
        out["predicted_floor"] = out["predicted_line_search_floor"]
    else:
        out["predicted_floor"] = math.nan
    return out
