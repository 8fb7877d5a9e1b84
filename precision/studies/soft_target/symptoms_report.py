"""report.md sections, plot and verdict sentences of the question's symptoms (``part = "symptoms"``)
and of the mechanism sweeps (``part = "mechanisms"``). Every sentence is decided by the run's numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from precision.study.plots import format_number, markdown_table
from .symptoms import MODEL_ITERATIONS

POST_KL = 1.8655080391399999e-4      # the post's quoted CE − H (report.POST_QUOTED)
REPRODUCED_RATIO = 0.05              # "20–30 vs 2000+": float32/float64 iterations ≤ this
REPRODUCED_FLOAT64 = 2000


def _f(v, d=3):
    return format_number(v, d)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _by(cells, experiment):
    return [(p, r) for p, r in cells if p.get("experiment") == experiment]


# --------------------------------------------------------------------------------------------------
# 1–2: same data, several models; validation

def models_table(cells):
    """One row per (signal, format): the reported final training loss of each model, whether they
    are bit-identical, the gain in ulps of L*, and the validation losses."""
    rows = {}
    for p, r in _by(cells, "models"):
        key = (p["signal"], p["format"])
        row = rows.setdefault(key, {"signal": p["signal"], "format": p["format"],
                                    "gain": r["achievable_gain"], "gain/ulp(L*)":
                                    r["achievable_gain"] / r["loss_ulp"]})
        row[f"{p['model']} train"] = r["final_reported_loss"]
        row[f"{p['model']} val"] = r["val_reported_loss"]
        row[f"{p['model']} its"] = r["iterations_to_stop"]
        row[f"{p['model']} val−train exact"] = r["val_exact_loss"] - r["train_exact_loss"]
        # exact training loss above mean H(t) = H(t̄) − gain, the lowest any model can reach
        row[f"{p['model']} excess"] = r["train_exact_loss"] - (r["bias_min_loss"] - r["achievable_gain"])
    for row in rows.values():
        losses = [row.get(f"{m} train") for m in ("bias", "linear", "mlp") if f"{m} train" in row]
        row["train identical"] = "yes" if len(set(losses)) == 1 else "no"
        pairs = [(row.get(f"{m} train"), row.get(f"{m} val")) for m in ("bias", "linear", "mlp")]
        row["val = train"] = sum(a == b for a, b in pairs if a is not None)
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))]


def _span_ulps(rows) -> str:
    return _span([(r["mlp train"] - r["bias train"]) / (r["gain"] / r["gain/ulp(L*)"]) for r in rows])


def _span(values, digits=2) -> str:
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return _f(lo, digits) if lo == hi else f"{_f(lo, digits)}–{_f(hi, digits)}"


def _int_span(values) -> str:
    values = [int(v) for v in values if v is not None and math.isfinite(_num(v))]
    if not values:
        return "–"
    return str(min(values)) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def models_sentences(cells) -> list[str]:
    table = models_table(cells)
    out = []
    for fmt in ("float32", "float64"):
        rows = [r for r in table if r["format"] == fmt]
        if not rows:
            continue
        same = [r for r in rows if r["train identical"] == "yes"]
        pair = [r for r in rows if r.get("bias train") == r.get("linear train")]
        text = (f"In {fmt} the three models' reported final training losses were bit-identical at "
                f"{len(same)} of {len(rows)} signal levels"
                + (f" ({', '.join(_f(r['signal'], 2) for r in same)})" if same else ""))
        text += (f"; bias-only and linear alone at {len(pair)} of {len(rows)}"
                 + (f" (gain up to {_f(max(r['gain/ulp(L*)'] for r in pair), 2)} ulp(L*))" if pair else ""))
        apart = [r for r in rows if r.get("bias train") != r.get("linear train")]
        if apart:
            text += (f"; they separate from gain = {_f(min(r['gain'] for r in apart), 2)} nats "
                     f"({_f(min(r['gain/ulp(L*)'] for r in apart), 2)} ulp(L*))")
        worse = [r for r in rows if "mlp train" in r and r["mlp train"] > r.get("bias train", math.inf)]
        if worse:
            text += (f"; the MLP reported a higher final loss than the bias alone at {len(worse)} of "
                     f"{len(rows)} levels (by {_span_ulps(worse)} ulp(L*)): L-BFGS stopped it early, "
                     f"after {_span([r['mlp its'] for r in worse])} iterations")
        out.append(text + ".")
    val = [r for r in table]
    equal = sum(r["val = train"] for r in val)
    total = sum(sum(1 for m in ("bias", "linear", "mlp") if f"{m} train" in r) for r in val)
    gaps = [abs(r[f"{m} val−train exact"]) for r in val for m in ("bias", "linear", "mlp")
            if f"{m} val−train exact" in r]
    out.append(f"Validation loss equalled training loss (bit-identical reported values) in {equal} of "
               f"{total} runs; the exact held-out − training gap was {_f(min(gaps), 2)}–{_f(max(gaps), 2)} "
               "nats" + (", larger than float32's ulp(L*), so a split of this size cannot make them equal"
                         if gaps and min(gaps) > 2 ** -23 else "") + ".")
    return out


# --------------------------------------------------------------------------------------------------
# 3: L-BFGS iterations vs conditioning

def lbfgs_table(cells):
    rows = {}
    for p, r in _by(cells, "lbfgs"):
        key = (p["condition"], p["optimizer"])
        row = rows.setdefault(key, {"κ (features)": p["condition"], "κ(Hessian)": r["hessian_condition"],
                                    "L-BFGS": p["optimizer"]})
        short = "f32" if p["format"] == "float32" else "f64"
        row[f"{short} its"] = r["iterations_to_stop"]
        row[f"{short} excess at stop"] = r["excess_at_stop"]
        row[f"{short} stop"] = r["stop_message"][:40]
    for row in rows.values():
        row["f32/f64 its"] = _num(row.get("f32 its")) / _num(row.get("f64 its")) if row.get("f64 its") else math.nan
    return [rows[k] for k in sorted(rows)]


def model_iterations(cells) -> list[dict]:
    """Per (model, signal): L-BFGS iterations to stop in float32 and float64 (models experiment)."""
    rows = {}
    for p, r in _by(cells, "models"):
        row = rows.setdefault((p["model"], p["signal"]), {"L-BFGS": f"scipy-ftol0, {p['model']} model",
                                                          "signal": p["signal"]})
        short = "f32" if p["format"] == "float32" else "f64"
        row[f"{short} its"] = r["iterations_to_stop"]
        row[f"{short} stop"] = r["stop_message"][:40]
    for row in rows.values():
        row["f32/f64 its"] = (_num(row.get("f32 its")) / _num(row.get("f64 its"))
                              if _num(row.get("f64 its")) > 0 else math.nan)
    return [rows[k] for k in sorted(rows)]


def lbfgs_sentences(cells) -> list[str]:
    table = lbfgs_table(cells)
    if not table:
        return []
    models = model_iterations(cells)
    ratios = [r["f32/f64 its"] for r in table if math.isfinite(r["f32/f64 its"])]
    f64_max = max(_num(r.get("f64 its")) for r in table)
    repro = [r for r in table if r["f32/f64 its"] <= REPRODUCED_RATIO and _num(r.get("f64 its")) >= REPRODUCED_FLOAT64]
    text = (f"L-BFGS iterations to stop, float32 ÷ float64: {_f(min(ratios), 2)}–{_f(max(ratios), 2)} over "
            f"{len(table)} (κ, L-BFGS) pairs; the most float64 needed was {int(f64_max)} iterations. ")
    repro_models = [r for r in models if r["f32/f64 its"] <= REPRODUCED_RATIO
                    and _num(r.get("f64 its")) >= REPRODUCED_FLOAT64]
    if repro:
        text += ("On the conditioning sweep \"20–30 vs 2000+\" is reproduced for " + ", ".join(
            f"{r['L-BFGS']} at κ = {_f(r['κ (features)'], 2)} ({int(r['f32 its'])} vs {int(r['f64 its'])})"
            for r in repro) + ". ")
    else:
        text += (f"On the conditioning sweep \"20–30 vs 2000+\" is not reproduced: no setting had float32 "
                 f"stop after ≤ {REPRODUCED_RATIO:g}× float64's iterations with float64 at ≥ "
                 f"{REPRODUCED_FLOAT64}. ")
    if repro_models:
        text += ("On the signal data it is, for " + ", ".join(
            f"the {r['L-BFGS'].split(', ')[1]} at gain {_f(r['signal'], 2)} ({int(r['f32 its'])} vs "
            f"{int(r['f64 its'])}{' = the limit' if 'ITERATIONS REACHED' in str(r.get('f64 stop')) else ''})"
            for r in repro_models)
            + ": float32 stops once the loss stops resolving, float64 keeps making sub-ulp32 progress.")
    elif models:
        text += (f"Nor on the signal data (float32 ÷ float64 iterations "
                 f"{_span([r['f32/f64 its'] for r in models])}).")
    for name in ("bias", "linear", "mlp"):
        rs = [r for r in models if r["L-BFGS"].endswith(f" {name} model")]
        if rs:
            text += (f" {name}: float32 {_int_span([r.get('f32 its') for r in rs])}, float64 "
                     f"{_int_span([r.get('f64 its') for r in rs])} iterations over the signal levels.")
    far = [r for r in table if _num(r.get("f32 excess at stop")) >= POST_KL]
    if far:
        text += (" Stops with a float32 excess above the post's KL (1.87e-4): " + ", ".join(
            f"{r['L-BFGS']} κ = {_f(r['κ (features)'], 2)} ({_f(r['f32 excess at stop'], 2)})" for r in far) + ".")
    return [text]


def lbfgs_plot(cells, plot_dir: Path) -> str | None:
    table = lbfgs_table(cells)
    if not table:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for flavour in sorted({r["L-BFGS"] for r in table}):
        rows = sorted((r for r in table if r["L-BFGS"] == flavour), key=lambda r: r["κ(Hessian)"])
        k = [r["κ(Hessian)"] for r in rows]
        for short, style in (("f32", "-o"), ("f64", "--s")):
            ax.plot(k, [_num(r.get(f"{short} its")) for r in rows], style, label=f"{flavour} {short}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Hessian condition number")
    ax.set_ylabel("iterations to stop")
    ax.set_title("L-BFGS iterations to stop: float32 vs float64")
    ax.legend(fontsize=7)
    plot_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(plot_dir / "lbfgs_iterations.png", dpi=110)
    plt.close(fig)
    return "plots/lbfgs_iterations.png"


# --------------------------------------------------------------------------------------------------
# 4 and 6

def targets_sentences(cells) -> list[str]:
    rows = {(p["targets"], p["format"]): r for p, r in _by(cells, "targets")}
    soft, hard = rows.get(("soft", "float32")), rows.get(("hard", "float32"))
    if soft is None or hard is None:
        return []
    text = (f"One-hot vs soft targets (linear model, float32): with soft targets L-BFGS stopped after "
            f"{soft['iterations_to_stop']} iterations at a reported loss of {_f(soft['final_reported_loss'], 8)}; "
            f"with one-hot targets it ran {hard['iterations_to_stop']} iterations down to "
            f"{_f(hard['final_reported_loss'], 3)}")
    text += (" (the loss kept resolving: its ulp shrinks with it)." if hard["iterations_to_stop"] > 3 * soft["iterations_to_stop"]
             and hard["final_reported_loss"] < 1e-3 * soft["final_reported_loss"] else
             " (no clear difference in how long the loss resolves).")
    return [text]


def remedies_table(cells):
    return [{"objective": p["objective"], "iterations": r["iterations_to_stop"],
             "excess at stop": r["excess_at_stop"], "÷ L*·u": r["excess_over_Lu"],
             "stop": r["stop_message"][:40]} for p, r in _by(cells, "remedies")]


def remedies_sentence(cells) -> tuple[list[str], str]:
    table = {r["objective"]: r for r in remedies_table(cells)}
    base = table.get("ce")
    if base is None:
        return [], ""
    parts, good = [], []
    for name, label in (("ce-f64", "the objective computed in float64"), ("kl", "the objective computed as a KL")):
        r = table.get(name)
        if r is None:
            continue
        gain = base["excess at stop"] / r["excess at stop"] if r["excess at stop"] > 0 else math.inf
        parts.append(f"{label} stopped at {_f(r['excess at stop'], 2)} (÷{_f(gain, 2)}, {r['iterations']} iterations)")
        if gain >= 10:
            good.append(label)
    text = (f"Remedies (float32 parameters, L-BFGS ftol = gtol = 0, κ = 1e4): the float32 cross-entropy "
            f"stopped at an excess of {_f(base['excess at stop'], 2)} after {base['iterations']} iterations; "
            + "; ".join(parts) + ".")
    advice = ("for L-BFGS in float32, compute the objective " + " or ".join(
        g.replace("the objective computed ", "") for g in good)
              + ": each lowered where it stops at least 10×") if good else ""
    return [text], advice


def post_sentence(cells, ulp32_h: float) -> list[str]:
    """What, among this run's experiments, stops at an excess as large as the post's KL."""
    stops = []
    for p, r in cells:
        if p.get("format") != "float32":
            continue
        if p.get("experiment") in ("lbfgs", "remedies"):
            where = (f"{p['optimizer']} κ = {_f(p['condition'], 2)}"
                     + (f" ({p['objective']})" if p.get("experiment") == "remedies" else ""))
            stops.append((where, _num(r.get("excess_at_stop"))))
        elif p.get("experiment") == "models":
            # each model's own lowest loss: H(t̄) for the bias alone, mean H(t) (a bound) otherwise
            floor = r["bias_min_loss"] - (0.0 if p["model"] == "bias" else r["achievable_gain"])
            stops.append((f"the {p['model']} model at gain {_f(p['signal'], 2)}", r["train_exact_loss"] - floor))
    stops = [(w, e) for w, e in stops if math.isfinite(e)]
    big = [(w, e) for w, e in stops if e >= POST_KL]
    text = (f"The post's KL ({POST_KL:.3g}) is {POST_KL / ulp32_h:.0f} float32 ulps of H: float32's loss "
            "resolution alone does not explain a stall there. ")
    if big:
        text += "In this run float32 L-BFGS stopped at or above that excess in: " + ", ".join(
            f"{w} ({_f(e, 2)})" for w, e in big) + "."
    elif stops:
        worst = max(stops, key=lambda we: we[1])
        text += (f"No float32 L-BFGS run here stopped that high: the highest excess at a stop was "
                 f"{_f(worst[1], 2)} ({worst[0]}), {_f(POST_KL / worst[1], 2)}× below it.")
        trend = sorted(((p["condition"], _num(r["excess_at_stop"])) for p, r in _by(cells, "lbfgs")
                        if p["format"] == "float32" and p["optimizer"] == "scipy-default"))
        if len(trend) >= 2 and trend[-1][1] > trend[0][1]:
            text += (" With scipy's defaults the float32 excess at the stop grew with the conditioning ("
                     + ", ".join(f"κ = {_f(k, 2)}: {_f(e, 2)}" for k, e in trend)
                     + "): of the causes measured here, ill-conditioning comes closest.")
    return [text]


# --------------------------------------------------------------------------------------------------
# mechanisms

def mechanisms_section(rows) -> tuple[str, list[str]]:
    """(markdown, verdict sentences) of the lr sweep, Adam lr × state, and Adam's ε sweep."""
    mech = [r for r in rows if r.get("part") == "mechanisms"]
    if not mech:
        return "", []
    from .report import _bound  # noqa: the shared upper-bound rendering

    lines = ["## Mechanisms", ""]
    sentences = []
    sweep = [r for r in mech if r["optimizer"] == "gd"]
    if sweep:
        table = []
        slopes, crossovers = {}, {}
        for key in sorted({(r["problem"], r["format"]) for r in sweep}):
            rs = sorted((r for r in sweep if (r["problem"], r["format"]) == key),
                        key=lambda r: _num(r.get("lr_times_lambda_max")))
            for r in rs:
                table.append({"problem": key[0], "format": key[1], "lr·λmax": r.get("lr_times_lambda_max"),
                              "excess floor": _bound(r), "floor·(lr·λmax)²": _num(r["excess_floor"])
                              * _num(r.get("lr_times_lambda_max")) ** 2 if r["floor_status"] == "plateau" else math.nan,
                              "pred. swamping": r.get("predicted_swamping_floor"),
                              "pred. gradient": r.get("predicted_gradient_floor"),
                              "status": r["floor_status"]})
            crossing = [_num(r["lr_times_lambda_max"]) * math.sqrt(_num(r["predicted_swamping_floor"])
                                                                  / _num(r["predicted_gradient_floor"]))
                        for r in rs if _num(r.get("predicted_gradient_floor")) > 0]
            if crossing and key[0] == "bias-only":
                crossovers[key] = crossing[0]       # E_swamp ∝ 1/lr²: equal to E_grad at this lr·λ_max
            ok = [r for r in rs if r["floor_status"] == "plateau" and _num(r["excess_floor"]) > 0]
            if len(ok) >= 3:
                x = np.log([_num(r["lr_times_lambda_max"]) for r in ok])
                y = np.log([_num(r["excess_floor"]) for r in ok])
                slopes[key] = float(np.polyfit(x, y, 1)[0])
        lines += ["### GD learning-rate sweep", "",
                  "Under swamping the floor is ∝ 1/lr² (s_i = ulp(w_i)/(2 lr)); under gradient resolution "
                  "it does not depend on lr. *slope*: fitted d log(floor)/d log(lr) over the plateaued runs.", "",
                  markdown_table(table), ""]
        if slopes:
            near2 = [k for k, v in slopes.items() if -2.6 <= v <= -1.4]
            flat = [k for k, v in slopes.items() if -0.5 <= v <= 0.5]
            lines += ["Slopes: " + ", ".join(f"{p} {f} {v:.2f}" for (p, f), v in sorted(slopes.items())), ""]
            sentences.append(
                "GD lr sweep (lr·λ_max 0.25–1.5): floor ∝ lr^slope with slope "
                + ", ".join(f"{p} {f} {v:.2f}" for (p, f), v in sorted(slopes.items()))
                + (f"; ≈ −2 (swamping, floor ∝ 1/lr²) for {', '.join(p + ' ' + f for p, f in near2)}" if near2 else "")
                + (f"; ≈ 0 (gradient resolution, lr-independent) for {', '.join(p + ' ' + f for p, f in flat)}" if flat else "")
                + (". The theory's bias-only crossover (predicted swamping floor = gradient-resolution "
                   "floor) lies at lr·λ_max ≈ " + ", ".join(f"{v:.2f} ({f})" for (_, f), v in sorted(crossovers.items()))
                   if crossovers else "")
                + ".")
    adam = [r for r in mech if r["optimizer"] == "adam" and r.get("eps_ratio") is None]
    if adam:
        table = [{"format": r["format"], "state": r["state_format"], "lr": r.get("lr"),
                  "min excess": r.get("min_excess"), "at it": r.get("min_excess_iteration"),
                  "rebound it": r.get("rebound_iteration"), "last-quarter excess": _bound(r),
                  "blew up at": r.get("blew_up_iteration")} for r in adam]
        lines += ["### Adam: lr × state format (linear problem, ε = 1e-8)", "", markdown_table(table), ""]
        blown = [r for r in adam if r["floor_status"] == "blew_up"]
        by_lr = {}
        for r in adam:
            by_lr.setdefault(_f(r.get("lr"), 2), []).append(r)
        sentences.append(
            "Adam lr × state format (linear): " + "; ".join(
                f"lr {lr}: {sum(r['floor_status'] == 'blew_up' for r in rs)} of {len(rs)} blew up, "
                f"{sum(r.get('rebound_iteration') is not None and r['floor_status'] != 'blew_up' for r in rs)} rebounded"
                for lr, rs in sorted(by_lr.items()))
            + (f"; blow-ups all with state in {', '.join(sorted({r['state_format'] for r in blown}))}" if blown else "")
            + ".")
    eps = [r for r in mech if r["optimizer"] == "adam" and r.get("eps_ratio") is not None]
    if eps:
        table = [{"format": r["format"], "lr·λmax/ε": r.get("eps_ratio"), "ε": r.get("adam_eps"),
                  "min excess": r.get("min_excess"), "sharpness > 38 from it": r.get("adam_unstable_iteration"),
                  "rebound it": r.get("rebound_iteration"), "sharpness at rebound": r.get("sharpness_at_rebound"),
                  "max after min": r.get("max_excess_after_min")} for r in eps]
        lines += ["### Adam's stability limit: ε with lr·λ_max/ε ∈ {20, 30, 45, 60}", "",
                  "Linear problem, lr = 1e-2, β = (0.9, 0.99): β2 = 0.99 lets v̂ decay e-fold every 100 "
                  "steps, so the sharpness reaches its resting value within the run (the limit depends on "
                  "β1 only). The preconditioned sharpness λ_max(D^½HD^½) of Adam at rest tends to lr·λ_max/ε; the "
                  "quadratic model puts the limit at 2(1 + β1)/(1 − β1) = 38 (Cohen et al. 2022, "
                  "\"Adaptive gradient methods at the edge of stability\").", "", markdown_table(table), ""]
        below = [r for r in eps if _num(r.get("eps_ratio")) < 38]
        above = [r for r in eps if _num(r.get("eps_ratio")) > 38]
        reb_below = sum(r.get("rebound_iteration") is not None for r in below)
        reb_above = sum(r.get("rebound_iteration") is not None for r in above)
        sentences.append(
            f"Adam's ε sweep: with lr·λ_max/ε below 38, {reb_below} of {len(below)} runs rebounded; above it, "
            f"{reb_above} of {len(above)}"
            + (" — the rebound starts where the stability limit says." if reb_below == 0 and reb_above == len(above)
               and above else " — not the clean split the stability limit predicts.") )
    return "\n".join(lines), sentences


# --------------------------------------------------------------------------------------------------
# the section

def section(cells, plot_dir: Path, ulp32_h: float) -> tuple[str, list[str], str]:
    """(markdown, verdict sentences, remedy advice) of the symptoms part; ("", [], "") without it."""
    if not cells:
        return "", [], ""
    plot = lbfgs_plot(cells, plot_dir)
    remedy_lines, advice = remedies_sentence(cells)
    sentences = models_sentences(cells) + lbfgs_sentences(cells) + targets_sentences(cells) \
        + remedy_lines + post_sentence(cells, ulp32_h)
    model_cols = ["signal", "format", "gain", "gain/ulp(L*)", "bias train", "linear train", "mlp train",
                  "train identical", "bias val", "linear val", "mlp val", "val = train",
                  "bias its", "linear its", "mlp its", "linear excess", "mlp excess"]
    lines = [
        "## The question's symptoms, as experiments",
        "",
        "Same data for every model (4 dyadic features, 3 classes, 256 training and 256 held-out rows; "
        "soft targets on the 2^-24 grid, identical in float32 and float64), with the achievable KL gain "
        "of the best model over the bias alone set to each *signal* level; each model trained by "
        f"scipy L-BFGS-B with ftol = gtol = 0 (at most {MODEL_ITERATIONS} iterations). *train*/*val*: the reported "
        "final losses (the format's values, 10 digits); *train identical*: the three models' reported "
        "training losses are the same number; *val = train*: in how many models the reported held-out "
        "loss equals the reported training loss; *excess*: exact training loss − mean H(t), the lowest "
        "loss any model can reach (an upper bound on how far the run stopped from its own optimum).",
        "",
        markdown_table(models_table(cells), model_cols, digits=10),
        "",
        "### L-BFGS as people run it: iterations to stop vs conditioning",
        "",
        "`scipy-default`: L-BFGS-B with default tolerances (ftol 2.2e-9, gtol 1e-5); `format-state`: an "
        "L-BFGS whose state and line search are in the format, with torch.optim.LBFGS's defaults "
        "(tolerance_grad 1e-7, tolerance_change 1e-9); `scipy-ftol0`: ftol = gtol = 0. Problem: "
        "linear-ill-conditioned (excess exact). At most 3000 iterations.",
        "",
        markdown_table(lbfgs_table(cells)),
        "",
        "The same, on the signal data (models experiment, scipy-ftol0):",
        "",
        markdown_table(model_iterations(cells)),
        "",
        "### Remedies for the float32 L-BFGS stall (κ = 1e4)",
        "",
        markdown_table(remedies_table(cells)),
        "",
        "### Findings",
        "",
    ] + [f"* {s}" for s in sentences] + [""]
    if plot:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines), sentences, advice
