"""report.md, plots, summary rows and the terminal verdict of the PPO diagnostics study.

Every sentence of the verdict and of the report's findings is computed from the run's numbers
(:func:`findings`); the reference numbers of the issue stand beside them (REFERENCE).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from precision.rl import ENTROPY_ZERO_SIGMA
from precision.study.plots import format_number, markdown_table, plot_panels, text_table

__all__ = ["summarize", "report", "verdict", "findings", "REFERENCE"]

# the (and reference/training-statistics.md section C's) numbers
REFERENCE = {"sigma_star": 0.2419707, "naive_k3_f32": {1e-3: 0.047, 1e-4: 2.3, 1e-5: 270.0},
             "expm1_bound": 5e-4}
FORMAT_SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
RUN_TITLES = {"pendulum-gsde": "Pendulum-v1, gSDE (rl-zoo settings)",
              "pendulum": "Pendulum-v1, default Gaussian policy", "cartpole": "CartPole-v1"}


def _g(x, digits=3):
    return format_number(x, digits)


# --------------------------------------------------------------------------------------------------
# per-run facts

def entropy_facts(result: dict) -> dict:
    """Crossing of the continuous policy's entropy: first update with negative exact entropy, the
    σ there, and how many updates agree that entropy < 0 exactly when σ_geo < 1/√(2πe)."""
    tr = result["traces"]
    h = np.asarray(tr["entropy_exact"])
    out = {"first": float(h[0]), "last": float(h[-1]), "min": float(np.min(h))}
    if "sigma_geometric_mean" not in tr:
        return out
    sigma = np.asarray(tr["sigma_geometric_mean"])
    neg = h < 0
    below = sigma < ENTROPY_ZERO_SIGMA
    out.update(sigma_first=float(sigma[0]), sigma_last=float(sigma[-1]),
               sigma_min=float(sigma.min()), agree=int(np.sum(neg == below)), updates=int(h.size),
               negative_updates=int(neg.sum()))
    idx = np.flatnonzero(neg)
    out["crossing_step"] = int(tr["step"][idx[0]]) if idx.size else None
    out["crossing_sigma"] = float(sigma[idx[0]]) if idx.size else None
    loss = np.asarray(tr["sb3_entropy_loss"])
    out["sb3_logged_max_error"] = float(np.max(np.abs(loss - tr["sb3_entropy_loss_exact"])))
    return out


def kl_facts(result: dict) -> dict:
    tr = result["traces"]
    kl = np.asarray(tr["kl_exact"])
    keep = kl > 0
    out = {"kl_median": float(np.median(kl)), "kl_first": float(kl[0]), "kl_last": float(kl[-1])}
    for est in ("k1", "k2", "k3"):
        rel = np.asarray(tr[f"{est}_exact"])[keep] / kl[keep] - 1
        out[f"{est}_bias"] = float(np.mean(rel)) if rel.size else math.nan
        out[f"{est}_std_over_kl"] = float(np.median(np.asarray(tr[f"{est}_sample_std"])[keep]
                                                    / kl[keep])) if rel.size else math.nan
        # the run's mean deviation in standard errors of a batch mean (std/sqrt(N) per update)
        se = np.asarray(tr[f"{est}_sample_std"])[keep] / math.sqrt(result["batch"])
        z = (np.asarray(tr[f"{est}_exact"])[keep] - kl[keep]) / np.where(se > 0, se, np.inf)
        out[f"{est}_z"] = float(np.mean(z) * math.sqrt(z.size)) if z.size else math.nan
    mb = np.asarray(tr["minibatches"])
    out["minibatch_k1_negative"] = float(np.sum(tr["minibatch_k1_negative"] * mb) / np.sum(mb))
    out["minibatch_k3_naive_negative"] = float(
        np.sum(tr["minibatch_k3_naive_f32_negative"] * mb) / np.sum(mb))
    out["update_k1_negative"] = float(np.mean(np.asarray(tr["k1_exact"]) < 0))
    out["k1_samples_negative"] = float(np.mean(tr["k1_samples_negative"]))
    out["sb3_approx_kl_max_rel_error"] = float(np.max(
        np.abs(np.asarray(tr["sb3_approx_kl"]) - tr["sb3_approx_kl_exact"])
        / np.abs(tr["sb3_approx_kl_exact"])))
    return out


def ev_facts(result: dict) -> dict:
    tr = result["traces"]
    sb3, rllib = np.asarray(tr["ev_sb3_exact"]), np.asarray(tr["ev_rllib_exact"])
    const = result["near_constant"]
    return {"ev_first": float(sb3[0]), "ev_last": float(sb3[-1]), "ev_max": float(np.nanmax(sb3)),
            "full_batch_max_diff": float(np.nanmax(np.abs(sb3 - rllib))),
            "tiny_disagree": float(np.mean(tr["ev_tiny_disagree"])),
            "logged_max_error": float(np.nanmax(np.abs(np.asarray(tr["sb3_explained_variance"])
                                                       - sb3))),
            "const_scales": list(const["scales"]), "const_sb3": list(const["sb3"]),
            "const_rllib": list(const["rllib"])}


def precision_facts(result: dict, formats) -> dict:
    """Worst error over the run's updates of each diagnostic in each format."""
    tr = result["traces"]
    out = {}
    for name in formats:
        s = FORMAT_SHORT[name]
        for diag in ("k1", "k3_naive", "k3_expm1", "k3_logp", "entropy", "kl", "ev_sb3", "ev_rllib"):
            key = f"err_{diag}_{s}"
            if key in tr:
                out[key] = float(np.max(tr[key]))
    return out


# --------------------------------------------------------------------------------------------------
# summary rows

def summarize(params: dict, result: dict) -> dict:
    kind = params["kind"]
    if kind == "schulman":
        row = {f"{e}_std_over_kl": result[f"{e}_std_over_kl"] for e in ("k1", "k2", "k3")}
        row.update({f"{e}_std_over_kl_closed_form": result["closed_form"][e]
                    for e in ("k1", "k2", "k3")})
        row.update({"k2_bias": result["k2_bias"], "k2_bias_closed_form":
                    result["closed_form"]["k2_bias"], "k3_bias": result["k3_bias"],
                    "k3_bias_se": result["k3_bias_se"]})
        return row
    if kind == "k3-sweep":
        row = {}
        for key, values in result.items():
            if key != "deltas" and key.endswith("_single"):
                row[f"{key[:-7]}_max"] = float(np.max(values))
        return row
    e, k, v = entropy_facts(result), kl_facts(result), ev_facts(result)
    row = {"updates": result["updates"], "batch": result["batch"],
           "entropy_first": e["first"], "entropy_last": e["last"],
           "sigma_min": e.get("sigma_min"), "entropy_crossing_step": e.get("crossing_step"),
           "sigma_at_crossing": e.get("crossing_sigma"), "kl_median": k["kl_median"],
           "k1_bias": k["k1_bias"], "k3_bias": k["k3_bias"],
           "k1_std_over_kl": k["k1_std_over_kl"], "k3_std_over_kl": k["k3_std_over_kl"],
           "minibatch_k1_negative": k["minibatch_k1_negative"],
           "ev_first": v["ev_first"], "ev_last": v["ev_last"],
           "ev_full_batch_max_diff": v["full_batch_max_diff"], "ev_tiny_disagree": v["tiny_disagree"]}
    row.update(precision_facts(result, params["formats"]))
    return row


# --------------------------------------------------------------------------------------------------
# findings (shared by the verdict and report.md)

def _ppo(results):
    return [(p, r) for p, r in results.select(kind="ppo")]


def _first(results, **criteria):
    found = results.select(**criteria)
    return found[0] if found else (None, None)


def findings(results) -> list[str]:
    """The headline sentences, each computed from this run's numbers."""
    lines = []
    runs = _ppo(results)
    # 1. entropy
    for p, r in runs:
        if r["kind_of_policy"] != "gaussian":
            continue
        e = entropy_facts(r)
        title = RUN_TITLES.get(p["run"], p["run"])
        if e["crossing_step"] is not None:
            lines.append(
                f"Entropy ({title}, seed {p['seed']}): the exact entropy went negative at step "
                f"{e['crossing_step']}, when the policy's σ (geometric mean) fell to "
                f"{_g(e['crossing_sigma'], 4)} < 1/√(2πe) = {ENTROPY_ZERO_SIGMA:.7f}; it is negative "
                f"in exactly the updates where σ is below that ({e['agree']} of {e['updates']} "
                f"updates agree), and SB3's entropy_loss (= −entropy, averaged over the minibatches) "
                f"is its exact value to within {_g(e['sb3_logged_max_error'], 2)}.")
        else:
            lines.append(
                f"Entropy ({title}, seed {p['seed']}): stayed positive "
                f"({_g(e['first'])} → {_g(e['last'])}) because σ never fell below "
                f"1/√(2πe) = {ENTROPY_ZERO_SIGMA:.7f} (smallest σ {_g(e['sigma_min'], 4)}); "
                f"{e['agree']} of {e['updates']} updates agree that entropy < 0 exactly when "
                f"σ < σ*.")
    # 2. KL
    kls = [(p, kl_facts(r)) for p, r in runs]
    if kls:
        k3b = max(abs(k["k3_bias"]) for _, k in kls)
        k1b = max(abs(k["k1_bias"]) for _, k in kls)
        ratio = [k["k1_std_over_kl"] / k["k3_std_over_kl"] for _, k in kls
                 if k["k3_std_over_kl"] > 0]
        neg = {p["run"]: k["minibatch_k1_negative"] for p, k in kls}
        z3 = {p["run"]: k["k3_z"] for p, k in kls}
        systematic = [run for run, z in z3.items() if abs(z) > 3]
        lines.append(
            "KL (each update's rollout, x ~ old policy, against the exact KL(old‖new)): on average "
            f"k3 is off by up to {_g(100 * k3b, 2)} %, k1 by up to {_g(100 * k1b, 2)} %; k3's "
            "mean deviation is " + ", ".join(f"{_g(z, 2)} ({run})" for run, z in z3.items())
            + " standard errors -- "
            + (f"more than sampling noise in {', '.join(systematic)}: the new policy was fit to "
               "these very samples, so on them the estimators are not unbiased; "
               if systematic else "within sampling noise; ")
            + f"per sample k1's spread is {_g(min(ratio), 2)}–{_g(max(ratio), 2)}× k3's; "
            "CleanRL's k1 (old_approx_kl) was negative in "
            + ", ".join(f"{_g(100 * v, 2)} % ({k})" for k, v in neg.items())
            + " of the minibatches, SB3's naive float32 k3 in "
            + ", ".join(f"{_g(100 * k['minibatch_k3_naive_negative'], 2)} %" for _, k in kls)
            + ".")
    sch = [(p, r) for p, r in results.select(kind="schulman")]
    if sch:
        parts = []
        for p, r in sch:
            ref = _schulman_reference(p["mu"])
            parts.append(f"p = N({p['mu']:g}, 1): std/KL {_g(r['k1_std_over_kl'], 3)} / "
                         f"{_g(r['k2_std_over_kl'], 3)} / {_g(r['k3_std_over_kl'], 3)} for k1/k2/k3 "
                         f"(Schulman: {ref}; exact {_g(r['closed_form']['k1'], 3)} / "
                         f"{_g(r['closed_form']['k2'], 3)} / {_g(r['closed_form']['k3'], 3)})")
        lines.append("Schulman's check by Monte Carlo, q = N(0, 1): " + "; ".join(parts)
                     + (" -- reproduced." if all(_schulman_reproduced(r) for _, r in sch)
                        else " -- NOT reproduced within 3 standard errors."))
    # 3. explained variance
    evs = [(p, ev_facts(r)) for p, r in runs]
    if evs:
        full = max(v["full_batch_max_diff"] for _, v in evs)
        tiny = {p["run"]: v["tiny_disagree"] for p, v in evs}
        p0, v0 = evs[0]
        i3 = v0["const_scales"].index(1e-3) if 1e-3 in v0["const_scales"] else -1
        lines.append(
            f"Explained variance: on whole rollouts SB3/CleanRL's and RLlib's conventions differ by "
            f"at most {_g(full, 2)}; on batches of 4 samples they differ by more than 0.1 in "
            + ", ".join(f"{_g(100 * v, 2)} % ({k})" for k, v in tiny.items())
            + f" of them; with the returns' spread shrunk {1 / v0['const_scales'][i3]:g}× (value "
            f"error unchanged) SB3 reports {_g(v0['const_sb3'][i3], 3)} and RLlib "
            f"{_g(v0['const_rllib'][i3], 3)} (clamped). Over the runs it went "
            + ", ".join(f"{_g(v['ev_first'], 2)} → {_g(v['ev_last'], 2)} ({p['run']})"
                        for p, v in evs) + ".")
    # 4. precision
    _, sweep = _first(results, kind="k3-sweep")
    if sweep is not None and "f32_naive_single" in sweep:
        deltas = sweep["deltas"]
        measured = [sweep["f32_naive_single"][deltas.index(d)] for d in (1e-3, 1e-4, 1e-5)]
        ref = REFERENCE["naive_k3_f32"]
        expm1 = {s: max(sweep[f"{s}_expm1_single"][i] for i, d in enumerate(deltas) if d >= 1e-2)
                 for s in ("f16", "bf16", "f32") if f"{s}_expm1_single" in sweep}
        lines.append(
            "k3 in float32 at a log-ratio of 1e-3 / 1e-4 / 1e-5: the naive form (SB3's, CleanRL's) "
            f"has relative error {' / '.join(_g(m, 2) for m in measured)} (issue: "
            f"{' / '.join(_g(ref[d], 2) for d in (1e-3, 1e-4, 1e-5))}); the expm1 form "
            f"{_g(max(sweep['f32_expm1_single']), 2)} at worst; for log-ratios ≥ 1e-2 expm1 stays "
            "within " + ", ".join(f"{_g(v, 2)} ({s})" for s, v in expm1.items())
            + (" (the issue's ≤ 5e-4 holds in float16 and float32)" if all(
                expm1.get(s, 0) <= REFERENCE["expm1_bound"] for s in ("f16", "f32"))
               else " (the issue's ≤ 5e-4 does NOT hold everywhere)")
            + _underflow_clause(sweep) + ".")
    worst = _precision_worst(results)
    if worst:
        lines.append("On the runs' own data the worst errors over all updates were: " + "; ".join(
            f"{fmt}: {text}" for fmt, text in worst.items()) + ".")
    # 5. what the runs look like
    shapes = [healthy_facts(p, r) for p, r in runs]
    if shapes:
        lines.append("What the runs look like: " + "; ".join(shapes) + ".")
    return lines


def healthy_facts(params: dict, result: dict) -> str:
    """One clause on the shape of a run's curves: entropy, KL (first vs last third), EV."""
    tr = result["traces"]
    h, kl, ev = (np.asarray(tr[k]) for k in ("entropy_exact", "kl_exact", "ev_sb3_exact"))
    third = max(1, h.size // 3)
    kl_a, kl_b = float(np.median(kl[:third])), float(np.median(kl[-third:]))
    trend = "rose" if kl_b > 1.25 * kl_a else ("fell" if kl_b < 0.8 * kl_a else "stayed level")
    step = float(np.max(np.abs(np.diff(h)))) if h.size > 1 else 0.0
    return (f"{params['run']}: entropy {_g(h[0], 2)} → {_g(h[-1], 2)} (largest change between "
            f"updates {_g(step, 2)}), KL's median {trend} ({_g(kl_a, 2)} in the first third of the "
            f"updates, {_g(kl_b, 2)} in the last), explained variance up to {_g(np.nanmax(ev), 3)}"
            + (" (below 1)" if np.nanmax(ev) < 1 else ""))


def _underflow_clause(sweep) -> str:
    """Where float16's k3 (expm1) has lost everything: the largest log-ratio with error >= 1/2."""
    errors = sweep.get("f16_expm1_single")
    if not errors:
        return ""
    lost = [d for d, e in zip(sweep["deltas"], errors) if e >= 0.5]
    if not lost:
        return ""
    return (f"; at log-ratios ≤ {max(lost):g} float16's k3 (≈ x²/2) underflows "
            "(relative error 1: no format arithmetic can help, the value is not representable)")


def _schulman_reference(mu):
    from .diagnostics import SCHULMAN_REFERENCE
    ref = SCHULMAN_REFERENCE.get(mu)
    return "n/a" if ref is None else f"{ref['k1']:g} / {ref['k2']:g} / {ref['k3']:g}"


def _schulman_reproduced(r) -> bool:
    return all(abs(r[f"{e}_std_over_kl"] - r["closed_form"][e]) <= 3 * r[f"{e}_std_over_kl_se"]
               + 1e-12 for e in ("k1", "k2", "k3"))


def _precision_worst(results) -> dict:
    runs = _ppo(results)
    if not runs:
        return {}
    formats = runs[0][0]["formats"]
    out = {}
    for name in formats:
        if name == "float64":
            continue
        s = FORMAT_SHORT[name]
        worst = {}
        for p, r in runs:
            for key, value in precision_facts(r, [name]).items():
                diag = key[len("err_"):-len(s) - 1]
                worst[diag] = max(worst.get(diag, 0.0), value)
        if not worst:
            continue
        text = (f"k3 naive {_g(worst['k3_naive'], 2)} vs expm1 {_g(worst['k3_expm1'], 2)} "
                f"(relative), KL {_g(worst['kl'], 2)} (relative), entropy "
                f"{_g(worst['entropy'], 2)}, EV {_g(max(worst['ev_sb3'], worst['ev_rllib']), 2)} "
                "(absolute)")
        if not math.isfinite(max(worst["ev_sb3"], worst["ev_rllib"])):
            over = [p["run"] for p, r in runs if not math.isfinite(
                precision_facts(r, [name]).get(f"err_ev_sb3_{s}", 0.0))]
            text += (" -- the sum of squared deviations of the returns overflows float16's "
                     f"65504 ({', '.join(over)})")
        out[name] = text
    return out


def _table_rows(results) -> list[dict]:
    rows = []
    for p, r in _ppo(results):
        e, k, v = entropy_facts(r), kl_facts(r), ev_facts(r)
        rows.append({"run": p["run"], "seed": p["seed"], "steps": int(r["traces"]["step"][-1]),
                     "H first": e["first"], "H last": e["last"], "σ min": e.get("sigma_min"),
                     "KL med": k["kl_median"], "k1 bias": k["k1_bias"], "k3 bias": k["k3_bias"],
                     "k1<0 mb": k["minibatch_k1_negative"], "EV last": v["ev_last"]})
    return rows


def verdict(results) -> str:
    """A few sentences computed from the run, and one compact table (< 100 columns)."""
    import textwrap

    text = "\n".join(textwrap.fill(line, 100) for line in findings(results))
    rows = _table_rows(results)
    if rows:
        text += "\n\n" + text_table(rows, digits=2)
    return text


# --------------------------------------------------------------------------------------------------
# plots and report.md

def _xy(r, key, sign=1.0):
    tr = r["traces"]
    return (np.asarray(tr["step"]), sign * np.asarray(tr[key]))


def _plots(results, plot_dir: Path) -> dict:
    plot_dir.mkdir(parents=True, exist_ok=True)
    runs = _ppo(results)
    made = {}
    cont = [(p, r) for p, r in runs if r["kind_of_policy"] == "gaussian"]
    if cont:
        entropy, sigma = {}, {}
        for p, r in cont:
            tag = f"{p['run']} s{p['seed']}"
            entropy[f"{tag}: exact entropy"] = _xy(r, "entropy_exact")
            entropy[f"{tag}: SB3 −entropy_loss"] = _xy(r, "sb3_entropy_loss", -1.0)
            sigma[f"{tag}: σ (geometric mean)"] = _xy(r, "sigma_geometric_mean")
        made["entropy"] = plot_panels(
            plot_dir / "entropy.png",
            {"entropy (nats), summed over action dims": entropy, "policy σ": sigma},
            xlabel="environment step", logy=False, sharey=False, ncols=2,
            reference_lines={"entropy (nats), summed over action dims": {"0": 0.0},
                             "policy σ": {"1/√(2πe) = 0.2419707": ENTROPY_ZERO_SIGMA}},
            title="Continuous-action entropy goes negative exactly when σ < 1/√(2πe)",
            legend_location="upper right", width=5.5)
    panels = {}
    for p, r in runs:
        tag = f"{p['run']} s{p['seed']}"
        panels[f"KL: {tag}"] = {"exact KL(old‖new)": _xy(r, "kl_exact"), "k1": _xy(r, "k1_exact"),
                                "k3": _xy(r, "k3_exact"), "SB3 approx_kl": _xy(r, "sb3_approx_kl")}
    if panels:
        made["kl"] = plot_panels(plot_dir / "kl.png", panels, xlabel="environment step",
                                 ylabel="nats", logy=True, sharey=False, ncols=min(3, len(panels)),
                                 legend_location="figure",
                                 title="KL estimators per update, against the exact KL")
    panels = {}
    for p, r in runs:
        tag = f"{p['run']} s{p['seed']}"
        panels[f"EV: {tag}"] = {"SB3 / CleanRL (exact)": _xy(r, "ev_sb3_exact"),
                                "RLlib (exact)": _xy(r, "ev_rllib_exact"),
                                "SB3 logged": _xy(r, "sb3_explained_variance")}
    if panels:
        made["explained_variance"] = plot_panels(
            plot_dir / "explained_variance.png", panels, xlabel="environment step", logy=False,
            sharey=False, ncols=min(3, len(panels)), legend_location="figure",
            reference_lines={t: {"1": 1.0} for t in panels},
            title="Explained variance in the three conventions")
    if runs:
        healthy = {"entropy (exact)": {}, "KL(old‖new) (exact)": {}, "explained variance": {},
                   "clip fraction (SB3)": {}}
        for p, r in runs:
            tag = f"{p['run']} s{p['seed']}"
            healthy["entropy (exact)"][tag] = _xy(r, "entropy_exact")
            healthy["KL(old‖new) (exact)"][tag] = _xy(r, "kl_exact")
            healthy["explained variance"][tag] = _xy(r, "ev_sb3_exact")
            healthy["clip fraction (SB3)"][tag] = _xy(r, "sb3_clip_fraction")
        made["healthy"] = plot_panels(plot_dir / "healthy_run.png", healthy,
                                      xlabel="environment step", logy=False, sharey=False,
                                      ncols=2, legend_location="figure",
                                      title="What these runs look like: compare your curves")
    _, sweep = _first(results, kind="k3-sweep")
    if sweep is not None:
        d = np.asarray(sweep["deltas"])
        traces = {}
        for key, values in sweep.items():
            if key.endswith("_single"):
                traces[key[:-7].replace("_", " ")] = (d, np.asarray(values))
        made["k3_precision"] = plot_panels(
            plot_dir / "k3_precision.png", {"k3 = e^x − 1 − x at one log-ratio x": traces},
            xlabel="log-ratio x", ylabel="relative error", logy=True, logx=True, ncols=1,
            width=6.5, height=4.2, legend_location="lower left")
    return made


def _precision_table(results) -> str:
    runs = _ppo(results)
    if not runs:
        return ""
    formats = runs[0][0]["formats"]
    rows = []
    labels = {"k1": "k1 (rel.)", "k3_naive": "k3 naive (rel.)", "k3_expm1": "k3 expm1 (rel.)",
              "k3_logp": "k3 from F log-probs (rel.)", "kl": "analytic KL (rel.)",
              "entropy": "entropy (abs.)", "ev_sb3": "EV sb3 (abs.)", "ev_rllib": "EV rllib (abs.)"}
    for p, r in runs:
        facts = precision_facts(r, formats)
        for diag, label in labels.items():
            row = {"run": p["run"], "diagnostic": label}
            for name in formats:
                row[name] = facts.get(f"err_{diag}_{FORMAT_SHORT[name]}")
            rows.append(row)
    return markdown_table(rows, digits=2)


def report(results, out_dir) -> None:
    out_dir = Path(out_dir)
    made = _plots(results, out_dir / "plots")
    lines = ["# PPO diagnostics on real Stable-Baselines3 runs, exact and in every format", "",
             "Each update of each run was recorded (old and new log-probabilities of the rollout, "
             "the action distributions' parameters before and after, values, returns, and every "
             "minibatch as SB3 saw it) and every diagnostic recomputed exactly (`precision.exact.rl`) "
             "and in each format (`precision.rl`). Runs: "
             + "; ".join(f"{RUN_TITLES.get(p['run'], p['run'])}, seed {p['seed']}: {r['updates']} "
                         f"updates of {r['batch']} samples ({p['steps']} steps), hyperparameters "
                         f"`{r['hyperparameters']}`" for p, r in _ppo(results)) + ".", "",
             "## Findings", ""]
    lines += [f"- {line}" for line in findings(results)]
    lines += ["", "## Summary of the runs", "", markdown_table(_table_rows(results), digits=3)]
    if "entropy" in made:
        lines += ["## 1. Negative entropy", "",
                  "A Gaussian policy's entropy is a *differential* entropy, Σ_i ½ log(2πe σ_i²): "
                  "negative for a dimension exactly when σ_i < 1/√(2πe) = 0.2419707, and for the "
                  "sum (and the batch mean SB3 logs) exactly when the geometric mean of σ is. "
                  "SB3 logs `train/entropy_loss` = −entropy, which therefore turns positive. With "
                  "gSDE the action σ depends on the state and SB3's `train/std` is exp(log_std) of "
                  "the gSDE parameters, not the action σ (plotted here: exp(mean log σ) over the "
                  "rollout). Pendulum has one action dimension, so per dimension and summed "
                  "coincide here.", "", "![entropy](plots/entropy.png)", ""]
    lines += ["## 2. KL estimators", "",
              "Per update, x = log p_new(a) − log p_old(a) on the rollout's actions (a ~ old "
              "policy): k1 = −x, k3 = eˣ − 1 − x (means, exact), against the exact analytic "
              "KL(old‖new) averaged over the rollout's states (what RLlib logs). SB3's "
              "`approx_kl` is the naive k3 in float32, averaged over the minibatches of the "
              "*last epoch* only (its list is reset each epoch), during training.", "",
              "![kl](plots/kl.png)", ""]
    sch = [(p, r) for p, r in results.select(kind="schulman")]
    if sch:
        rows = []
        for p, r in sch:
            for e in ("k1", "k2", "k3"):
                rows.append({"p": f"N({p['mu']:g}, 1)", "estimator": e,
                             "std/KL (MC)": r[f"{e}_std_over_kl"],
                             "± se": r[f"{e}_std_over_kl_se"],
                             "std/KL (exact)": r["closed_form"][e],
                             "Schulman": _schulman_reference_one(p["mu"], e),
                             "rel. bias (MC)": r[f"{e}_bias"], "± se ": r[f"{e}_bias_se"]})
        lines += ["Schulman's reference ratios (q = N(0,1), x ~ q; closed forms in "
                  "`diagnostics.schulman_closed_form`):", "", markdown_table(rows, digits=4)]
    lines += ["## 3. Explained variance", "",
              "SB3 and CleanRL: 1 − Var(y − ŷ)/Var(y), biased variance, NaN iff Var(y) = 0; "
              "RLlib: max(−1, 1 − Var(y − ŷ)/(Var(y) + 1e-6)), unbiased variance.", "",
              "![ev](plots/explained_variance.png)", ""]
    rows = []
    for p, r in _ppo(results):
        c = r["near_constant"]
        for s, a, b in zip(c["scales"], c["sb3"], c["rllib"]):
            rows.append({"run": p["run"], "returns' spread ×": s, "SB3/CleanRL": a, "RLlib": b})
    if rows:
        lines += ["Near-constant returns (the last update's returns squeezed toward their mean, "
                  "the value error kept):", "", markdown_table(rows, digits=3)]
    lines += ["## 4. Precision", "",
              "Worst error over each run's updates, input rounded to the format and computed in it "
              "(float16 underflows k3 below ~6e-8 and overflows squares above 65504):", "",
              _precision_table(results)]
    if "k3_precision" in made:
        lines += ["![k3](plots/k3_precision.png)", ""]
    if "healthy" in made:
        lines += ["## 5. What these runs look like", "",
                  "![healthy](plots/healthy_run.png)", ""]
    try:
        from precision.study.plots import markdown_provenance
        lines += ["---", "", markdown_provenance(out_dir)]
    except (OSError, ValueError, KeyError):
        pass
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _schulman_reference_one(mu, est):
    from .diagnostics import SCHULMAN_REFERENCE
    ref = SCHULMAN_REFERENCE.get(mu)
    return None if ref is None else ref[est]
