"""One cell of the gradient-averaging study: ``run_cell(params)`` dispatches on ``params["part"]``.

Parts (issue #13, part 3):

``one-batch``  k workers with batch b each vs one worker with batch k·b, same data and parameters
    (the one-worker run's θ_t): per-step gradient difference in ulps, and the two trajectories.
``shards``     unequal shards and DistributedSampler padding: the weight each sample gets, and the
    bias of the averaged gradient (float64: a semantic effect, not a rounding one).
``sum-vs-mean-sgd``   SGD on the all-reduced sum with lr vs on the mean with k·lr.
``sum-vs-mean-adam``  Adam on the sum vs on the mean (ε), and on the sum with k·ε (the control:
    equal to the mean in real arithmetic), at several gradient scales.
``reduction``  median relative error of the all-reduced mean of g ~ N(0, σ²) per format, algorithm
    and divide mode, for k = 2 … 1024 workers, with Higham's bounds.
``reduction-facts``   the reference facts: float16 post-division overflow, pre-division underflow
    thresholds, sequential bfloat16 stagnation.
``large-batch`` training with k workers at a fixed number of epochs under a learning-rate rule;
    per-epoch logs (rank 0's logged loss vs the global loss) for the loss/accuracy puzzle.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

import precision as pr
from precision import formats as _formats
from precision import parallel
from precision.exact.parallel import reduction_order
from . import model

__all__ = ["run_cell", "DEFAULTS"]

DEFAULTS = {
    "sgd_lr": 0.1,              # one-batch: plain SGD step size (mean over the global batch)
    "sum_lr": 0.01,             # sum-vs-mean: lr of the sum run; the mean run uses k·lr
    "adam_lr": 1e-3,
    "adam_eps": 1e-8,
    "adam_beta2": 0.999,
    "sigma": 1e-3,              # reduction: g ~ N(0, sigma²) (the reference's simulation)
    "base_lr": 0.005,           # large-batch: η₀ for one worker's batch b = 16 (tuned at k = 1)
    "momentum": 0.9,            # Goyal et al.'s momentum
    "warmup_epochs": 2,
}


def run_cell(params: dict) -> dict:
    part = params["part"]
    runner = _PARTS.get(part)
    if runner is None:
        raise ValueError(f"unknown part {part!r} (known: {', '.join(_PARTS)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return runner(params)


# ------------------------------------------------------------------------------------------------
# helpers

def _batches(n_rows: int, global_batch: int, steps: int, seed: int):
    """Index arrays of `steps` consecutive global batches: one shuffle per epoch (Goyal et al.),
    the last incomplete batch of an epoch dropped."""
    rng = np.random.default_rng([seed, 101])
    per_epoch = n_rows // global_batch
    out = []
    while len(out) < steps:
        order = rng.permutation(n_rows)
        out += [order[i * global_batch:(i + 1) * global_batch] for i in range(per_epoch)]
    return out[:steps]


def _sgd_step(params: dict, grad_vector: np.ndarray, lr: float) -> dict:
    """θ ← θ − lr·g (precision.optim.SGD, torch convention, no momentum: stateless) on copies."""
    new = {name: value.copy() for name, value in params.items()}
    grads = model.unflatten(grad_vector, params)
    opt = pr.optim.SGD(lr=lr)
    for name in model.PARAM_NAMES:
        opt.step(new[name], grads[name], key=name)
    return new


def _vector(params: dict) -> np.ndarray:
    return np.concatenate([params[name].astype(np.float64).reshape(-1) for name in model.PARAM_NAMES])


def _distance(a: dict, b: dict, start: dict, fmt) -> dict:
    """How far two parameter sets are apart: share of entries that differ, largest difference in
    ulps of a, and ||a − b|| / ||a − start||."""
    va, vb, v0 = _vector(a), _vector(b), _vector(start)
    finite = np.all(np.isfinite(va)) and np.all(np.isfinite(vb))
    if not finite:
        return {"differ": math.nan, "max_ulps": math.nan, "relative": math.nan}
    ulps = model.ulps_apart(va, vb, va, fmt)
    travelled = float(np.linalg.norm(va - v0))
    return {"differ": float(np.mean(va != vb)), "max_ulps": float(np.max(ulps)),
            "relative": float(np.linalg.norm(va - vb) / travelled) if travelled > 0 else math.nan}


# ------------------------------------------------------------------------------------------------
# part 1: is it one big batch?

def one_batch(p: dict) -> dict:
    fmt, k, b, steps, seed = p["format"], p["k"], p["batch"], p["steps"], p["seed"]
    data = model.make_data(p["n_train"], 16, seed)
    xa = model.augment(data.x, fmt)
    start = model.as_format(model.init_params(seed), fmt)
    one, many = dict(start), dict(start)
    lr = DEFAULTS["sgd_lr"]
    trace = {key: [] for key in ("grad_differ", "grad_median_ulps", "grad_max_ulps",
                                 "big_error_ulps", "workers_error_ulps", "param_differ",
                                 "param_max_ulps", "param_relative")}
    for idx in _batches(xa.shape[0], k * b, steps, seed):
        xb, yb = xa[idx], data.y[idx]
        big, _ = model.worker_gradients(one, xb, yb, 1)
        g_big = big[0]
        g_k = model.allreduce_mean(model.worker_gradients(one, xb, yb, k)[0])
        ref = model.gradient64(one, data.x[idx], yb)
        apart = model.ulps_apart(g_k, g_big, ref, fmt)
        trace["grad_differ"].append(float(np.mean(g_k != g_big)))
        trace["grad_median_ulps"].append(float(np.median(apart)))
        trace["grad_max_ulps"].append(float(np.max(apart)))
        trace["big_error_ulps"].append(float(np.median(model.ulps_apart(g_big, ref, ref, fmt))))
        trace["workers_error_ulps"].append(float(np.median(model.ulps_apart(g_k, ref, ref, fmt))))
        g_many = model.allreduce_mean(model.worker_gradients(many, xb, yb, k)[0])
        one = _sgd_step(one, g_big, lr)
        many = _sgd_step(many, g_many, lr)
        d = _distance(one, many, start, fmt)
        trace["param_differ"].append(d["differ"])
        trace["param_max_ulps"].append(d["max_ulps"])
        trace["param_relative"].append(d["relative"])
    out = {key: np.asarray(value) for key, value in trace.items()}
    out["loss_one"], out["accuracy_one"] = model.evaluate64(one, data.x, data.y)
    out["loss_many"], out["accuracy_many"] = model.evaluate64(many, data.x, data.y)
    out["unit_roundoff"] = _formats.format(fmt).u
    return out


def shards(p: dict) -> dict:
    """Per-sample weights and the averaged gradient's bias for unequal shards and sampler padding.

    Cases: (a) shards of the given sizes (mean of per-worker means vs the global mean); (b)
    DistributedSampler (no drop_last) on n samples over k replicas: padded by repeats.  The bias
    is measured on the study's model at its initial parameters in float64, relative to the norm of
    the global-mean gradient."""
    seed = p["seed"]
    data = model.make_data(p["n"], 16, seed)
    params = model.init_params(seed)
    per_sample = np.stack([model.gradient64(params, data.x[i:i + 1], data.y[i:i + 1])
                           for i in range(p["n"])])
    global_mean = per_sample.mean(axis=0)
    norm = float(np.linalg.norm(global_mean))
    if p["case"] == "sizes":
        sizes = list(p["sizes"])
        weights = [float(w) for w in parallel.shard_weights(sizes)]
        per_row = np.repeat(weights, sizes)
    else:  # sampler
        replicas = parallel.distributed_sampler_indices(p["n"], p["k"])
        counts = np.bincount(np.concatenate(replicas), minlength=p["n"])
        per_worker = replicas[0].size
        per_row = counts / (p["k"] * per_worker)
        sizes = [r.size for r in replicas]
        weights = sorted(set(per_row.tolist()))
    averaged = per_row @ per_sample
    return {"sizes": np.asarray(sizes), "weights": np.asarray(weights, dtype=np.float64),
            "global_weight": 1.0 / p["n"], "max_weight_ratio": float(np.max(per_row) * p["n"]),
            "min_weight_ratio": float(np.min(per_row) * p["n"]),
            "bias_relative": float(np.linalg.norm(averaged - global_mean) / norm),
            "repeated_samples": int(np.sum(per_row > 1.0 / p["n"] * (1 + 1e-12)))
            if p["case"] == "sampler" else 0}


# ------------------------------------------------------------------------------------------------
# part 2: sum vs mean

def sum_vs_mean_sgd(p: dict) -> dict:
    fmt, k, b, steps, seed = p["format"], p["k"], p["batch"], p["steps"], p["seed"]
    data = model.make_data(p["n_train"], 16, seed)
    xa = model.augment(data.x, fmt)
    start = model.as_format(model.init_params(seed), fmt)
    lr = DEFAULTS["sum_lr"]
    lr_mean = parallel.sum_reduction_lr(lr, k)
    mean_run, sum_run = dict(start), dict(start)
    F = _formats.format(fmt)
    trace = {key: [] for key in ("update_differ", "update_max_relative", "param_differ",
                                 "param_max_ulps", "param_relative")}
    for idx in _batches(xa.shape[0], k * b, steps, seed):
        xb, yb = xa[idx], data.y[idx]
        grads = model.worker_gradients(mean_run, xb, yb, k)[0]
        g_mean = model.allreduce_mean(grads)
        g_sum = model.allreduce_mean(grads, op="sum")
        by_mean = _sgd_step(mean_run, g_mean, lr_mean)
        by_sum = _sgd_step(mean_run, g_sum, lr)
        step_mean = _vector(by_mean) - _vector(mean_run)
        step_sum = _vector(by_sum) - _vector(mean_run)
        trace["update_differ"].append(float(np.mean(step_mean != step_sum)))
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.abs(step_mean - step_sum) / np.maximum(np.abs(step_mean), np.abs(step_sum))
        relative = relative[step_mean != step_sum]
        trace["update_max_relative"].append(float(np.max(relative)) if relative.size else 0.0)
        sum_grads = model.worker_gradients(sum_run, xb, yb, k)[0]
        sum_run = _sgd_step(sum_run, model.allreduce_mean(sum_grads, op="sum"), lr)
        mean_run = by_mean
        d = _distance(mean_run, sum_run, start, fmt)
        trace["param_differ"].append(d["differ"])
        trace["param_max_ulps"].append(d["max_ulps"])
        trace["param_relative"].append(d["relative"])
    out = {key: np.asarray(value) for key, value in trace.items()}
    out["lr_sum"] = float(F.round(lr))
    out["lr_mean"] = float(F.round(lr_mean))
    out["lr_mean_times_k_exact"] = float(F.round(lr_mean)) == float(F.round(lr)) * k
    out["loss_mean"], _ = model.evaluate64(mean_run, data.x, data.y)
    out["loss_sum"], _ = model.evaluate64(sum_run, data.x, data.y)
    return out


def _adam_run(fmt, start, data, xa, batches, k, op, eps, scale):
    params = {name: value.copy() for name, value in start.items()}
    opt = pr.optim.Adam(lr=DEFAULTS["adam_lr"], eps=eps)
    ratios = []
    for t, idx in enumerate(batches, start=1):
        grads = model.worker_gradients(params, xa[idx], data.y[idx], k, grad_scale=scale)[0]
        g = model.unflatten(model.allreduce_mean(grads, op=op), params)
        for name in model.PARAM_NAMES:
            opt.step(params[name], g[name], key=name)
        bc2 = 1.0 - DEFAULTS["adam_beta2"] ** t
        v = np.concatenate([opt.state_of(key=name)["exp_avg_sq"].astype(np.float64).reshape(-1)
                            for name in model.PARAM_NAMES])
        denominator = np.sqrt(v / bc2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(float(np.median(eps / denominator)))
    return params, np.asarray(ratios)


def sum_vs_mean_adam(p: dict) -> dict:
    """Adam on the mean (ε), on the sum (ε) and on the sum with k·ε (equal to the mean in reals:
    m and √v scale by k, so the update lr·m̂/(√v̂ + ε) of the sum is the mean's with ε/k)."""
    fmt, k, b, steps, seed = p["format"], p["k"], p["batch"], p["steps"], p["seed"]
    scale = 2.0 ** p["grad_scale_log2"]
    eps = DEFAULTS["adam_eps"]
    data = model.make_data(p["n_train"], 16, seed)
    xa = model.augment(data.x, fmt)
    start = model.as_format(model.init_params(seed), fmt)
    batches = _batches(xa.shape[0], k * b, steps, seed)
    mean_run, eps_over_root_v = _adam_run(fmt, start, data, xa, batches, k, "mean", eps, scale)
    sum_run, _ = _adam_run(fmt, start, data, xa, batches, k, "sum", eps, scale)
    control, _ = _adam_run(fmt, start, data, xa, batches, k, "sum", eps * k, scale)
    F = _formats.format(fmt)
    d_sum = _distance(mean_run, sum_run, start, fmt)
    d_control = _distance(mean_run, control, start, fmt)
    return {"eps_in_format": float(F.round(eps)), "k_eps_in_format": float(F.round(eps * k)),
            "median_eps_over_sqrt_v": float(np.nanmedian(eps_over_root_v))
            if np.any(np.isfinite(eps_over_root_v)) else math.nan,
            "eps_over_sqrt_v": eps_over_root_v,
            "sum_relative": d_sum["relative"], "sum_differ": d_sum["differ"],
            "control_relative": d_control["relative"], "control_differ": d_control["differ"],
            "finite_mean": bool(np.all(np.isfinite(_vector(mean_run)))),
            "finite_sum": bool(np.all(np.isfinite(_vector(sum_run)))),
            "loss_mean": model.evaluate64(mean_run, data.x, data.y)[0],
            "loss_sum": model.evaluate64(sum_run, data.x, data.y)[0]}


# ------------------------------------------------------------------------------------------------
# part 3: precision of the reduction

def addition_depth(k: int, algorithm: str) -> int:
    """The largest number of rounded additions any contribution passes through in `algorithm`'s
    order over k workers (ring: chunk 0), counted by running the exact twin's order on depths."""
    def add(a, b):
        if not isinstance(b, tuple):       # the pairwise order's empty lanes (0.0): x + 0 is exact
            return a
        if not isinstance(a, tuple):
            return b
        return (max(a[0], b[0]) + 1,)
    return int(reduction_order([(0,)] * k, add, algorithm)[0])


def gamma(n: int, u: float) -> float:
    """Higham's γ_n = n·u / (1 − n·u) (inf when n·u ≥ 1)."""
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def rounding_model_variance(contributions: np.ndarray, algorithm: str, wire, f_pre: float,
                            f_post: float, storage=None) -> np.ndarray:
    """Per column, the variance of the all-reduce's error under the standard statistical model of
    rounding: every rounded operation with exact result r adds an independent error uniform on
    ±ulp_W(r)/2 (variance ulp²/12), the errors carried to the end (scaled by 1/f_post).
    contributions: (k, n) exact float64 inputs g_i (ring: chunk 0's order for every column).
    storage: the gradients' format S (default: the wire format): a wire narrower than S adds the
    cast into the buffer, and an S narrower than the wire the cast of the result back to S.
    An estimate of the typical error, not a bound."""
    storage = wire if storage is None else storage
    x = contributions / f_pre
    var0 = wire.ulp(x) ** 2 / 12 if f_pre != 1 else np.zeros_like(x)
    if wire.p < storage.p:       # b_i = R_W(g_i) before anything else
        var0 = var0 + (wire.ulp(contributions) / f_pre) ** 2 / 12

    def add(a, b):
        if not isinstance(b, tuple):
            return a
        if not isinstance(a, tuple):
            return b
        total = a[0] + b[0]
        return (total, a[1] + b[1] + wire.ulp(total) ** 2 / 12)

    total, var = reduction_order([(x[i], var0[i]) for i in range(x.shape[0])], add, algorithm)
    var = var / f_post ** 2
    if f_post != 1:
        var = var + wire.ulp(total / f_post) ** 2 / 12
    if storage.p < wire.p:       # out = R_S(t)
        var = var + storage.ulp(total / f_post) ** 2 / 12
    return var


def _exact_mean(rows64: np.ndarray) -> np.ndarray:
    """Σ_i g_i / k per column, correctly rounded sums (math.fsum) of the stored values; k is a
    power of two here, so the division is exact too."""
    k = rows64.shape[0]
    return np.array([math.fsum(col) for col in rows64.T.tolist()]) / k


def reduction(p: dict) -> dict:
    fmt, accum, wire, algorithm = p["format"], p["accum"], p["wire"], p["algorithm"]
    S, A = _formats.format(fmt), _formats.format(accum)
    W = _formats.format(wire)
    out = {name: [] for name in (
        "k", "median_rel_pre", "median_rel_post", "median_rel_split", "p90_rel_pre",
        "p90_rel_post", "p90_rel_split", "inf_pre", "inf_post", "inf_split", "subnormal_pre",
        "zero_pre", "depth", "bound_post", "bound_pre", "estimate_post", "estimate_pre",
        "estimate_split")}
    for k in p["ks"]:
        rng = np.random.default_rng([p["seed"], k, 3])
        g = S.round(rng.normal(0.0, p["sigma"], size=(k, p["n"])))
        rows64 = g.astype(np.float64)
        exact = _exact_mean(rows64)
        keep = exact != 0
        out["k"].append(k)
        for divide in ("pre", "post", "split"):
            got = parallel.allreduce(g, divide=divide, algorithm=algorithm, accum=accum,
                                     wire_format=wire)[0].astype(np.float64)
            with np.errstate(invalid="ignore"):
                rel = np.abs(got[keep] - exact[keep]) / np.abs(exact[keep])
            rel = np.where(np.isnan(rel), np.inf, rel)
            out[f"median_rel_{divide}"].append(float(np.median(rel)))
            out[f"p90_rel_{divide}"].append(float(np.quantile(rel, 0.9)))
            out[f"inf_{divide}"].append(float(np.mean(~np.isfinite(got))))
        predivided = W.round(W.round(rows64).astype(np.float64) / k).astype(np.float64)
        out["subnormal_pre"].append(float(np.mean((predivided != 0) & (np.abs(predivided) < W.tiny))))
        out["zero_pre"].append(float(np.mean((predivided == 0) & (rows64 != 0))))
        # Higham (2002), §4.2: |ŝ − s| ≤ γ_d Σ|x_i| for a summation whose additions are at most d
        # deep; division by k adds one rounding (u); pre-division rounds each term with relative
        # error ≤ u and, below the normal range, an absolute error ≤ half the subnormal spacing.
        depth = addition_depth(k, algorithm)
        u = W.u
        abs_sum = np.sum(np.abs(rows64), axis=0)[keep]
        condition = abs_sum / np.abs(exact[keep] * k)
        eta = W.smallest_subnormal / 2
        out["depth"].append(depth)
        # a wire narrower than S adds the cast into the buffer (relative u_W per term), an S
        # narrower than the wire the final cast back (u_S); first order in u throughout
        cast_in = W.u * condition if W.p < S.p else 0.0
        cast_out = S.u if S.p < W.p else 0.0
        out["bound_post"].append(float(np.median(gamma(depth, u) * condition + u + cast_in + cast_out)))
        out["bound_pre"].append(float(np.median((gamma(depth, u) + u) * (1 + gamma(depth, u)) * condition
                                                + k * eta * (1 + gamma(depth, u)) / np.abs(exact[keep])
                                                + cast_in + cast_out)))
        # the statistical model of rounding: a Monte Carlo median of |error| / |mean|
        noise = np.random.default_rng([p["seed"], k, 5]).normal(size=int(keep.sum()))
        for divide, name in (("pre", "estimate_pre"), ("post", "estimate_post"),
                             ("split", "estimate_split")):
            f_pre, f_post = (float(f) for f in parallel.scale_factors(k, "mean", divide))
            var = rounding_model_variance(rows64, algorithm, W, f_pre, f_post, S)[keep]
            out[name].append(float(np.median(np.abs(noise) * np.sqrt(var) / np.abs(exact[keep]))))
    result = {key: np.asarray(value) for key, value in out.items()}
    result["unit_roundoff"] = W.u
    return result


def reduction_facts(p: dict) -> dict:
    """The reference facts, measured with precision.parallel.allreduce.

    overflow: float16, every worker holding 300: the smallest k (2..k_max) at which the result is
    inf, per divide mode and algorithm (theory for post: the sum 300·k rounds to inf once it
    reaches 65520 = 65504 + half an ulp, k ≥ 219 in exact arithmetic).
    stagnation: bfloat16 mean of k ones per algorithm (theory, sequential: 256 + 1 rounds to 256,
    so the sum stops at 2^8 and the mean is min(k, 256)/k).
    underflow: the smallest k at which a pre-divided |g| = 1e-3 becomes subnormal / zero per
    format (theory: k > |g|/2^emin, and k > |g|/(half the smallest subnormal))."""
    algorithms = list(p["algorithms"])
    k_max = p["k_max"]
    out = {"algorithms": algorithms}
    g300 = np.float16(300)
    for divide in ("pre", "post", "split"):
        for algorithm in algorithms:
            first = 0
            for k in range(2, k_max + 1):
                r = parallel.allreduce(np.full((k, 1), g300), divide=divide, algorithm=algorithm)[0, 0]
                if not np.isfinite(r):
                    first = k
                    break
            out[f"overflow_k_{divide}_{algorithm}"] = first
            out[f"at256_{divide}_{algorithm}"] = float(parallel.allreduce(
                np.full((256, 1), g300), divide=divide, algorithm=algorithm)[0, 0])
    out["overflow_k_theory"] = math.ceil((65504 + 16) / 300)
    ks = [2 ** j for j in range(1, int(math.log2(k_max)) + 1)]
    out["stagnation_k"] = np.asarray(ks)
    ones = _formats.format("bfloat16")
    for algorithm in algorithms:
        out[f"stagnation_{algorithm}"] = np.asarray([float(parallel.allreduce(
            np.ones((k, 1), dtype=ones.dtype), divide="post", algorithm=algorithm)[0, 0]) for k in ks])
    out["stagnation_theory"] = np.asarray([min(k, 2 ** ones.p) / k for k in ks], dtype=np.float64)
    g = 1e-3
    for name in ("float16", "bfloat16", "float32"):
        F = _formats.format(name)
        gf = float(F.round(g))
        subnormal = zero = 0
        for k in range(2, 1 << 26):
            v = float(F.round(gf / k))
            if not subnormal and v < F.tiny:
                subnormal = k
            if v == 0:
                zero = k
                break
            if k > 1 << 16 and not subnormal:
                break
        out[f"underflow_subnormal_k_{name}"] = subnormal
        out[f"underflow_zero_k_{name}"] = zero
        out[f"underflow_subnormal_theory_{name}"] = float(math.floor(gf / F.tiny) + 1)
    return out


# ------------------------------------------------------------------------------------------------
# part 4 (and 5): large-batch training

RULES = ("none", "linear", "linear-gradual", "linear-constant", "sqrt")


def lr_schedule(rule: str, k: int, b: int, iters_per_epoch: int, total_steps: int,
                warmup_epochs: float) -> np.ndarray:
    """η_t for each step under a rule, for k workers of batch b, η₀ = DEFAULTS["base_lr"] at b."""
    base = DEFAULTS["base_lr"]
    steps = np.arange(total_steps)
    if rule == "none":
        return np.full(total_steps, base)
    if rule == "linear":
        return np.full(total_steps, parallel.linear_scaling_lr(base, k * b, b))
    if rule == "sqrt":
        return np.full(total_steps, parallel.sqrt_scaling_lr(base, k * b, b))
    if rule == "linear-gradual":
        if k == 1:
            return np.full(total_steps, base)
        return np.asarray(parallel.goyal_lr(steps, iters_per_epoch, k * b, base_lr=base,
                                            base_batch_size=b, warmup_epochs=warmup_epochs), dtype=float)
    if rule == "linear-constant":
        warm = max(1, round(warmup_epochs * iters_per_epoch))
        return np.where(steps < warm, base, parallel.linear_scaling_lr(base, k * b, b))
    raise ValueError(f"unknown rule {rule!r}")


def large_batch(p: dict) -> dict:
    fmt, k, b, epochs, seed, rule = p["format"], p["k"], p["batch"], p["epochs"], p["seed"], p["rule"]
    data = model.make_data(p["n_train"], p["n_test"], seed)
    xa = model.augment(data.x, fmt)
    params = model.as_format(model.init_params(seed), fmt)
    iters_per_epoch = xa.shape[0] // (k * b)
    total = iters_per_epoch * epochs
    schedule = lr_schedule(rule, k, b, iters_per_epoch, total, p["warmup_epochs"])
    opt = pr.optim.SGD(lr=float(schedule[0]), momentum=DEFAULTS["momentum"])
    batches = _batches(xa.shape[0], k * b, total, seed)
    logs = {key: [] for key in ("rank0_logged_loss", "global_logged_loss", "train_loss",
                                "train_accuracy", "test_loss", "test_accuracy")}
    rank0, global_ = [], []
    rank0_step, global_step = [], []
    diverged_at = -1
    for t, idx in enumerate(batches):
        grads, losses = model.worker_gradients(params, xa[idx], data.y[idx], k)
        rank0.append(losses[0])
        global_.append(float(np.mean(losses)))
        if t >= total - iters_per_epoch:
            rank0_step.append(losses[0])
            global_step.append(float(np.mean(losses)))
        g = model.unflatten(model.allreduce_mean(grads), params)
        opt.lr = float(schedule[t])
        for name in model.PARAM_NAMES:
            opt.step(params[name], g[name], key=name)
        if (t + 1) % iters_per_epoch == 0:
            logs["rank0_logged_loss"].append(float(np.mean(rank0)))
            logs["global_logged_loss"].append(float(np.mean(global_)))
            rank0, global_ = [], []
            loss, acc = model.evaluate64(params, data.x, data.y)
            logs["train_loss"].append(loss)
            logs["train_accuracy"].append(acc)
            loss, acc = model.evaluate64(params, data.x_test, data.y_test)
            logs["test_loss"].append(loss)
            logs["test_accuracy"].append(acc)
            if diverged_at < 0 and not math.isfinite(loss):
                diverged_at = t + 1
    out = {key: np.asarray(value) for key, value in logs.items()}
    out["rank0_step_loss"] = np.asarray(rank0_step)
    out["global_step_loss"] = np.asarray(global_step)
    out["steps"] = total
    out["peak_lr"] = float(np.max(schedule))
    out["diverged_at_step"] = diverged_at
    return out


_PARTS = {"one-batch": one_batch, "shards": shards, "sum-vs-mean-sgd": sum_vs_mean_sgd,
          "sum-vs-mean-adam": sum_vs_mean_adam, "reduction": reduction,
          "reduction-facts": reduction_facts, "large-batch": large_batch}
