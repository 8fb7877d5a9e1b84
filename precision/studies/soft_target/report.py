"""report.md and plots of the soft-target stall study, and the post's own numbers.

:func:`report` is the study's report hook: from the finished cells it writes ``report.md`` (tables of
measured vs predicted stalls, the attribution and conditioning tables, the post's numbers and a verdict
in plain words) and PNG plots under ``plots/``. :func:`post_numbers` computes item 6 of the issue.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import mpmath
import numpy as np

from precision import formats as _formats
from precision.study.plots import format_number, markdown_table, plot_comparison, plot_panels
from .train import REBOUND_FACTOR, applicable_floor, rebound_of

__all__ = ["report", "post_numbers", "POST_TARGETS", "POST_PREDICTIONS", "POST_QUOTED"]

POST_TARGETS = ("0.39019628", "0.44301641", "0.16678731")
POST_PREDICTIONS = ("0.39511779", "0.44509024", "0.15979198")
POST_QUOTED = {"entropy": "1.0266190072458234", "cross_entropy": "1.026805558049737"}

FORMAT_ORDER = ["float16", "bfloat16", "float32", "float64"]


# --------------------------------------------------------------------------------------------------
# the post's numbers

def post_numbers(dps: int = 50) -> dict:
    """Exact and per-format values of the post's entropy and cross-entropy (issue item 6).

    Exact: the printed decimals taken as exact rationals, H(t) = −Σ t log t and
    CE(t, q) = −Σ t log q in mpmath at `dps` digits. Per format F (float32, float64): t and q are
    rounded to F; H is ``precision.entropy(t_F)``; the cross-entropy is
    ``precision.softmax_cross_entropy(log_F(q_F), t_F)`` (logits = log q rounded to F, so the
    kernel's softmax renormalises q: it evaluates −Σ t log(q/Σq) = CE + log Σq with Σq =
    1.00000001 as printed), and KL directly as ``precision.kl_divergence(t_F, log_F(q_F))``.
    Sensitivity: the printed digits are rounded to 1e-8, i.e. each t_i, q_i is known to ±5e-9, so
    any value computed from them is known only to about Σ|∂/∂t_i|·5e-9 + Σ|∂/∂q_i|·5e-9.
    """
    from precision import entropy, kl_divergence, softmax_cross_entropy

    with mpmath.workdps(dps):
        t = [mpmath.mpf(Fraction(s).numerator) / Fraction(s).denominator for s in POST_TARGETS]
        q = [mpmath.mpf(Fraction(s).numerator) / Fraction(s).denominator for s in POST_PREDICTIONS]
        h = -mpmath.fsum(ti * mpmath.log(ti) for ti in t)
        ce = -mpmath.fsum(ti * mpmath.log(qi) for ti, qi in zip(t, q))
        sum_q = mpmath.fsum(q)
        ce_renormalised = ce + mpmath.log(sum_q)
        kl = ce - h
        # first-order sensitivity to ±5e-9 in each printed value
        half_digit = mpmath.mpf("5e-9")
        dh = half_digit * mpmath.fsum(abs(mpmath.log(ti) + 1) for ti in t)
        dce = half_digit * (mpmath.fsum(abs(mpmath.log(qi)) for qi in q)
                            + mpmath.fsum(ti / qi for ti, qi in zip(t, q)))
        out = {"exact": {"entropy": h, "cross_entropy": ce, "kl": kl,
                         "cross_entropy_renormalised": ce_renormalised, "sum_q": sum_q,
                         "entropy_uncertainty": dh, "cross_entropy_uncertainty": dce},
               "quoted": {k: mpmath.mpf(v) for k, v in POST_QUOTED.items()}}
        out["quoted"]["kl"] = out["quoted"]["cross_entropy"] - out["quoted"]["entropy"]
        out["quoted_minus_exact"] = {k: out["quoted"][k] - out["exact"][k]
                                     for k in ("entropy", "cross_entropy", "kl")}
    per_format = {}
    for name in ("float32", "float64"):
        fmt = _formats.format(name)
        tf = fmt.round(np.array([float(Fraction(s)) for s in POST_TARGETS]))[None, :]
        qf = fmt.round(np.array([float(Fraction(s)) for s in POST_PREDICTIONS]))
        logq = fmt.round(np.log(qf.astype(np.float64)))[None, :]   # float64 log rounded to F
        per_format[name] = {
            "entropy": float(entropy(tf)),
            "cross_entropy_logits_log_q": float(softmax_cross_entropy(logq, tf)),
            "kl": float(kl_divergence(tf, logq)),
            "ulp_at_entropy": float(fmt.ulp(fmt.round(float(out["exact"]["entropy"])))),
        }
    out["formats"] = per_format
    return out


def _post_section(numbers: dict) -> str:
    ex, qu, diff = numbers["exact"], numbers["quoted"], numbers["quoted_minus_exact"]
    f32 = numbers["formats"]["float32"]
    f64 = numbers["formats"]["float64"]
    ulp32 = f32["ulp_at_entropy"]
    kl_quoted = float(qu["kl"])
    lines = [
        "## The post's own numbers",
        "",
        "Targets t = [0.39019628, 0.44301641, 0.16678731], predictions q = [0.39511779, 0.44509024, "
        "0.15979198], taken as the exact decimals printed. Exact values (mpmath, 50 digits):",
        "",
        "| quantity | exact (printed digits) | quoted in the post | quoted − exact | float32 (our kernels) | float64 (our kernels) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| H(t) | {mpmath.nstr(ex['entropy'], 20)} | {POST_QUOTED['entropy']} | "
        f"{mpmath.nstr(diff['entropy'], 3)} | {f32['entropy']!r} | {f64['entropy']!r} |",
        f"| CE(t, q) = −Σ t log q | {mpmath.nstr(ex['cross_entropy'], 20)} | "
        f"{POST_QUOTED['cross_entropy']} | {mpmath.nstr(diff['cross_entropy'], 3)} | "
        f"{f32['cross_entropy_logits_log_q']!r} ¹ | {f64['cross_entropy_logits_log_q']!r} ¹ |",
        f"| KL = CE − H | {mpmath.nstr(ex['kl'], 12)} | {mpmath.nstr(qu['kl'], 12)} | "
        f"{mpmath.nstr(diff['kl'], 3)} | {f32['kl']!r} ² | {f64['kl']!r} ² |",
        "",
        f"¹ `softmax_cross_entropy(logits = log q, t)`: the softmax renormalises q, whose printed "
        f"digits sum to {mpmath.nstr(ex['sum_q'], 12)}, so this is −Σ t log(q/Σq) = CE + log Σq "
        f"(exact: {mpmath.nstr(ex['cross_entropy_renormalised'], 20)}).  "
        "² `kl_divergence(t, logits = log q)`, computed directly (not as CE − H), likewise renormalised.",
        "",
        "Why the quoted values differ from the exact ones: each printed probability is rounded to "
        "8 decimals (±5e-9), which moves H by up to "
        f"{mpmath.nstr(ex['entropy_uncertainty'], 2)} and CE by up to "
        f"{mpmath.nstr(ex['cross_entropy_uncertainty'], 2)}; the post's 16-digit values were "
        "computed from the unrounded arrays, so only their first ~8 digits can be checked from "
        "what was printed, and they agree to that level.  Neither float32 nor float64 arithmetic "
        "explains the difference: float64 reproduces the exact value of the printed digits to "
        "about 1e-16, float32 to about one ulp.  "
        f"(The quoted CE is {mpmath.nstr(abs(qu['cross_entropy'] - ex['cross_entropy_renormalised']), 2)} "
        f"from the renormalised value −Σ t log(q/Σq) and {mpmath.nstr(abs(diff['cross_entropy']), 2)} "
        "from −Σ t log q: consistent with predictions that came out of a softmax.)",
        "",
        f"How far the quoted KL is from float32's resolution at H: ulp32(H) = {ulp32:.3g}, so "
        f"float32 resolves a change of the loss near H down to ulp32(H)/2 = {ulp32 / 2:.3g}.  The "
        f"quoted KL = {kl_quoted:.4g} is {kl_quoted / ulp32:.0f} ulps of H "
        f"({kl_quoted / (ulp32 / 2):.0f} times the half-ulp resolution): float32 sees this KL "
        "without difficulty.  A float32 loss stops resolving progress only when the excess is "
        f"of order H·u32 = {float(ex['entropy']) * 2.0 ** -24:.3g}, some three orders of magnitude "
        "below the post's KL.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# tables

def _label(params: dict) -> str:
    fmt = params["format"]
    acc = params.get("accumulate") or fmt
    return fmt if acc == fmt else f"{fmt}+{acc} acc"


def _rows(results) -> list[dict]:
    rows = []
    for p, r in results:
        row = dict(p)
        row.update({k: r.get(k) for k in (
            "loss_freeze_iteration", "excess_at_loss_freeze", "predicted_excess_at_loss_freeze",
            "excess_floor", "floor_status", "floor_iteration", "predicted_floor", "loss_resolution",
            "unit_roundoff", "predicted_swamping_floor", "predicted_gradient_floor",
            "predicted_representation_floor", "blew_up_iteration", "hessian_condition", "min_loss",
            "stop_message", "iterations_run", "adam_eps", "adam_unstable_iteration",
            "rebound_iteration", "predicted_gradient_floor_p_shared",
            "predicted_gradient_floor_p_independent", "lr", "final_excess", "blow_up_nonfinite",
            "blow_up_x_over_0", "blow_up_0_over_0", "blow_up_other", "lr_times_lambda_max",
            "adam_lr_lambda_over_eps")})
        row.setdefault("part", "main")
        row["freeze_ratio"] = _ratio(r.get("excess_at_loss_freeze"), r.get("predicted_excess_at_loss_freeze"))
        row["predicted_floor"] = applicable_floor(p, r)
        row["floor_ratio"] = _ratio(r.get("excess_floor"), row["predicted_floor"])
        u = r.get("unit_roundoff")
        row["floor_over_u2"] = _ratio(r.get("excess_floor"), u * u)
        row["floor_over_Hu"] = _ratio(r.get("excess_floor"), r.get("predicted_excess_at_loss_freeze"))
        row["label"] = _label(p)
        rounded = np.asarray(r.get("rounded_away", []), dtype=np.float64)
        row["rounded_away_final"] = float(rounded[-1]) if rounded.size else math.nan
        grad_rel = np.asarray(r.get("grad_rel_error", []), dtype=np.float64)
        row["grad_rel_error_final"] = float(grad_rel[-1]) if grad_rel.size else math.nan
        row.update(rebound_of(r))
        row["decay_rate_at_freeze"] = _decay_rate(r, r.get("loss_freeze_iteration"))
        row["rate_limited_freeze"] = _rate_limited_freeze(row, p)
        rows.append(row)
    # The same run in float64: a floor no lower than float64's is set by the optimization (too few
    # iterations, ill-conditioning), not by the format.
    def twin_key(row):
        return (row["problem"], row.get("condition"), row["optimizer"], row.get("variant"),
                row.get("seed"), row.get("iterations"))
    f64 = {twin_key(r): r["excess_floor"] for r in rows if r["format"] == "float64"}
    for row in rows:
        row["floor_vs_float64"] = _ratio(row["excess_floor"], f64.get(twin_key(row)))
        # what the tables show: a floor of a run still decreasing is an upper bound ("≤"), and so
        # is every ratio formed from it
        for key in ("excess_floor", "floor_ratio", "floor_over_u2", "floor_vs_float64"):
            row[key + "_shown"] = _bound(row, key)
    return rows


def _decay_rate(result, iteration) -> float:
    """−d ln(excess)/d iteration around `iteration`, from the two evaluations that bracket it."""
    if iteration is None:
        return math.nan
    its = np.asarray(result.get("eval_iterations", []), dtype=np.float64)
    excess = np.asarray(result.get("exact_excess", []), dtype=np.float64)
    k = int(np.searchsorted(its, iteration))
    lo, hi = max(k - 1, 0), min(k + 1, its.size - 1)
    if hi <= lo or not (excess[lo] > 0 and excess[hi] > 0 and np.isfinite([excess[lo], excess[hi]]).all()):
        return math.nan
    return float(np.log(excess[lo] / excess[hi]) / (its[hi] - its[lo]))


def _rate_limited_freeze(row, params) -> float:
    """The excess at which a loss decreasing at rate r per iteration gains less than ulp(L*) over the
    patience window P: ulp(L*) / (1 − e^(−P·r)). Equals ~ulp(L*) when the run converges fast
    (P·r ≫ 1) and lies far above it when it converges slowly (GD only)."""
    rate = row.get("decay_rate_at_freeze")
    if params.get("optimizer") != "gd" or not (isinstance(rate, float) and rate > 0):
        return math.nan
    return float(row["loss_resolution"]) / (1.0 - math.exp(-PATIENCE * rate))


PATIENCE = 10   # the study's patience rule for GD (soft_target.DEFAULTS["patience"])


def _ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return math.nan
    return a / b if (math.isfinite(a) and math.isfinite(b) and b != 0) else math.nan


def _median(values):
    values = [v for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


MAIN_COLUMNS = ["problem", "label", "optimizer", "state_format", "variant", "loss_freeze_iteration",
                "excess_at_loss_freeze", "predicted_excess_at_loss_freeze", "freeze_ratio",
                "excess_floor_shown", "floor_status", "floor_iteration", "predicted_floor",
                "floor_ratio_shown", "floor_over_u2_shown", "floor_vs_float64_shown"]
HEADERS = {"label": "format", "loss_freeze_iteration": "freeze it", "excess_at_loss_freeze":
           "excess at freeze", "predicted_excess_at_loss_freeze": "pred. L*·u", "freeze_ratio": "ratio",
           "excess_floor": "excess floor", "floor_status": "floor status", "floor_iteration": "floor it",
           "predicted_floor": "pred. floor", "floor_ratio": "ratio ", "floor_over_u2": "floor/u²",
           "state_format": "state", "condition": "κ (features)", "floor_vs_float64": "÷ float64's",
           "excess_floor_shown": "excess floor", "floor_ratio_shown": "ratio ",
           "floor_over_u2_shown": "floor/u²", "floor_vs_float64_shown": "÷ float64's"}


# --------------------------------------------------------------------------------------------------
# verdict

def _bound(row, key="excess_floor", digits=3) -> str:
    """A floor-derived number as text: '≤x' when the run was still decreasing (an upper bound),
    'blew up' for a blow-up, else the value."""
    status = row.get("floor_status")
    if status == "blew_up":
        return "blew up"
    text = format_number(row.get(key), digits)
    return f"≤{text}" if status == "decreasing" else text


def _span(values, digits=2) -> str:
    """'a' or 'a–b' (finite values only; '–' when none)."""
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    lo, hi = format_number(min(values), digits), format_number(max(values), digits)
    return lo if lo == hi else f"{lo}–{hi}"


def _median_and_span(values) -> str:
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    return f"{format_number(_median(values), 2)} (range {_span(values)}, {len(values)})"


def _over_seeds(values, unit="", digits=2, bound=False, total=None) -> str:
    """One measurement repeated over seeds, as text: one value 'v<unit>'; several 'a median
    v<unit> (range lo–hi, n seeds)', or 'v<unit> (all n seeds)' when they agree; '–' when none is
    finite. bound: some value is an upper bound (a run still decreasing), so the median and the
    range are too: marked '≤'. total: the number of seeds the setting ran, when the values come
    from only some of them ('k of n seeds')."""
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    mark = "≤" if bound else ""
    lo, hi = min(values), max(values)
    seeds = f"{len(values)} of {total} seeds" if total and total > 1 else f"{len(values)} seeds"
    if len(values) == 1:
        return f"{mark}{format_number(lo, digits)}{unit}" + (f" ({seeds})" if total and total > 1 else "")
    if format_number(lo, digits) == format_number(hi, digits):
        return f"{mark}{format_number(lo, digits)}{unit} ({'all ' if not total else ''}{seeds})"
    return (f"a median {mark}{format_number(_median(values), digits)}{unit} (range {mark}"
            f"{format_number(lo, digits)}–{format_number(hi, digits)}, {seeds})")


def _median_text(values, bound=False, blown=0) -> str:
    """The median of some floors as text ('≤' when one is an upper bound; blown-up runs counted)."""
    text = ("≤" if bound else "") + format_number(_median(values), 3) if values else "–"
    return text + (f" ({blown} blew up)" if blown else "")


def _seed_groups(rows, key) -> dict:
    """rows grouped by key(row), a key that leaves the seed out; first-appearance order."""
    groups = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _of_seeds(count: int, total: int, several: bool) -> str:
    """' (k of n seeds)' when the run has several seeds, else ''."""
    return f" ({count} of {total} seeds)" if several else ""


def _fold_seeds(rows, columns, identity):
    """A table's rows with the seeds folded: with one seed, (rows, columns) unchanged; with several,
    one row per setting (the `identity` columns), a `seeds` column, and in every other column the
    median over the seeds with its range, 'm [lo–hi]' ('≤' when a seed was still decreasing, blown-up
    seeds counted), or the distinct texts with their counts."""
    if len({r.get("seed") for r in rows}) <= 1:
        return rows, columns
    columns = [c for c in columns if c != "seed"]
    out = []
    for key, group in _seed_groups(rows, lambda r: tuple(r.get(k) for k in identity)).items():
        entry = dict(zip(identity, key))
        entry["seeds"] = len(group)
        for column in columns:
            if column not in identity:
                entry[column] = _fold_cell(group, column)
        out.append(entry)
    at = max(columns.index(c) for c in identity if c in columns) + 1
    return out, columns[:at] + ["seeds"] + columns[at:]


def _fold_cell(group, column) -> str:
    """One column of several seeds' rows as text (see _fold_seeds)."""
    if column.endswith("_shown"):
        blown = sum(r.get("floor_status") == "blew_up" for r in group)
        if blown == len(group):
            return "blew up"
        values = [_num(r.get(column[:-len("_shown")])) for r in group if r.get("floor_status") != "blew_up"]
        mark = "≤" if any(r.get("floor_status") == "decreasing" for r in group) else ""
        return _median_range(values, 3, mark) + (f" ({blown} blew up)" if blown else "")
    values = [r.get(column) for r in group]
    if all(v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))
           for v in values):
        integers = all(v is None or isinstance(v, (int, np.integer)) for v in values)
        present = [_num(v) for v in values if v is not None]
        text = _median_range(present, 6 if integers else 3)
        return text + (f" ({len(present)} of {len(values)})" if text and len(present) < len(values) else "")
    counts = {}
    for v in values:
        text = format_number(v)
        counts[text] = counts.get(text, 0) + 1
    return counts.popitem()[0] if len(counts) == 1 else ", ".join(f"{t} ×{n}" for t, n in counts.items())


def _median_range(values, digits=3, mark="") -> str:
    """'m [lo–hi]' of the finite values ('m' when they agree, '' when none is finite)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    med = mark + format_number(_median(values), digits)
    span = _span(values, digits)
    return med if "–" not in span else f"{med} [{mark}{span}]"


def _within(ratio, factor) -> bool:
    return math.isfinite(ratio) and 1 / factor <= ratio <= factor


def _verdict(rows, symptoms=(), mechanisms=(), remedy_advice="") -> str:
    """The report's verdict: bullets whose every claim is decided by this run's numbers.
    symptoms, mechanisms: sentences of those parts (symptoms_report); remedy_advice: the L-BFGS
    remedy the run supports ("" if none)."""
    lines = ["## Verdict: what stalls, when, and what to do", ""]
    if symptoms:
        lines.append("* **The question's symptoms.** " + " ".join(symptoms))
    if mechanisms:
        lines.append("* **Mechanisms.** " + " ".join(mechanisms))
    plain = [r for r in rows if r.get("variant", "plain") == "plain" and r.get("part", "main") == "main"]
    gd = [r for r in plain if r["optimizer"] == "gd" and r["problem"] in ("bias-only", "linear", "linear-noisy")]
    evidence = {}
    if gd:
        freeze = _median([r["freeze_ratio"] for r in gd])
        evidence["freeze_near"] = _near_one(freeze)
        lines.append(
            f"* **The reported loss freezes.** Under gradient descent the loss the format reports "
            f"stopped improving when the true excess was {format_number(freeze, 2)}× L*·u (median over "
            f"{_runs(len(gd))} on the bias-only and linear problems; range "
            f"{_span([r['freeze_ratio'] for r in gd])})"
            + (": at the loss-resolution level, as predicted." if evidence["freeze_near"] else
               ": not within 10× of the loss-resolution level L*·u the theory predicts."))
    settled = [r for r in gd if r["floor_status"] == "plateau"]
    bounds = [r for r in gd if r["floor_status"] == "decreasing"]
    if settled:
        below = [_ratio(r["excess_at_loss_freeze"], r["excess_floor"]) for r in settled]
        med_below = _median(below)
        evidence["gd_below_freeze"] = med_below
        per_problem = []
        for problem in ("bias-only", "linear", "linear-noisy"):
            ratios = [r["floor_ratio"] for r in settled if r["problem"] == problem]
            if ratios:
                per_problem.append(f"{problem} {_median_and_span(ratios)}")
        all_ratios = [r["floor_ratio"] for r in settled]
        agree = _near_one(_median(all_ratios))
        lines.append(
            "* **Gradient descent keeps going after the freeze.** In the "
            f"{_runs(len(settled))} whose exact excess levelled off, the floor lies a median "
            f"{format_number(med_below, 2)}× below the excess at the freeze (range {_span(below)})"
            + (" — orders of magnitude below where the loss froze" if med_below >= 100 else
               ("" if med_below > 1 else " — not below it")) +
            ". Measured floor ÷ predicted floor (the largest of swamping, gradient resolution and "
            "representation; median, range, runs): " + "; ".join(per_problem)
            + (": the u²-scale theory predicts the level within 10×." if agree else
               ": the theory misses the level by more than 10×.")
            + (f" {_runs(len(bounds))} still decreasing at the end: only upper bounds "
               f"({', '.join(r['problem'] + ' ' + r['label'] + ' ' + _bound(r) for r in bounds)})."
               if bounds else ""))
    attribution = {}
    for r in rows:
        if r["optimizer"] == "gd" and r.get("variant") in ("exact-gradient", "master-f64") \
                and r.get("part", "main") == "main":
            base = next((b for b in plain if b["optimizer"] == "gd" and b["problem"] == r["problem"]
                         and b["label"] == r["label"] and b.get("seed") == r.get("seed")), None)
            if base is not None and base["floor_status"] == "plateau" and r["floor_status"] == "plateau":
                attribution.setdefault(r["problem"], {}).setdefault(r["variant"], []).append(
                    _ratio(base["excess_floor"], r["excess_floor"]))
    if attribution:
        parts = []
        for problem, by in sorted(attribution.items()):
            exact_gain = _median(by.get("exact-gradient", []))
            master_gain = _median(by.get("master-f64", []))
            text = (f"{problem}: exact gradient ÷{format_number(exact_gain, 2)}, "
                    f"float64 master weights ÷{format_number(master_gain, 2)}")
            if master_gain > 3 and (_within(exact_gain, 3) or not math.isfinite(exact_gain)):
                text += " → update swamping sets the floor"
            elif exact_gain > 3 and not master_gain > 3:
                text += " → the gradient's rounding sets the floor"
            else:
                text += " → neither mechanism alone sets it"
            parts.append(text)
        evidence["swamping"] = any("swamping sets" in p for p in parts)
        lines.append(
            "* **Attribution** (median factor by which the GD floor drops when one mechanism is "
            "removed; runs whose floors levelled off): " + "; ".join(parts) + ".")
    lines += _lbfgs_bullets(plain, gd, evidence)
    mlp_line = _mlp_verdict([r for r in plain if r["problem"] == "mlp"]
                            + [r for r in rows if r["problem"] == "mlp" and r.get("variant") == "master-f64"
                               and r.get("part", "main") == "main"])
    if mlp_line:
        lines.append(mlp_line)
    adam_lines = _adam_blow_up_bullet([r for r in plain if r["optimizer"] == "adam"])
    lines += adam_lines
    adam_line = _adam_verdict([r for r in rows if r.get("part", "main") == "main"], evidence)
    if adam_line:
        lines.append(adam_line)
    several = len({r.get("seed") for r in rows}) > 1
    acc = [(r, s) for r in gd for s in gd if r["problem"] == s["problem"] and r["format"] == s["format"]
           and r.get("seed") == s.get("seed") and r["label"] == r["format"] and s["label"] != s["format"]
           and r["optimizer"] == s["optimizer"]]
    if acc:
        ratios = [_ratio(s["excess_floor"], r["excess_floor"]) for r, s in acc]
        little = all(_within(x, 2) for x in ratios)
        parts = []
        for (problem, fmt), pairs in _seed_groups(acc, lambda pair: (pair[0]["problem"], pair[0]["format"])).items():
            if not several:
                r, s = pairs[0]
                parts.append(f"{problem} {fmt}: {_bound(r)} → {_bound(s)}")
                continue
            floors = []
            for side in (0, 1):
                group = [pair[side] for pair in pairs]
                finite = [_num(x["excess_floor"]) for x in group if x["floor_status"] != "blew_up"]
                floors.append(_median_text(finite, any(x["floor_status"] == "decreasing" for x in group),
                                           sum(x["floor_status"] == "blew_up" for x in group)))
            parts.append(f"{problem} {fmt}: median floor {floors[0]} → {floors[1]} (ratio "
                         f"{_span([_ratio(s['excess_floor'], r['excess_floor']) for r, s in pairs])}, "
                         f"{len(pairs)} seeds)")
        lines.append("* **float32 accumulation** "
                     + ("changes the GD floors of the 16-bit formats by less than 2× (the floor is set "
                        "by the parameters' own ulp, not by the sums): " if little else
                        f"changes the GD floors of the 16-bit formats by {_span(ratios)}×: ")
                     + "; ".join(parts) + ".")
    if remedy_advice:
        evidence["remedies"] = remedy_advice
    lines += ["", _what_to_do(evidence), ""]
    return "\n".join(lines)


def _lbfgs_bullets(plain, gd, evidence) -> list[str]:
    out = []
    lb = [r for r in plain if r["optimizer"] == "lbfgs" and r["problem"] in ("bias-only", "linear", "linear-noisy")]
    if lb:
        by_format = {}
        for r in lb:
            by_format.setdefault(r["format"], []).append(r["floor_over_Hu"])
        near = [f for f in FORMAT_ORDER if f in by_format and _near_one(_median(by_format[f]))]
        evidence["lbfgs_at_resolution"] = len(near) == len(by_format)
        above = {}
        for r in lb:
            twin = next((g for g in gd if g["problem"] == r["problem"] and g["label"] == r["label"]
                         and g.get("seed") == r.get("seed") and g["floor_status"] == "plateau"), None)
            if twin is not None:
                above.setdefault(r["format"], []).append(_ratio(r["excess_floor"], twin["excess_floor"]))
        per_format = [f"{fmt} {_span(above[fmt])}×" for fmt in FORMAT_ORDER if fmt in above]
        evidence["lbfgs_above_gd"] = {fmt: _median(v) for fmt, v in above.items()}
        out.append(
            "* **L-BFGS (scipy, ftol = gtol = 0) stops on the reported loss.** Its line search needs a "
            "reported decrease; where it stopped, in units of L*·u (median per format): "
            + ", ".join(f"{f} {format_number(_median(by_format[f]), 2)}× ({_runs(len(by_format[f]))})"
                        for f in FORMAT_ORDER if f in by_format)
            + ("; within 10× of the loss-resolution level in every format" if evidence["lbfgs_at_resolution"]
               else (f"; within 10× of the loss-resolution level in {', '.join(near)} only" if near else
                     "; not within 10× of the loss-resolution level in any format"))
            + (". Where it stops ÷ where GD's excess levelled off, same problem and format: "
               + "; ".join(per_format) + " (above 1: L-BFGS stops higher; below 1: lower)" if per_format else "")
            + ".")
    ill = [r for r in plain if r["problem"] == "linear-ill-conditioned"]
    lb_ill = [r for r in ill if r["optimizer"] == "lbfgs"]
    if lb_ill:
        several = len({r.get("seed") for r in ill}) > 1

        def setting(r):
            return f"{r['label']} κ={format_number(r.get('condition'))}"

        parts = []
        for name, group in _seed_groups(lb_ill, setting).items():
            limited = sum("ITERATIONS" in str(r.get("stop_message")) for r in group)
            stop = _over_seeds([_num(r["floor_over_Hu"]) for r in group], "× L*·u")
            if not limited:
                parts.append(f"{name}: stopped at {stop}")
            elif not several:
                parts.append(f"{name}: at the iteration limit, {stop}")
            else:
                parts.append(f"{name}: {stop}, at the iteration limit in {limited} of {len(group)} seeds")
        far = [r for r in lb_ill if _num(r["floor_over_Hu"]) > 10]
        gd_ill = [r for r in ill if r["optimizer"] == "gd" and r["format"] != "float64"]
        gd_parts = [f"{name} blew up" if all(r["floor_status"] == "blew_up" for r in group) else
                    f"{name} " + _over_seeds([_num(r["floor_vs_float64"]) for r in group], digits=3,
                                             bound=any(r["floor_status"] == "decreasing" for r in group))
                    + (f" ({sum(r['floor_status'] == 'blew_up' for r in group)} blew up)"
                       if any(r["floor_status"] == "blew_up" for r in group) else "")
                    for name, group in _seed_groups(gd_ill, setting).items()]
        out.append(
            "* **Ill-conditioned features:** L-BFGS " + "; ".join(parts)
            + (f" — {len(far)} of {_runs(len(lb_ill))} more than 10× above the loss-resolution level."
               if far else " — all within 10× of the loss-resolution level.")
            + (" GD's excess ÷ float64's in the same run (≈ 1: the iterations, not the format, limit it"
               + ("; ≤: some seed still decreasing, an upper bound" if several and any(
                   r["floor_status"] == "decreasing" for r in gd_ill) else "")
               + "): " + ", ".join(gd_parts) + "." if gd_ill else ""))
    return out


def _adam_blow_up_bullet(adam) -> list[str]:
    """Adam's blow-ups described by what the data show (which division produced the first
    non-finite parameter), the value ε and β2 take in each state format, and which runs did not
    blow up."""
    if not adam:
        return []
    from precision import formats as fm

    blown = [r for r in adam if r["floor_status"] == "blew_up"]
    states = sorted({r["state_format"] for r in adam}, key=FORMAT_ORDER.index)
    text = [f"* **Adam (lr = {format_number(_median([_num(r.get('lr')) for r in adam]), 2)}, ε = 1e-8, "
            f"β = (0.9, 0.999)).** {len(blown)} of {len(adam)} runs blew up."]
    if blown:
        x0 = sum(int(_num(r.get("blow_up_x_over_0")) or 0) for r in blown if math.isfinite(_num(r.get("blow_up_x_over_0"))))
        z0 = sum(int(_num(r.get("blow_up_0_over_0")) or 0) for r in blown if math.isfinite(_num(r.get("blow_up_0_over_0"))))
        other = sum(int(_num(r.get("blow_up_other")) or 0) for r in blown if math.isfinite(_num(r.get("blow_up_other"))))
        several = len({r.get("seed") for r in adam}) > 1

        def setting(r):
            return f"{r['problem']} {r['label']}"

        def state(r):
            return (setting(r), r["state_format"])

        runs_of = _seed_groups(adam, state)
        where = "; ".join(
            f"{name} (state {st}, iteration {_span([_num(r.get('blew_up_iteration')) for r in group], 6)}"
            + (f"; {len(group)} of {len(runs_of[(name, st)])} seeds" if several else "") + ")"
            for (name, st), group in _seed_groups(blown, state).items())
        kinds = []
        if x0:
            kinds.append(f"{x0} were x/0 = ±inf (v̂ had underflowed to 0 while m̂ had not)")
        if z0:
            kinds.append(f"{z0} were 0/0 = NaN (m̂ = v̂ = 0)")
        if other:
            kinds.append(f"{other} had another cause (overflow or a non-finite gradient)")
        text.append(f" Blown up: {where}. Of the parameters that first became non-finite, "
                    + ("; ".join(kinds) if kinds else "no anatomy was recorded") + ".")
        survivors = [r for r in adam if r["floor_status"] != "blew_up"
                     and r["state_format"] in {b["state_format"] for b in blown}]
        if survivors:
            text.append(" Not blown up with the same state format: "
                        + ", ".join(name + (f" ({len(group)} of {len(runs_of[(name, st)])} seeds)"
                                            if several else "")
                                    for (name, st), group in _seed_groups(survivors, state).items()) + ".")
    eps_parts = []
    for state in states:
        fmt = fm.format(state)
        eps_f = float(fmt.round(np.float64(1e-8)))
        beta2_f = float(fmt.round(np.float64(0.999)))
        facts = []
        if eps_f == 0:
            facts.append("ε = 1e-8 rounds to 0")
        if beta2_f == 1.0:
            facts.append("β2 = 0.999 rounds to 1, so v is never decayed (v̂ keeps the largest g² seen, "
                         "damped only by the bias correction)")
        if facts:
            runs = [r for r in adam if r["state_format"] == state]
            eps_parts.append(f"in {state} state ({_runs(len(runs))}) " + " and ".join(facts))
    if eps_parts:
        text.append(" Hyperparameters as the state format holds them: " + "; ".join(eps_parts) + ".")
    return ["".join(text)]


def _what_to_do(evidence) -> str:
    """What to do, one recommendation per finding this run supports."""
    advice = []
    if evidence.get("freeze_near") and evidence.get("gd_below_freeze", 0) >= 100:
        advice.append("judge convergence by the gradient or an accurately computed excess (a KL against "
                      "the best achievable predictions), not by the low-precision loss value: the loss "
                      "froze at L*·u while the parameters kept improving "
                      f"{format_number(evidence['gd_below_freeze'], 2)}× further (median)")
    if evidence.get("swamping"):
        advice.append("to go below the 16-bit floors keep float32 (or float64) master weights: removing "
                      "swamping lowered them, exact gradients did not")
    if evidence.get("lbfgs_at_resolution"):
        advice.append("for L-BFGS, expect it to stop where the objective stops resolving (L*·u)")
    if evidence.get("remedies"):
        advice.append(evidence["remedies"])
    if evidence.get("adam_rebound"):
        advice.append(evidence["adam_rebound"])
    if not advice:
        return "What to do: this run supports no recommendation (see the bullets above)."
    return "What to do, from this run: " + "; ".join(advice) + "."


def _adam_attribution_rows(rows) -> list[dict]:
    """The Adam runs (pure formats, state in the format) of every (problem, format) that has Adam
    attribution runs, plain first, then exact-gradient, master-f64, eps-stable."""
    order = ["plain", "exact-gradient", "master-f64", "eps-stable"]
    adam = [r for r in rows if r["optimizer"] == "adam" and r["label"] == r["format"]
            and r["state_format"] == r["format"] and r.get("variant", "plain") in order]
    keys = {(r["problem"], r["format"], r.get("seed")) for r in adam if r.get("variant", "plain") != "plain"}
    table = [r for r in adam if (r["problem"], r["format"], r.get("seed")) in keys]
    return sorted(table, key=lambda r: (r["problem"], FORMAT_ORDER.index(r["format"]), r.get("seed") or 0,
                                        order.index(r.get("variant", "plain"))))


ADAM_COLUMNS = ["problem", "label", "seed", "variant", "adam_eps", "min_excess", "min_excess_iteration",
                "adam_unstable_iteration", "rebound_iteration", "sharpness_at_rebound",
                "max_excess_after_min", "excess_floor"]
ADAM_HEADERS = {"label": "format", "adam_eps": "ε", "min_excess": "min excess",
                "min_excess_iteration": "at it", "adam_unstable_iteration": "sharpness > 38 from it",
                "rebound_iteration": "rebound it", "sharpness_at_rebound": "sharpness at rebound",
                "max_excess_after_min": "max excess after min", "excess_floor": "last-quarter excess"}
def _sharpness(rows) -> str:
    """The sharpness at the rebound of some runs: 'a' or 'a–b', or 'not recorded'."""
    text = _span([_num(r.get("sharpness_at_rebound")) for r in rows])
    return "not recorded" if text == "–" else text


STABILITY_SHARE = 0.75   # a rebound at sharpness ≥ this × 38 is attributed to the stability limit


def _adam_verdict(rows, evidence=None) -> str:
    """The verdict's bullet on Adam's rebound, from the attribution runs (empty without them)."""
    from .train import adam_stability_threshold

    evidence = {} if evidence is None else evidence
    table = _adam_attribution_rows(rows)
    if not table:
        return ""
    limit = adam_stability_threshold()
    seeds = len({r.get("seed") for r in table}) > 1
    short = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}

    def name(r):
        return f"{r['problem']} {short.get(r['format'], r['format'])} {r.get('variant', 'plain')}"

    def at(group, variant_runs):
        total = sum(name(r) == name(group[0]) for r in variant_runs) if seeds else None
        return f"{name(group[0])} at it " + _over_seeds([_num(r["rebound_iteration"]) for r in group],
                                                        digits=6, total=total)

    def runs(variant):
        return [r for r in table if r.get("variant", "plain") == variant and r.get("blew_up_iteration") is None]

    def count(variant):
        rs = runs(variant)
        return f"{sum(r.get('rebound_iteration') is not None for r in rs)}/{len(rs)}"

    blown = [r for r in table if r.get("blew_up_iteration") is not None]
    rebounded = [r for r in table if r.get("rebound_iteration") is not None
                 and r.get("blew_up_iteration") is None]
    stability = [r for r in rebounded if _num(r.get("sharpness_at_rebound")) >= STABILITY_SHARE * limit]
    noise = [r for r in rebounded if _num(r.get("sharpness_at_rebound")) < STABILITY_SHARE * limit
             or not math.isfinite(_num(r.get("sharpness_at_rebound")))]
    lines = [
        "* **Adam's rebound** (attribution runs; a rebound: the excess rises above "
        f"{REBOUND_FACTOR:g}× max(its running minimum, u²); {len(blown)} blown-up runs left out). "
        f"Runs that rebounded: plain {count('plain')}, exact gradient {count('exact-gradient')}, "
        f"float64 weights and state (`master-f64`) {count('master-f64')}, `eps-stable` "
        f"{count('eps-stable')}. On the quadratic model with D = diag(lr/(√v̂ + ε)) frozen, Adam is "
        f"stable while λ_max(D^½ H D^½) < 2(1 + β1)/(1 − β1) = {limit:g} (Cohen et al. 2022, "
        "\"Adaptive gradient methods at the edge of stability\"); once the gradient vanishes v̂ decays "
        "by β2 per step and this sharpness grows towards lr·λ_max/ε."]
    if stability:
        clean = [r for r in stability if r["format"] == "float64" or r.get("variant") in ("exact-gradient", "master-f64")]
        lines.append(
            f" {len(stability)} of {len(rebounded)} rebounds began with the sharpness at "
            f"{_span([_num(r['sharpness_at_rebound']) for r in stability])} (≥ {STABILITY_SHARE:g}× the "
            f"limit {limit:g}): " + ", ".join(at(group, table) for group in _seed_groups(stability, name).values())
            + (f"; {len(clean)} of them in float64 or with exact or float64 gradients, so the stability "
               "limit, not rounding, starts them" if clean else
               "; none in float64 or with exact gradients, so rounding is not excluded") + ".")
        if any(r["problem"] == "mlp" for r in stability):
            lines.append(" (MLP: H is the teacher's Hessian, the run sits elsewhere on the manifold of "
                         "exact fits, so its sharpness is approximate.)")
    if noise:
        lines.append(
            f" {len(noise)} rebound(s) began with the sharpness below {STABILITY_SHARE:g}× the limit "
            "(not explained by the stability model): "
            + ", ".join(f"{at(group, table)}, sharpness {_sharpness(group)}"
                        for group in _seed_groups(noise, name).values()) + ".")
    stable = runs("eps-stable")
    if stable:
        plain_by = {(r["problem"], r["format"], r.get("seed")): r for r in runs("plain")}
        compare = [(r, plain_by.get((r["problem"], r["format"], r.get("seed")))) for r in stable]
        slower = [r for r, p in compare if p is not None and _num(r["min_excess"]) > _num(p["min_excess"])]
        none_rebounded = all(r.get("rebound_iteration") is None for r in stable)
        lines.append(
            " With ε raised so that lr·λ_max/ε ≤ 4 (`eps-stable`) "
            + (f"none of the {len(stable)} runs rebounded" if none_rebounded else
               f"{sum(r.get('rebound_iteration') is not None for r in stable)} of {len(stable)} runs still rebounded")
            + ": " + "; ".join(f"{name(group[0])} min {_over_seeds([_num(r['min_excess']) for r in group], digits=3)}"
                               f", largest after it {_over_seeds([_num(r['max_excess_after_min']) for r in group], digits=3)}"
                               for group in _seed_groups(stable, name).values())
            + (f"; {len(slower)} of {len(compare)} reached a higher minimum than plain ε = 1e-8 within the "
               "iterations run (the last phase is GD with step lr/ε)" if slower else "") + ".")
        plain_rebound = [r for r in runs("plain") if r.get("rebound_iteration") is not None]
        if none_rebounded and plain_rebound:
            advice = ("raise Adam's ε (here lr·λ_max/ε ≤ 4) or decay its lr once the loss is flat: that "
                      "removed every rebound")
            if any(r["format"] == "float64" for r in plain_rebound):
                advice += ", which float64 arithmetic does not"
            evidence["adam_rebound"] = advice
    return "".join(lines)


def _mlp_verdict(mlp) -> str:
    """The verdict's bullet on the MLP (empty when the run has no MLP cells)."""
    gd = [r for r in mlp if r["optimizer"] == "gd" and r["label"] == r["format"]
          and r.get("variant", "plain") == "plain"]
    plain_runs = [r for r in mlp if r.get("variant", "plain") == "plain"]
    if not gd:
        return ""
    several = len({r.get("seed") for r in mlp}) > 1
    parts = []
    freeze = [_num(r["freeze_ratio"]) for r in gd]
    follow = [_ratio(r["excess_at_loss_freeze"], r["rate_limited_freeze"]) for r in gd]
    follow = [v for v in follow if math.isfinite(v)]
    if any(math.isfinite(v) for v in freeze):
        text = (f"Under GD its reported loss froze at {_span(freeze)}× L*·u "
                f"(Hessian condition {format_number(gd[0]['hessian_condition'])})")
        if follow:
            explained = all(_within(v, 3) for v in follow)
            text += ("; the rate-limited estimate ulp(L*)/(1 − e^(−P·r)) (r the measured decay rate at "
                     f"the freeze, P = 10) gives measured/estimate {_span(follow)}"
                     + (": a slowly converging loss freezes above L*·u because it gains less than an "
                        "ulp per patience window" if explained else ": it does not account for the freeze"))
        parts.append(text)
    floors = []
    for fmt, group in _seed_groups(gd, lambda r: r["format"]).items():
        if not several:
            r = group[0]
            floors.append(f"{fmt} {_bound(r)} ({_bound(r, 'floor_over_Hu', 2)}× L*·u; "
                          f"predicted swamping {format_number(r['predicted_swamping_floor'])})")
            continue
        mark = "≤" if any(r["floor_status"] == "decreasing" for r in group) else ""
        ok = [r for r in group if r["floor_status"] != "blew_up"]
        blown = len(group) - len(ok)
        floor = [_num(r["excess_floor"]) for r in ok]
        over = [_num(r["floor_over_Hu"]) for r in ok]
        floors.append(f"{fmt} a median {mark}{format_number(_median(floor), 3)} (range {mark}{_span(floor, 3)}; "
                      f"{mark}{format_number(_median(over), 2)}× L*·u, range {mark}{_span(over)}; predicted "
                      f"swamping {_span([_num(r['predicted_swamping_floor']) for r in group], 3)}; "
                      f"{_runs(len(group)).replace('run', 'seed')}" + (f", {blown} blew up" if blown else "") + ")")
    parts.append("GD's exact excess went on to " + "; ".join(floors))
    near = [r for r in gd if r["format"] in ("float16", "bfloat16") and r["floor_status"] == "plateau"
            and _num(r["floor_over_Hu"]) > 0.01]
    if near:
        parts.append("in " + ", ".join(fmt + _of_seeds(len(group), sum(r["format"] == fmt for r in gd), several)
                                       for fmt, group in _seed_groups(near, lambda r: r["format"]).items())
                     + " that floor is within 100× of L*·u: "
                     "little lies below the frozen loss there")
    swamp_over_grad = [_ratio(r["predicted_swamping_floor"], r["predicted_gradient_floor"]) for r in gd]
    if all(v > 10 for v in swamp_over_grad if math.isfinite(v)) and any(math.isfinite(v) for v in swamp_over_grad):
        parts.append(f"swamping is predicted to dominate (its floor {_span(swamp_over_grad)}× the "
                     "gradient-resolution floor from the format's measured gradient errors near θ*)")
    master = [r for r in mlp if r["optimizer"] == "gd" and r.get("variant") == "master-f64"]
    if master:
        parts.append("with float64 master weights (no swamping): " + ", ".join(
            f"{fmt} " + _over_seeds([_num(r["excess_floor"]) for r in group], digits=3,
                                    bound=any(r["floor_status"] == "decreasing" for r in group))
            + " (÷ predicted gradient floor "
            + ("≤" if any(r["floor_status"] == "decreasing" for r in group) else "")
            + _span([_ratio(r["excess_floor"], r["predicted_gradient_floor"]) for r in group]) + ")"
            for fmt, group in _seed_groups(master, lambda r: r["format"]).items()))
    lb = [r for r in plain_runs if r["optimizer"] == "lbfgs"]
    if lb:
        stops = [_num(r["floor_over_Hu"]) for r in lb]
        parts.append("L-BFGS stopped at " + ", ".join(
            f"{fmt} " + _over_seeds([_num(r["floor_over_Hu"]) for r in group], "×")
            for fmt, group in _seed_groups(lb, lambda r: r["label"]).items())
            + " L*·u" + (" (within 10× of the loss-resolution level)" if all(_near_one(v) for v in stops)
                         else ""))
    adam = [r for r in plain_runs if r["optimizer"] == "adam" and r["floor_status"] != "blew_up"]
    if adam:
        parts.append("Adam's lowest excess: " + ", ".join(
            f"{label} (state {state}) {_over_seeds([_num(r['min_excess']) for r in group], digits=3)}"
            + (f" (iteration {group[0]['min_excess_iteration']}; later up to "
               f"{format_number(group[0]['max_excess_after_min'])})" if len(group) == 1 else
               f"; at iterations {_span([_num(r['min_excess_iteration']) for r in group], 6)}, later up to "
               f"{_span([_num(r['max_excess_after_min']) for r in group], 3)}")
            for (label, state), group in _seed_groups(adam, lambda r: (r["label"], r["state_format"])).items()))
    return ("* **The MLP (a teacher of the student's architecture fits the targets exactly: L* = mean "
            "H(t)).** " + "; ".join(parts) + ".")


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


MLP_COLUMNS = ["label", "optimizer", "state_format", "variant", "loss_freeze_iteration", "excess_at_loss_freeze",
               "predicted_excess_at_loss_freeze", "freeze_ratio", "decay_rate_at_freeze",
               "rate_limited_freeze", "excess_floor_shown", "floor_status", "floor_iteration",
               "predicted_swamping_floor", "predicted_gradient_floor", "floor_ratio_shown",
               "floor_over_u2_shown",
               "floor_over_Hu", "rounded_away_final", "grad_rel_error_final", "stop_message"]


def _mlp_section(rows) -> str:
    mlp = [r for r in rows if r["problem"] == "mlp"]
    if not mlp:
        return ""
    info = mlp[0]
    lines = [
        "## The MLP: a realizable teacher, so the excess is exact at any depth",
        "",
        "One hidden ReLU layer (4 inputs: a group's 2-D centre and 2 nuisance features; 6 hidden "
        "units; 3 classes; 128 rows in 6 groups). The soft targets (k/64, exact in every format) "
        "depend on the group only and are fitted *exactly* by a teacher of the student's own "
        "architecture: its first layer is dyadic and ignores the nuisance features, and its second "
        "layer solves [relu(pre_g), 1]·(W2; b2) = log t_g − mean log t_g in mpmath (60 digits; every "
        "teacher pre-activation is ≥ 1/8 away from the ReLU's kink). Since CE(θ) = mean H(t_r) + "
        "mean KL(t_r ‖ p_r) ≥ mean H(t_r), the global minimum is L* = mean H(t_r) = "
        f"{_num(info['min_loss']):.17g} in closed form, and the excess of any parameters is "
        "mean KL(t_r ‖ p_r), evaluated without cancellation from double-double logits (validated "
        "against mpmath down to excesses of 1e-33). No optimizer's convergence enters the reference. "
        f"Hessian at the teacher: condition {format_number(info['hessian_condition'])} over its "
        "nonzero eigenvalues (the optimum is a manifold of exact fits). Training starts from the "
        "teacher plus N(0, 0.1²) noise rounded to multiples of 1/32 (excess ≈ 0.2); GD uses "
        "lr·λ_max ∈ (3/4, 3/2].",
        "",
        "*rate r*: −d ln(excess)/d iteration at the loss freeze; *rate-limited freeze* = "
        "ulp(L*)/(1 − e^(−10·r)), the excess at which a loss falling at rate r gains less than one "
        "ulp of L* over the patience window of 10 iterations. *rounded away*: share of nonzero "
        "gradient components whose update left the parameter unchanged at the last iteration. "
        "*grad error*: ‖g − g_exact‖/‖g_exact‖ of the format's gradient at the last sampled iteration "
        "(mpmath backpropagation). *ratio*: excess floor ÷ the prediction that applies (GD: the "
        "larger of swamping and gradient resolution; `master-f64`: gradient resolution; L-BFGS: "
        "L*·u; Adam: none).",
        "",
        markdown_table(*_fold_seeds(mlp, MLP_COLUMNS, ["label", "optimizer", "state_format", "variant"]),
                       headers={**HEADERS, "decay_rate_at_freeze": "rate r",
                                                  "rate_limited_freeze": "rate-limited freeze",
                                                  "predicted_swamping_floor": "pred. swamping",
                                                  "predicted_gradient_floor": "pred. gradient",
                                                  "floor_over_Hu": "floor/(L*·u)",
                                                  "rounded_away_final": "rounded away",
                                                  "grad_rel_error_final": "grad error"}),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# plots

def _plots(results, out_dir: Path) -> list[str]:
    plot_dir = out_dir / "plots"
    written = []
    groups = {}
    for p, r in results:
        if p.get("variant", "plain") != "plain" or (p.get("state_format") not in (None, p["format"])
                                                    and p["optimizer"] == "adam"):
            continue
        key = (p["problem"], p.get("condition"), p["optimizer"])
        groups.setdefault(key, []).append((p, r))
    for (problem, condition, optimizer), cells in groups.items():
        panels, refs = {}, {}
        for p, r in cells:
            if p.get("seed", 0) != cells[0][0].get("seed", 0):
                continue
            title = _label(p)
            reported = np.asarray(r["reported_loss"]).astype(np.float64) - float(r["min_loss"])
            panels[title] = {
                "exact excess CE − L*": (np.asarray(r["eval_iterations"]), np.asarray(r["exact_excess"])),
                "reported loss − L*": reported,
            }
            u = float(r["unit_roundoff"])
            refs[title] = {"L*·u": float(r["predicted_excess_at_loss_freeze"]), "u²": u * u}
        name = f"{problem}{'' if condition is None else f'-k{condition:g}'}_{optimizer}.png"
        plot_panels(plot_dir / name, panels, ylabel="excess over min CE", ncols=3,
                    title=f"{problem}{'' if condition is None else f' (κ={condition:g})'}: {optimizer}",
                    reference_lines=refs, sharey=False)
        written.append(f"plots/{name}")
    adam_plot = _adam_plot(results, plot_dir)
    if adam_plot:
        written.append(adam_plot)
    points_floor, points_freeze = {}, {}
    for p, r in results:
        label = p["optimizer"] + ("" if p.get("variant", "plain") == "plain" else f" ({p['variant']})")
        points_floor.setdefault(label, []).append((applicable_floor(p, r), r["excess_floor"]))
        points_freeze.setdefault(p["optimizer"], []).append(
            (r["predicted_excess_at_loss_freeze"], r["excess_at_loss_freeze"]))
    plot_comparison(plot_dir / "floors_predicted_vs_measured.png", points_floor,
                    xlabel="predicted floor", ylabel="measured excess floor",
                    title="exact-excess floors: measured vs predicted")
    plot_comparison(plot_dir / "freeze_predicted_vs_measured.png", points_freeze,
                    xlabel="predicted excess at loss freeze (L*·u)",
                    ylabel="measured excess at loss freeze", title="loss freeze: measured vs predicted")
    written += ["plots/floors_predicted_vs_measured.png", "plots/freeze_predicted_vs_measured.png"]
    return written


def _adam_plot(results, plot_dir: Path) -> str | None:
    """plots/adam_attribution.png: per (problem, format) with Adam attribution runs (first seed), the
    exact excess and the preconditioned sharpness of every variant; None when there are none."""
    cells = [(p, r) for p, r in results if p["optimizer"] == "adam" and p.get("accumulate") == p["format"]
             and p.get("state_format") == p["format"]]
    seed = min((p.get("seed", 0) for p, _ in cells), default=0)
    keys = sorted({(p["problem"], p["format"]) for p, _ in cells
                   if p.get("variant", "plain") != "plain" and p.get("seed", 0) == seed},
                  key=lambda k: (k[0], FORMAT_ORDER.index(k[1])))
    if not keys:
        return None
    panels, refs = {}, {}
    for problem, fmt in keys:
        excess_panel, sharp_panel = f"{problem}, {fmt}: exact excess", f"{problem}, {fmt}: sharpness"
        panels[excess_panel], panels[sharp_panel] = {}, {}
        for p, r in cells:
            if (p["problem"], p["format"], p.get("seed", 0)) != (problem, fmt, seed):
                continue
            variant = p.get("variant", "plain")
            panels[excess_panel][variant] = (np.asarray(r["eval_iterations"]), np.asarray(r["exact_excess"]))
            if len(r.get("adam_sharpness", [])):
                panels[sharp_panel][variant] = (np.asarray(r["adam_sharpness_iterations"]),
                                                np.asarray(r["adam_sharpness"]))
            u = float(r["unit_roundoff"])
            refs[excess_panel] = {"u²": u * u}
            refs[sharp_panel] = {"stability limit 2(1+β1)/(1−β1)": float(r["adam_stability_threshold"])}
    name = "adam_attribution.png"
    plot_panels(plot_dir / name, panels, ylabel="", ncols=2, sharey=False, reference_lines=refs,
                title="Adam: exact excess and preconditioned sharpness λ_max(D^½HD^½), D = diag(lr/(√v̂+ε))",
                legend_location="figure")
    return f"plots/{name}"


# --------------------------------------------------------------------------------------------------
# the report

def _main_cells(results) -> list:
    """(params, result) of the main grid (no ``part``): the symptoms and mechanism cells have their
    own sections."""
    return [(p, r) for p, r in results if p.get("part", "main") == "main"]


def report(results, out_dir) -> None:
    """Write report.md and plots/*.png for a run of the soft-target stall study."""
    from . import symptoms_report

    out_dir = Path(out_dir)
    everything = results
    results = _main_cells(everything)
    symptom_cells = [(p, r) for p, r in everything if p.get("part") == "symptoms"]
    rows = _rows(results)
    mech_rows = _rows([(p, r) for p, r in everything if p.get("part") == "mechanisms"])
    plots = _plots(results, out_dir) if len(results) else []
    ulp32_h = float(_formats.float32.ulp(_formats.float32.round(float(POST_QUOTED["entropy"]))))
    symptom_md, symptom_lines, remedy_advice = symptoms_report.section(symptom_cells, out_dir / "plots",
                                                                       ulp32_h)
    mech_md, mech_lines = symptoms_report.mechanisms_section(mech_rows)
    parts = [
        "# Where soft-target training stalls in each format, and why",
        "",
        f"{len(everything)} cells finished ({len(results)} main, {len(symptom_cells)} symptoms, "
        f"{len(mech_rows)} mechanisms)"
        + (f", {len(everything.failures)} failed" if getattr(everything, "failures", None) else "")
        + ". Raw results: `raw/cells/*.json`; one row per cell: `summary.csv`; provenance: "
        "`provenance.json`. Every number below is computed from those files by "
        "`precision/studies/soft_target/report.py`.",
        "",
        "Notation: L* = min CE (for the bias-only model the entropy of the mean target; for the MLP, "
        "whose targets a teacher network fits exactly, the mean entropy of the targets), u = 2^-p the "
        "format's unit roundoff, *excess* = CE(θ) − L* of the parameters the run holds, evaluated exactly "
        "(KL(p*‖p) form, validated against mpmath; see `precision/studies/soft_target/problems.py`). *freeze it*: the "
        "last iteration at which the reported loss improved before 10 iterations without improvement "
        "(L-BFGS: 1). *excess floor*: the level the exact excess settles at (median of the last quarter "
        "of the log-spaced evaluations; `decreasing` = still falling at the end, `stopped` = where "
        "L-BFGS stopped, `blew_up` = parameters became NaN/inf).",
        "",
    ]
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    if len(seeds) > 1:
        parts += [
            f"Seeds: {len(seeds)} ({', '.join(str(s) for s in seeds)}). The verdict and the tables give one "
            "item or row per setting: *seeds* = how many seeds ran it; a number is the median over "
            "those seeds with its range as `median [lowest–highest]` (`(k of n)`: only k seeds "
            "recorded a value, e.g. only k rebounded); a text column counts each value (`×n`).",
            "",
        ]
    parts += [
        _verdict(rows, symptom_lines, mech_lines, remedy_advice),
        symptom_md,
        mech_md,
        "## All runs: loss freeze and exact-excess floor, measured vs predicted",
        "",
        markdown_table(*_fold_seeds([r for r in rows if r["problem"] != "linear-ill-conditioned"],
                                    MAIN_COLUMNS, ["problem", "label", "optimizer", "state_format", "variant"]),
                       headers=HEADERS),
        "",
    ]
    mlp_section = _mlp_section(rows)
    if mlp_section:
        parts.append(mlp_section)
    attribution = [r for r in rows if r["optimizer"] == "gd" and r["label"] == r["format"]
                   and r["problem"] in ("bias-only", "linear", "mlp")]
    variants = {r.get("variant") for r in attribution}
    if len(variants) > 1:
        table = []
        keys = sorted({(r["problem"], r["label"], r.get("seed")) for r in attribution
                       if r.get("variant") != "plain"},
                      key=lambda k: (k[0], FORMAT_ORDER.index(k[1]), k[2] or 0))
        for problem, label, seed in keys:
            entry = {"problem": problem, "format": label, "seed": seed}
            same = [r for r in attribution if (r["problem"], r["label"], r.get("seed")) == (problem, label, seed)]
            for r in same:
                entry[r.get("variant", "plain")] = r["excess_floor"]
                if r.get("variant") == "master-f64":
                    entry["master-f64 status"] = r["floor_status"]
            entry["predicted swamping"] = same[0]["predicted_swamping_floor"]
            entry["predicted gradient"] = same[0]["predicted_gradient_floor"]
            entry["exact-gradient ÷ swamping"] = _ratio(entry.get("exact-gradient"), entry["predicted swamping"])
            entry["master-f64 ÷ gradient"] = _ratio(entry.get("master-f64"), entry["predicted gradient"])
            table.append(entry)
        parts += [
            "## Attribution: which mechanism sets the GD floor",
            "",
            "`exact-gradient`: the gradient computed in float64 and rounded once to the format, the "
            "update in the format (only swamping and representation remain). `master-f64`: the "
            "format's own gradient applied to float64 master weights (only gradient resolution "
            "remains; the excess of the master weights is shown). Values: exact-excess floors; the "
            "ratios compare each variant with the prediction of the one mechanism it keeps "
            "(`decreasing`: still falling at the end, an upper bound). The MLP's predicted gradient "
            "floor is ½ mean eᵀH⁺e over the format's measured gradient errors e at 16 points near θ* "
            "(theory.py, 3.); counting only the rounding of p it would be "
            + ", ".join(f"{r['format']} {format_number(r['predicted_gradient_floor_p_shared'])}"
                        for r in attribution if r["problem"] == "mlp" and r.get("variant") == "plain"
                        and math.isfinite(_num(r.get("predicted_gradient_floor_p_shared"))))
            + " (errors shared within a group; ~10× less if rows were independent): the forward "
            "pass's rounding (hidden activations, logits) dominates the MLP's gradient error.",
            "",
            markdown_table(*_fold_seeds(table, ["problem", "format", "seed", "plain", "exact-gradient",
                                                "master-f64", "master-f64 status", "predicted swamping",
                                                "predicted gradient", "exact-gradient ÷ swamping",
                                                "master-f64 ÷ gradient"], ["problem", "format"])),
            "",
        ]
    adam_table = _adam_attribution_rows(rows)
    if adam_table:
        parts += [
            "## Adam: attribution of the rebound",
            "",
            "Adam (lr = 1e-2 constant, β = (0.9, 0.999)), state in the parameters' format. "
            "`exact-gradient`: float64 gradient rounded once to the format; `master-f64`: the format's "
            "gradient, Adam run in float64 (weights and state); `eps-stable`: ε = 2^⌈log2(lr·λ_max/4)⌉, "
            "so lr/(√v̂ + ε) ≤ 4/λ_max. *sharpness > 38 from it*: first iteration (after the start-up "
            "transient) at which λ_max(D^½ H D^½), D = diag(lr/(√v̂ + ε)), exceeds 2(1 + β1)/(1 − β1) = 38, "
            f"Adam's stability limit on the quadratic model; *rebound it*: first iteration at which the "
            f"exact excess exceeds {REBOUND_FACTOR:g}× its running minimum (empty: never).",
            "",
            markdown_table(*_fold_seeds(adam_table, ADAM_COLUMNS, ["problem", "label", "variant"]),
                           headers=ADAM_HEADERS),
            "",
        ]
    ill = [r for r in rows if r["problem"] == "linear-ill-conditioned"]
    if ill:
        parts += [
            "## Conditioning sweep (linear, misspecified targets, features scaled to condition κ)",
            "",
            markdown_table(*_fold_seeds(ill, ["condition", "hessian_condition", "label", "optimizer",
                                              "loss_freeze_iteration", "excess_at_loss_freeze",
                                              "excess_floor_shown", "floor_status", "predicted_floor",
                                              "floor_ratio_shown", "floor_over_u2_shown",
                                              "floor_vs_float64_shown", "stop_message"],
                                        ["condition", "label", "optimizer"]),
                           headers={**HEADERS, "hessian_condition": "κ(Hessian)"}),
            "",
        ]
    parts += [
        "## Predicted floors (precision/study/theory.py)",
        "",
        "* loss resolution = ulp(L*); predicted excess at loss freeze = L*·u (a change of the true "
        "loss below about half an ulp of L* does not change the reported value). L-BFGS's "
        "line-search floor: the same L*·u.",
        "* update swamping (ulp(w)/2 rule): w ← R(w − R(lr·g)) is a no-op when |lr·g| < ulp(w)/2, so GD "
        "halts once every |g_i| ≤ s_i = (1−β)·ulp(w*_i)/(2 lr); with the quadratic model E ≈ ½ gᵀH⁺g and "
        "g_i uniform on [−s_i, s_i]: E_swamp = ½ Σ (H⁺)_ii s_i²/3.",
        "* gradient resolution: GD stops where the *computed* gradient vanishes, g ≈ −e with e the "
        "rounding error of p − t; bias-only (one shared p): e_c uniform on ±ulp(t̄_c)/2, "
        "E_grad = ½ Σ_c ulp(t̄_c)²/(12 t̄_c); linear models: rows' errors independent; MLP: "
        "E_grad = ½ mean_k e_kᵀH⁺e_k over the format's measured gradient errors e_k at 16 points "
        "within a few ulps of θ* (the forward pass's rounding dominates there, which the p-rounding "
        "model leaves out).",
        "* representation: rounding θ* itself costs E_repr = ½ Σ H_ii ulp(θ*_i)²/12.",
        "* GD/momentum's predicted floor is the largest of the three; Adam gets no prediction of "
        "its floor, but its stability limit is predicted: λ_max(D^½ H D^½) < 2(1 + β1)/(1 − β1) "
        "with D = diag(lr/(√v̂ + ε)) (see the Adam section).",
        "",
        "Assumptions: the quadratic model near θ*, independent uniform rounding errors, and a step "
        "size small enough that GD approaches θ* monotonically; ratios within a factor of a few "
        "are agreement at this level of modelling.",
        "",
    ]
    try:
        parts.append(_post_section(post_numbers()))
    except Exception as error:  # the report must not die on this section
        parts.append(f"## The post's own numbers\n\n(not computed: {type(error).__name__}: {error})\n")
    parts += [
        "## Limits of this run",
        "",
        "* The MLP's swamping prediction uses the teacher's parameters and Hessian; the run converges "
        "to another point of the manifold of exact fits (same binades, similar curvature), so it is "
        "an estimate of the same kind as the linear ones. The quick grid runs the MLP in the pure "
        "formats only (plus GD with float64 master weights and the Adam attribution runs in float32/float64); "
        "`--full` adds float32 accumulation, momentum, exact-gradient GD, Adam attribution in every "
        "format, and seeds.",
        "* Cells run a fixed number of iterations; a floor marked `decreasing` is an upper bound (the "
        "excess was still falling: run `--full` for longer runs, more seeds and the whole "
        "conditioning sweep).",
        "* Gradient errors against exact (mpmath) gradients are stored per cell (`grad_rel_error` at "
        "iterations `grad_error_iterations` in raw/cells/*.json; last value in summary.csv).",
        "",
    ]
    if (out_dir / "plots" / "lbfgs_iterations.png").is_file() and symptom_cells:
        plots.append("plots/lbfgs_iterations.png")
    if plots:
        parts += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out_dir / "report.md").write_text("\n".join(parts), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# the terminal verdict: a few sentences computed from this run, and one table that fits 100 columns

TERMINAL_PROBLEMS = ["bias-only", "linear", "linear-noisy", "linear-ill-conditioned", "mlp"]


def _range(values) -> str:
    values = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return format_number(lo, 2) if lo == hi else f"{format_number(lo, 2)}–{format_number(hi, 2)}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _near_one(ratio: float) -> bool:
    """Whether a measured/predicted ratio confirms the prediction's level (within a factor 10)."""
    return math.isfinite(ratio) and 0.1 <= ratio <= 10


def _floor_cell(row) -> str:
    """An excess floor as the terminal table shows it: '≤' marks an upper bound (still decreasing)."""
    status = row.get("floor_status")
    if status == "blew_up":
        return "blew up"
    value = format_number(row.get("excess_floor"), 2)
    return f"≤{value}" if status == "decreasing" else value


def verdict(results) -> str:
    """What `precision study soft-target-stall` prints when it ends. Every number is this run's."""
    from . import symptoms_report

    symptom_cells = [(p, r) for p, r in results if p.get("part") == "symptoms"]
    results = _main_cells(results)
    rows = _rows(results)
    plain = [r for r in rows if r.get("variant", "plain") == "plain"]
    lines = ["Verdict (this run):"]
    gd = [r for r in plain if r["optimizer"] == "gd" and r["problem"] in ("bias-only", "linear", "linear-noisy")]
    freeze = [r["freeze_ratio"] for r in gd]
    if gd:
        level = _median(freeze)
        lines.append(f"- The reported loss froze when the exact excess was {format_number(level, 2)}"
                     f" × L*·u (median of {_runs(len(gd))} of gradient descent; range {_range(freeze)})"
                     + (": about where a loss can no longer show an improvement (half an ulp of itself)."
                        if _near_one(level) else ", not near L*·u: see report.md."))
    settled = [r for r in gd if r.get("floor_status") == "plateau"]
    below = [_ratio(r.get("excess_at_loss_freeze"), r.get("excess_floor")) for r in settled]
    if settled:
        lines.append(f"- Gradient descent does not read the loss: in the {_runs(len(settled))} whose excess "
                     f"settled, the floor lies {_range(below)} × below the excess at the freeze; "
                     f"{_runs(len(gd) - len(settled))} still improving at the end (floors not reached).")
    lbfgs = [r for r in plain if r["optimizer"] == "lbfgs" and r["problem"] in ("bias-only", "linear", "linear-noisy")]
    if lbfgs:
        stop = [r["floor_over_Hu"] for r in lbfgs]
        level = _median(stop)
        lines.append(f"- L-BFGS stopped at a median {format_number(level, 2)} × L*·u ({_runs(len(lbfgs))}, "
                     f"range {_range(stop)})" + (": where the loss stops resolving." if _near_one(level)
                                                  else ", not at the loss-resolution level L*·u."))
    adam = [r for r in plain if r["optimizer"] == "adam"]
    if adam:
        blown = [r for r in adam if r.get("floor_status") == "blew_up"]
        where = sorted({f"{r['label']} (state {r['state_format']})" for r in blown})
        lines.append(f"- Adam: {len(blown)} of {len(adam)} runs blew up (NaN/inf)"
                     + (f", all in {', '.join(where)}." if blown else "."))
    # one table: the gradient-descent excess floor per problem (rows) and format (columns)
    labels = [label for label in ("float16", "float16+float32 acc", "bfloat16", "bfloat16+float32 acc",
                                  "float32", "float64") if any(r["label"] == label for r in plain)]
    table = []
    for problem in TERMINAL_PROBLEMS:
        cells = {}
        for r in plain:
            if r["problem"] == problem and r["optimizer"] == "gd" and r.get("seed") == plain[0].get("seed"):
                cells.setdefault(r["label"], r)
        if cells:
            row = {"GD excess floor": problem}
            row.update({label.replace("+float32 acc", "+f32"): _floor_cell(cells[label]) if label in cells else ""
                        for label in labels})
            table.append(row)
    if symptom_cells:
        for sentence in symptoms_report.models_sentences(symptom_cells)[:1] + \
                symptoms_report.lbfgs_sentences(symptom_cells):
            lines.append("- " + sentence)
    import textwrap
    lines = [lines[0]] + [textwrap.fill(line, width=100, subsequent_indent="  ") for line in lines[1:]]
    if table:
        from precision.study.plots import text_table
        lines += ["", text_table(table, list(table[0])).rstrip(),
                  "(≤: still decreasing at the last iteration, an upper bound; one seed; κ problems: the first "
                  "condition run)"]
    return "\n".join(lines)
