"""Parts 1-5 of the batch-norm statistics study: one function per part, each one cell.

Every running statistic is ``precision.batchnorm.RunningStats``, every batch statistic
``precision.stats``; the references are exact (``.exact``).  Data are drawn in float64 and rounded
once into the cell's format, so "the population" is the stored data.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from precision import batchnorm as _bn
from precision import formats as _formats
from precision import stats as _stats
from . import theory
from .exact import StreamSum, column_moments

# ------------------------------------------------------------------------------------------------
# part 1: moving average vs population

# (label, convention, momentum); alpha = the weight of the new batch
MOVING_CONFIGS = [("torch a=0.3", "torch", 0.3), ("torch a=0.1", "torch", 0.1),
                  ("torch a=0.01", "torch", 0.01), ("torch a=0.001", "torch", 0.001),
                  ("keras 0.99", "keras", 0.99), ("cumulative", "torch", None)]


def alpha_of(convention, momentum):
    if momentum is None:
        return None
    return 1.0 - momentum if convention in ("keras", "flax") else momentum


def _checkpoints(total, count=14):
    pts = np.unique(np.round(np.logspace(0, math.log10(total), count)).astype(int))
    return [int(p) for p in pts if p >= 1]


def moving_average(fmt, data, size, seed):
    """Part 1.  C channels of a dataset of D samples, batches of B drawn epoch by epoch (shuffled);
    ``data`` "stationary": x = round(mu + sigma z) fixed; "drifting": the network changes, sample i
    at batch t is round(mu_t + sigma_t z_i) with mu_t = mu + A sigma q^t, sigma_t = sigma (1 + q^t / 2),
    q = exp(-1/tau).  Each convention's running statistics are compared, at checkpoints, with the
    exact population statistics of the network at that batch."""
    f = _formats.format(fmt)
    channels, batch = 64, 32
    epoch_batches = 64 if size == "smoke" else 256
    epochs = {"smoke": 2, "quick": 10, "full": 100}[size]
    dataset = batch * epoch_batches
    total = epochs * epoch_batches
    tau = total / 8.0
    q = math.exp(-1.0 / tau)
    offset = 2.0
    rng = np.random.default_rng([seed, 1, f.p, 0 if data == "stationary" else 1])
    z = rng.standard_normal((dataset, channels))
    mu = rng.uniform(-2.0, 2.0, channels)
    sigma = np.exp(rng.uniform(math.log(0.5), math.log(2.0), channels))

    def network(t):   # (mean, std) of every channel after t batches of training
        if data == "stationary":
            return mu, sigma
        return mu + offset * sigma * q ** t, sigma * (1.0 + 0.5 * q ** t)

    def activations(rows, t):
        m, s = network(t)
        return f.round(m[None, :] + s[None, :] * z[rows])

    fixed = activations(slice(None), 0) if data == "stationary" else None
    running = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _formats.PrecisionWarning)
        for label, conv, mom in MOVING_CONFIGS:
            running[label] = _bn.RunningStats(channels, convention=conv, momentum=mom,
                                              state_format=f)
    checkpoints = _checkpoints(total)
    pop_cache = {}
    traces = {label: {"mean": [], "var": []} for label in running}
    t = 0
    for _epoch in range(epochs):
        order = rng.permutation(dataset)
        for b in range(epoch_batches):
            rows = order[b * batch:(b + 1) * batch]
            xb = fixed[rows] if fixed is not None else activations(rows, t)
            bm, bv = _stats.moments(xb, axis=0)
            for rs in running.values():
                rs.update(bm, bv, batch)
            t += 1
            if t in checkpoints:
                if data == "stationary":
                    if "pop" not in pop_cache:
                        pop_cache["pop"] = column_moments(fixed)
                    pm, pv = pop_cache["pop"]
                else:
                    pm, pv = column_moments(activations(slice(None), t))
                ps = np.sqrt(pv)
                for label, rs in running.items():
                    rm = rs.mean.astype(np.float64)
                    rv = rs.var.astype(np.float64)
                    traces[label]["mean"].append(float(np.sqrt(np.mean(((rm - pm) / ps) ** 2))))
                    traces[label]["var"].append(float(np.sqrt(np.mean((rv / pv - 1.0) ** 2))))
    out = {"channels": channels, "batch": batch, "dataset": dataset, "batches": total,
           "epochs": epochs, "tau": tau, "drift_offset_sigmas": offset if data == "drifting" else 0.0,
           "checkpoints": np.array(checkpoints, dtype=np.int64), "configs": [c[0] for c in MOVING_CONFIGS]}
    for label, conv, mom in MOVING_CONFIGS:
        key = _key(label)
        out[f"mean_err_{key}"] = np.array(traces[label]["mean"])
        out[f"var_err_{key}"] = np.array(traces[label]["var"])
        a = alpha_of(conv, mom)
        # the noise of the batch means, and the deterministic part: the start at 0 and the drift
        drift = theory.deterministic_mean_error(a, total, mu, sigma,
                                                offset if data == "drifting" else 0.0, q)
        if a is None:
            noise = theory.cumulative_noise_mean(total, batch, dataset)
        else:
            noise = theory.ema_noise_mean(a, batch) * math.sqrt(1.0 - (1.0 - a) ** (2 * total))
        out[f"mean_theory_{key}"] = math.hypot(noise, drift)
        out[f"mean_theory_drift_{key}"] = drift
    # cost of each way, counted in operations per channel: an EMA update is 2 multiplies and an add
    # per statistic per batch; the population needs one more forward pass over all D samples
    out["ema_ops_per_batch"] = 6
    out["population_samples"] = dataset
    return out


def _key(label):
    return (label.replace(" ", "_").replace("=", "").replace(".", "p"))


# ------------------------------------------------------------------------------------------------
# part 2: decay = 1/n

def cumulative(fmt, accum, size, seed):
    """Part 2.  Batch means x_k ~ N(1, 0.1^2) (truncated to [0.5, 1.5], rounded into fmt), folded
    by torch's momentum=None (w_new = 1/k) into a buffer of ``fmt`` with arithmetic ``accum``;
    compared with the exact mean of the stream."""
    f = _formats.format(fmt)
    channels = {"smoke": 16, "quick": 128, "full": 2000}[size]
    total = {"smoke": 2000, "quick": 100000, "full": 100000}[size]
    chunk = 1000
    rng = np.random.default_rng([seed, 2, f.p])
    rs = _bn.RunningStats(channels, convention="torch", momentum=None, state_format=f,
                          accum=accum)
    # the incremental form m = R(m + R(R(x - m) / n_A)) (Welford's mean update), in the same
    # arithmetic and stored into the same format: precision.batchnorm has no such convention
    # (no framework uses it), so the study runs it here, with numpy's correctly rounded
    # operations in the arithmetic format's dtype
    a_fmt = _formats.format(accum)
    a_dtype = _stats.arith_dtype(a_fmt)
    incremental = np.zeros(channels, dtype=f.dtype)
    # the attribution run: the same weighted update with the product w_old * m kept exact (float64
    # holds a product of two numbers of <= 24 bits exactly), so only the sum is rounded
    exact_product = np.zeros(channels, dtype=f.dtype) if a_fmt.p <= 24 else None
    exact = StreamSum(channels)
    last_change = np.zeros(channels, dtype=np.int64)
    ones = np.ones(channels, dtype=f.dtype)
    marks = sorted({m for m in (100, 1000, 20000, 100000) if m <= total} | {total})
    at = {}
    k = 0
    sizes = [100, 900] + [chunk] * ((total - 1000) // chunk) if total >= 1000 else [total]
    for size_k in sizes:
        xs = f.round(np.clip(1.0 + 0.1 * rng.standard_normal((size_k, channels)), 0.5, 1.5))
        exact.add(xs)
        with np.errstate(all="ignore"):
            xa = xs.astype(a_dtype)
        for row, row_a in zip(xs, xa):
            before = rs.mean.copy()
            rs.update(row, ones, 2)
            k += 1
            last_change[rs.mean != before] = k
            n_a = np.asarray(a_fmt.round(float(k)), dtype=a_dtype)
            m_a = incremental.astype(a_dtype)
            incremental = f.round(m_a + (row_a - m_a) / n_a).astype(f.dtype)
            if exact_product is not None:
                wn = a_fmt.round(1.0 / k).astype(np.float64)
                wo = a_fmt.round(1.0 - 1.0 / k).astype(np.float64)
                new_part = a_fmt.round(wn * row_a.astype(np.float64)).astype(np.float64)
                exact_product = f.round(a_fmt.round(wo * exact_product.astype(np.float64)
                                                    + new_part)).astype(f.dtype)
        if k in marks:
            exact_mean = exact.mean()
            at[k] = _errors(rs.mean, exact_mean, f)
            at[k]["incremental"] = _errors(incremental, exact_mean, f)
            if exact_product is not None:
                at[k]["exact_product"] = _errors(exact_product, exact_mean, f)
    final = at[total]
    out = {"channels": channels, "batches": total, "last_change": last_change,
           "final_mean": rs.mean.astype(np.float64), "marks": np.array(marks, dtype=np.int64)}
    for m in marks:
        out[f"abs_err_{m}"] = at[m]["abs"]
        out[f"ulp_err_{m}"] = at[m]["ulps"]
    out["abs_err"] = final["abs"]
    out["ulp_err"] = final["ulps"]
    out["signed_ulp_err"] = final["signed_ulps"]
    out["incremental_ulp_err"] = final["incremental"]["ulps"]
    out["incremental_abs_err"] = final["incremental"]["abs"]
    out["weights_bias_ulps"] = theory.weight_rounding_bias(total, accum, f)
    if exact_product is not None:
        out["exact_product_ulp_err"] = final["exact_product"]["ulps"]
    # theory: the median batch of the last change, given where each channel froze
    # (16-bit buffers only: float32/float64 ones keep moving far beyond 10^5 batches)
    frozen = rs.mean.astype(np.float64)[: min(channels, 64)] if f.p <= 11 else []
    out["predicted_last_change"] = np.array(
        [theory.predicted_last_change(float(m), f) for m in frozen], dtype=np.int64)
    return out


def _errors(stored, exact_means, f):
    from fractions import Fraction
    stored = np.asarray(stored).astype(np.float64)
    signed = [Fraction(float(s)) - e for s, e in zip(stored.tolist(), exact_means)]
    ulp = [Fraction(float(f.ulp(f.round(float(e))))) for e in exact_means]
    return {"abs": np.array([float(abs(d)) for d in signed]),
            "ulps": np.array([float(abs(d) / q) for d, q in zip(signed, ulp)]),
            "signed_ulps": np.array([float(d / q) for d, q in zip(signed, ulp)])}


# ------------------------------------------------------------------------------------------------
# part 3: stagnation of low-precision running buffers

STAGNATION_CONFIGS = [("torch", 0.1), ("torch", 0.01), ("keras", 0.99)]


def stagnation(store, size, seed):
    """Part 3.  One channel starting at 0, fed the constant batch mean 1.0 until the stored value
    stops changing; in float32 arithmetic (the reference's) and in the store's own arithmetic."""
    f = _formats.format(store)
    rows = []
    for arith in dict.fromkeys(["float32", f.name]):
        for conv, mom in STAGNATION_CONFIGS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", _formats.PrecisionWarning)
                rs = _bn.RunningStats(1, convention=conv, momentum=mom, state_format=f, accum=arith)
            target = np.ones(1, dtype=np.float64)
            value, changed_at, k = 0.0, 0, 0
            limit = 200000
            while k < limit:
                rs.update(target, target, 2)
                k += 1
                new = float(rs.mean[0])
                if new != value:
                    value, changed_at = new, k
                elif k - changed_at > 16:   # an update that changes nothing changes nothing ever
                    break
            alpha = alpha_of(conv, mom)
            rows.append({"arith": arith, "convention": conv, "momentum": mom, "alpha": alpha,
                         "value": value, "updates": changed_at,
                         "threshold": theory.stall_threshold(alpha, 1.0, f)})
    return {"store": f.name, "rows": rows}


# ------------------------------------------------------------------------------------------------
# part 4: N/(N-1) and small batches

BATCH_SIZES = [2, 4, 8, 16, 32, 64, 128, 256]


def small_batches(fmt, size, seed):
    """Part 4.  (a) bias of the biased and unbiased batch variance; (b) PyTorch's and Keras's stored
    running variance at batch 2; (c) what batch norm outputs for a batch of two."""
    f = _formats.format(fmt)
    rng = np.random.default_rng([seed, 4, f.p])
    values = {"smoke": 1 << 14, "quick": 1 << 21, "full": 1 << 24}[size]
    out = {"batch_sizes": np.array(BATCH_SIZES, dtype=np.int64)}
    biased, unbiased, se = [], [], []
    for m in BATCH_SIZES:
        x = f.round(rng.standard_normal((m, values // m)))
        v0 = _stats.var(x, axis=0).astype(np.float64)
        v1 = _stats.var(x, axis=0, ddof=1).astype(np.float64)
        biased.append(float(v0.mean() - 1.0))
        unbiased.append(float(v1.mean() - 1.0))
        se.append(float(v1.std() / math.sqrt(v1.size)))
    out["biased_bias"] = np.array(biased)
    out["unbiased_bias"] = np.array(unbiased)
    out["bias_se"] = np.array(se)
    # (b) running variance at batch 2, same weight 0.1 on the new batch, and Keras's default 0.99
    channels = 256
    steps = {"smoke": 300, "quick": 2000, "full": 5000}[size]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _formats.PrecisionWarning)
        torch_rs = _bn.RunningStats(channels, convention="torch", momentum=0.1, state_format=f)
        keras_rs = _bn.RunningStats(channels, convention="keras", momentum=0.9, state_format=f)
        keras_default = _bn.RunningStats(channels, convention="keras", momentum=0.99, state_format=f)
    for _ in range(steps):
        xb = f.round(rng.standard_normal((2, channels)))
        bm, bv = _stats.moments(xb, axis=0)
        for rs in (torch_rs, keras_rs, keras_default):
            rs.update(bm, bv, 2)
    tv = torch_rs.var.astype(np.float64)
    kv = keras_rs.var.astype(np.float64)
    ok = kv > 0
    out["ratio"] = tv[ok] / kv[ok]
    out["torch_var_mean"] = float(tv.mean())
    out["keras_var_mean"] = float(kv.mean())
    out["keras_default_var_mean"] = float(keras_default.var.astype(np.float64).mean())
    out["steps"] = steps
    # (c) batch norm on two values: d = a - b spans 1e-4 .. 1e2
    d = np.logspace(-4, 2, 61)
    a = f.round(0.5 * d + 0.25)
    b = f.round(-0.5 * d + 0.25)
    x2 = np.stack([a, b])                                   # (2, 61): one channel per d
    eps = 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _formats.PrecisionWarning)
        y = _bn.batch_norm(x2, eps=eps).astype(np.float64)
    dd = a.astype(np.float64) - b.astype(np.float64)
    out["pair_d"] = dd
    out["pair_y"] = np.abs(y[0])
    out["pair_y_sum"] = y[0] + y[1]
    out["pair_theory"] = theory.batch_of_two_output(dd, float(f.round(eps)))
    out["eps_in_format"] = float(f.round(eps))
    return out


# ------------------------------------------------------------------------------------------------
# part 5: one-pass variance

RATIOS = [1.0, 1e-1, 1e-2, 1e-3, 1e-4]
VARIANCE_METHODS = [("two-pass", "two-pass", None), ("welford", "welford", None),
                    ("one-pass", "one-pass", "pairwise"), ("one-pass seq", "one-pass", "sequential")]


def one_pass(fmt, n, size, seed):
    """Part 5.  Trials (channels) of n values round(mu + sigma z), mu = 1, per sigma/|mu|; each
    method's relative error against the exact variance, and how often it is negative."""
    f = _formats.format(fmt)
    trials = {"smoke": 32, "quick": 256, "full": 2048}[size]
    rng = np.random.default_rng([seed, 5, f.p, n])
    methods = list(VARIANCE_METHODS)
    if f.name in ("float16", "bfloat16"):
        methods.append(("one-pass f32", "one-pass", "pairwise"))
    rows = []
    for ratio in RATIOS:
        x = f.round(1.0 + ratio * rng.standard_normal((n, trials)))
        _, exact_var = column_moments(x)
        resolved = exact_var > 0
        for label, method, order in methods:
            accum = "float32" if label.endswith("f32") else None
            with np.errstate(all="ignore"):
                v = _stats.var(x, axis=0, method=method, order=order, accum=accum).astype(np.float64)
            with np.errstate(all="ignore"):
                rel = np.abs(v[resolved] - exact_var[resolved]) / exact_var[resolved]
            rows.append({"ratio": ratio, "method": label,
                         "negative": float(np.mean(v < 0)),
                         "nonfinite": float(np.mean(~np.isfinite(v))),
                         "rel_err_median": float(np.median(rel)) if rel.size else math.nan,
                         "rel_err_max": float(np.max(rel)) if rel.size else math.nan,
                         "unresolved": float(np.mean(~resolved))})
    out = {"n": n, "trials": trials, "rows": rows}
    if f.name == "float16" and n == max(ONE_PASS_SIZES["quick"]):
        out["overflow"] = float16_overflow()
    return out


ONE_PASS_SIZES = {"smoke": [16, 256], "quick": [16, 256, 1024], "full": [16, 64, 256, 1024, 4096]}


def float16_overflow():
    """The smallest n at which float16 one-pass variance of n copies of v is not finite (search),
    with float16 and float32 accumulation, and two-pass's, beside n v^2 >= 65520."""
    rows = []
    for v in (1.0, 4.0, 16.0, 255.9, 256.0):
        def bad(n, accum=None, method="one-pass"):
            x = np.full((n, 1), v, dtype=np.float16)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = _stats.var(x, axis=0, method=method, accum=accum)
            return not np.all(np.isfinite(r.astype(np.float64)))
        limit = 70000
        first = None
        if bad(limit):
            lo, hi = 0, limit          # bad(hi) holds, bad(lo) does not (n = 0 is not a batch)
            if bad(1):
                first = 1
            else:
                lo = 1
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if bad(mid):
                        hi = mid
                    else:
                        lo = mid
                first = hi
        rows.append({"value": float(np.float16(v)), "first_overflow_n": first,
                     "predicted_n": theory.float16_square_overflow_count(float(np.float16(v))),
                     "f32_accum_finite_at_4096": not bad(4096, "float32"),
                     "two_pass_finite_at_4096": not bad(4096, None, "two-pass")})
    return rows
