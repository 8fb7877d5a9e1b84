"""Every logged PPO diagnostic recomputed exactly and in each format, from a run's records.

The inputs are the float32 values torch produced (log-probabilities, distribution parameters,
values, returns); "exact" means the mathematical value of the diagnostic of those inputs
(:mod:`precision.exact.rl`, mpmath / rationals).  The log-ratio x = logp_new - logp_old is the
difference of two float32 numbers, exact in float64 (their exponents differ by far less than 29).
In format F a diagnostic is :mod:`precision.rl`'s kernel on the inputs rounded to F (arithmetic
in F, ``accum`` left at its default); its error is measured against the exact value.

Also here: Schulman's reference ratios by Monte Carlo and in closed form, and the sweep of k3
(naive and expm1) over the log-ratio's magnitude.
"""
from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np

from precision import formats as _formats
from precision import rl
from precision.exact import rl as exact_rl

ALL_FORMATS = ("float16", "bfloat16", "float32", "float64")
EXACT_DPS = 20          # digits of the exact values: far beyond any format's error
TINY_BATCH = 4          # the explained variance of batches this small (item 3)
DISAGREE = 0.1          # |EV_sb3 - EV_rllib| above which the conventions "disagree"
CONSTANT_SCALES = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def _f(value) -> float:
    return float(value)


def _mean_of_rows(values) -> float:
    return float(mpmath.fsum(values) / len(values))


def _rel(value, exact) -> float:
    value, exact = float(value), float(exact)
    if not math.isfinite(value):
        return math.inf
    if exact == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - exact) / abs(exact)


def _abs(value, exact) -> float:
    value, exact = float(value), float(exact)
    if math.isnan(value) and math.isnan(exact):
        return 0.0
    return abs(value - exact) if math.isfinite(value) else math.inf


def _entropy(kind, params, fmt=None, exact=False):
    """Mean entropy over the rows (summed over action dimensions)."""
    if exact:
        if kind == "gaussian":
            return _f(exact_rl.gaussian_entropy(params[1], dps=EXACT_DPS))
        return _f(exact_rl.categorical_entropy(params[0], dps=EXACT_DPS))
    f = _formats.format(fmt)
    if kind == "gaussian":
        return _f(rl.gaussian_entropy(f.round(params[1])))
    return _f(rl.categorical_entropy(f.round(params[0])))


def _kl(kind, old, new, fmt=None, exact=False):
    """Mean analytic KL(old || new) over the rows (what RLlib logs)."""
    if exact:
        if kind == "gaussian":
            return _f(exact_rl.gaussian_kl(*old, *new, dps=EXACT_DPS))
        return _f(exact_rl.categorical_kl(old[0], new[0], dps=EXACT_DPS))
    f = _formats.format(fmt)
    if kind == "gaussian":
        return _f(rl.gaussian_kl(*(f.round(a) for a in (*old, *new))))
    return _f(rl.categorical_kl(f.round(old[0]), f.round(new[0])))


def update_diagnostics(rec: dict, formats=ALL_FORMATS) -> dict:
    """The diagnostics of one update record (runs.RecordingPPO): scalars, see the keys."""
    kind, old, new = rec["kind"], rec["old"], rec["new"]
    x = rec["new_logp"].astype(np.float64) - rec["old_logp"].astype(np.float64)
    values, returns = rec["values"], rec["returns"]
    mbs, per_epoch = rec["minibatches"], rec["minibatches_per_epoch"]
    logged = rec["logged"]
    out = {"step": rec["step"]}
    for key in ("entropy_loss", "approx_kl", "explained_variance", "value_loss", "std",
                "clip_fraction"):
        out[f"sb3_{key}"] = logged.get(key, math.nan)

    # 1. entropy of the rollout's (old) policy, and what SB3 logs (-mean over all minibatches)
    out["entropy_exact"] = _entropy(kind, old, exact=True)
    if kind == "gaussian":
        log_std = old[1].astype(np.float64)
        out["action_dims"] = int(log_std.shape[-1])
        out["entropy_per_dim_exact"] = out["entropy_exact"] / log_std.shape[-1]
        out["sigma_geometric_mean"] = float(np.exp(log_std.mean()))
        out["sigma_min"] = float(np.exp(log_std.min()))
        out["sigma_max"] = float(np.exp(log_std.max()))
        out["rows_negative_entropy"] = float(np.mean(log_std.sum(axis=-1) < -rl.HALF_LOG_2PI_E
                                                     * log_std.shape[-1]))
    mb_entropy = [_entropy(kind, mb["params"], exact=True) for mb in mbs]
    out["sb3_entropy_loss_exact"] = -_mean_of_rows(mb_entropy)
    out["sb3_entropy_loss_torch_error"] = _abs(out["sb3_entropy_loss"],
                                               out["sb3_entropy_loss_exact"])

    # 2. KL: the update's exact KL(old || new) and the estimators on its samples (x ~ old)
    out["kl_exact"] = _kl(kind, old, new, exact=True)
    for est in ("k1", "k2", "k3"):
        out[f"{est}_exact"] = _f(exact_rl.approx_kl(x, estimator=est, dps=EXACT_DPS))
    per_sample = {"k1": -x, "k2": 0.5 * x * x, "k3": np.expm1(x) - x}
    for est, terms in per_sample.items():
        out[f"{est}_sample_std"] = float(terms.std())
    out["k1_samples_negative"] = float(np.mean(x > 0))
    # SB3's approx_kl: mean over the LAST epoch's minibatches of naive k3, in float32 (torch)
    last = mbs[-per_epoch:]
    out["sb3_approx_kl_exact"] = _mean_of_rows(
        [exact_rl.approx_kl(mb["log_ratio"], dps=EXACT_DPS) for mb in last])
    out["sb3_approx_kl_repro_f32"] = float(np.mean(
        [rl.approx_kl(mb["log_ratio"], method="naive") for mb in last]))
    k1_means = [math.fsum(-mb["log_ratio"].astype(np.float64)) for mb in mbs]
    out["minibatches"] = len(mbs)
    out["minibatch_k1_negative"] = float(np.mean([v < 0 for v in k1_means]))
    naive32 = [float(rl.approx_kl(mb["log_ratio"], method="naive")) for mb in mbs]
    out["minibatch_k3_naive_f32_negative"] = float(np.mean([v < 0 for v in naive32]))

    # 3. explained variance, three conventions (CleanRL's formula is SB3's)
    for conv in ("sb3", "rllib"):
        out[f"ev_{conv}_exact"] = _f(exact_rl.explained_variance(values, returns, convention=conv))
    out["ev_sb3_repro_f32"] = _f(rl.explained_variance(values, returns, convention="sb3"))
    chunks = len(values) // TINY_BATCH
    diffs = []
    for c in range(chunks):
        sl = slice(c * TINY_BATCH, (c + 1) * TINY_BATCH)
        y_pred, y_true = values[sl].astype(np.float64), returns[sl].astype(np.float64)
        a = float(rl.explained_variance(y_pred, y_true, convention="sb3"))
        b = float(rl.explained_variance(y_pred, y_true, convention="rllib"))
        diffs.append(abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf)
    out["ev_tiny_disagree"] = float(np.mean(np.asarray(diffs) > DISAGREE))
    out["ev_tiny_median_absdiff"] = float(np.median(diffs))

    # 4. precision: each diagnostic in each format against its exact value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in formats:
            f = _formats.format(name)
            s = f.short
            xf = f.round(x)
            out[f"err_k1_{s}"] = _rel(rl.approx_kl(xf, estimator="k1"), out["k1_exact"])
            out[f"err_k3_naive_{s}"] = _rel(rl.approx_kl(xf, method="naive"), out["k3_exact"])
            out[f"err_k3_expm1_{s}"] = _rel(rl.approx_kl(xf), out["k3_exact"])
            x_from_logp = f.round(rec["new_logp"]) - f.round(rec["old_logp"])   # one rounding in F
            out[f"err_k3_logp_{s}"] = _rel(rl.approx_kl(x_from_logp), out["k3_exact"])
            out[f"err_entropy_{s}"] = _abs(_entropy(kind, old, name), out["entropy_exact"])
            out[f"err_kl_{s}"] = _rel(_kl(kind, old, new, name), out["kl_exact"])
            for conv in ("sb3", "rllib"):
                ev = rl.explained_variance(f.round(values), f.round(returns), convention=conv)
                out[f"err_ev_{conv}_{s}"] = _abs(ev, out[f"ev_{conv}_exact"])
    return out


def near_constant_returns(values, returns, scales=CONSTANT_SCALES) -> dict:
    """EV (exact, sb3 and rllib) when the returns' spread shrinks by `scale` while the value
    function's error stays: y_s = m + s (y - m), yhat_s = y_s + (yhat - y) (float64 inputs)."""
    y = returns.astype(np.float64)
    err = values.astype(np.float64) - y
    m = float(y.mean())
    out = {"scales": list(scales), "sb3": [], "rllib": []}
    for s in scales:
        ys = m + s * (y - m)
        yhat = ys + err
        for conv in ("sb3", "rllib"):
            out[conv].append(_f(exact_rl.explained_variance(yhat, ys, convention=conv)))
    return out


# ----------------------------------------------------------------------------- Schulman's check
SCHULMAN_REFERENCE = {0.1: {"k1": 20.0, "k2": 1.42, "k3": 1.42, "k2_bias": 0.0025},
                      1.0: {"k1": 2.0, "k2": 1.73, "k3": 1.70, "k2_bias": 0.25}}


def schulman_closed_form(mu: float) -> dict:
    """std/KL of k1, k2, k3 and k2's relative bias for q = N(0,1), p = N(mu,1), x ~ q, exactly:
    log r ~ N(-mu^2/2, mu^2), KL = mu^2/2; sd(k1) = mu; Var(k2) = (mu^4 + mu^6/2)/2;
    Var(k3) = Var(r) + Var(log r) - 2 Cov(r, log r) = e^(mu^2) - 1 - mu^2; E k2 = KL (1 + mu^2/4)."""
    m = mpmath.mpf(mu)
    kl = m * m / 2
    return {"k1": float(m / kl), "k2": float(mpmath.sqrt((m ** 4 + m ** 6 / 2) / 2) / kl),
            "k3": float(mpmath.sqrt(mpmath.expm1(m * m) - m * m) / kl), "k2_bias": float(m * m / 4)}


def schulman_monte_carlo(mu: float, n_samples: int, seed: int, batches: int = 20) -> dict:
    """Monte Carlo std/KL and relative bias of k1, k2, k3 (float64), each with the spread over
    `batches` equal batches as its standard error.  KL = gaussian_kl's exact value."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(n_samples))
    log_r = mu * x - 0.5 * mu * mu            # log N(x; mu, 1) - log N(x; 0, 1)
    kl = _f(exact_rl.gaussian_kl(np.array([0.0]), np.array([0.0]), np.array([mu]), np.array([0.0])))
    terms = {"k1": -log_r, "k2": 0.5 * log_r ** 2, "k3": np.expm1(log_r) - log_r}
    out = {"mu": mu, "kl": kl, "n_samples": int(n_samples)}
    for est, t in terms.items():
        per = t.reshape(batches, -1)
        ratios = per.std(axis=1) / kl
        biases = per.mean(axis=1) / kl - 1
        out[f"{est}_std_over_kl"] = float(t.std() / kl)
        out[f"{est}_std_over_kl_se"] = float(ratios.std(ddof=1) / math.sqrt(batches))
        out[f"{est}_bias"] = float(t.mean() / kl - 1)
        out[f"{est}_bias_se"] = float(biases.std(ddof=1) / math.sqrt(batches))
    return out


# ----------------------------------------------------------------------------- k3 sweep
SWEEP_DELTAS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def k3_sweep(formats=ALL_FORMATS, deltas=SWEEP_DELTAS, batch: int = 1024, seed: int = 0) -> dict:
    """Relative error of naive and expm1 k3 in each format: one log-ratio x = R_F(delta), and
    the mean over a batch x_i = R_F(delta z_i), z ~ N(0, 1); exact = k3 of the rounded inputs
    (so this is the arithmetic's loss, not the input rounding's)."""
    z = np.random.default_rng(seed).standard_normal(batch)
    out = {"deltas": list(deltas)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in formats:
            f = _formats.format(name)
            for method in ("naive", "expm1"):
                single, batched = [], []
                for d in deltas:
                    xs = f.round(np.array([d]))
                    single.append(_rel(rl.approx_kl(xs, method=method),
                                       exact_rl.approx_kl(xs, dps=EXACT_DPS)))
                    xb = f.round(d * z)
                    batched.append(_rel(rl.approx_kl(xb, method=method),
                                        exact_rl.approx_kl(xb, dps=EXACT_DPS)))
                out[f"{f.short}_{method}_single"] = single
                out[f"{f.short}_{method}_batch"] = batched
    return out
