"""Numbers derived from finished cells, shared by summary.csv, report.md and the verdict."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["lr_range", "GRID_STEP_DECADES"]

GRID_STEP_DECADES = 0.5


def lr_range(result) -> tuple:
    """(lowest lr, highest lr, width in decades) of the sweep's lrs whose final excess reached the
    target; width = number of such grid points × the grid step (½ decade), 0 if none."""
    lrs = np.asarray(result["lrs"], dtype=np.float64)
    final = np.asarray(result["final_excess"], dtype=np.float64)
    ok = np.isfinite(final) & (final <= float(result["target"]))
    if not ok.any():
        return math.nan, math.nan, 0.0
    return float(lrs[ok].min()), float(lrs[ok].max()), float(ok.sum() * GRID_STEP_DECADES)


FORMAT_ORDER = ("float16", "bfloat16", "float32", "float64")
# issue #15 / reference/training-statistics.md §D
REFERENCE_FLIP = {("momentum", 0.9): 7, ("momentum", 0.99): 69, ("nesterov", 0.9): 6, ("nesterov", 0.99): 68}
REFERENCE_ADAGRAD = {("bfloat16", 0.01): 273, ("bfloat16", 0.1): 350, ("float16", 0.01): 2181,
                     ("float16", 0.1): 2798, ("float32", 0.01): 1.8e7, ("float32", 0.1): 2.3e7}
REFERENCE_FIRST_STEP = {"RMSprop torch α=0.99": 10.0, "RMSprop torch α=0.9": 3.162,
                        "RMSprop keras ρ=0.9": 3.162, "RMSprop optax ρ=0.9": 3.162,
                        "Adadelta Zeiler ρ=0.95 ε=1e-6": 4.47e-3}


def cells(results, part, **criteria):
    """[(params, result)] of one part, filtered by parameter values."""
    out = []
    for p, r in results:
        if p.get("part") != part:
            continue
        if all(p.get(k) == v for k, v in criteria.items()):
            out.append((p, r))
    return out


def formats_in(results) -> list:
    present = {p.get("format") for p, _ in results}
    return [f for f in FORMAT_ORDER if f in present]


def method_label(p) -> str:
    name = p["optimizer"]
    mu = p.get("momentum", p["betas"][0] if "betas" in p else None)
    label = {"sgd": "SGD", "momentum": "momentum", "nesterov": "Nesterov", "adam": "Adam",
             "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta"}[name]
    if mu is not None:
        label += f" μ={mu}" if name != "adam" else f" β1={mu}"
    conv = p.get("convention", "torch")
    return label if conv == "torch" else f"{label} ({conv})"


def response_rows(results) -> list:
    rows = []
    for p, r in cells(results, "response"):
        mu = p.get("momentum", p["betas"][0] if "betas" in p else None)
        rows.append({"format": p["format"], "method": method_label(p), "optimizer": p["optimizer"],
                     "mu": mu, "convention": p.get("convention", "torch"),
                     "flip_step": r["flip_step"],
                     "reference": REFERENCE_FLIP.get((p["optimizer"], mu)) if p.get("convention") == "torch" else None,
                     "predicted": r["predicted_flip_step"],
                     "predicted_rounded_mu": r["predicted_flip_step_rounded_mu"],
                     "mu_in_format": r["mu_in_format"] if mu else None,
                     # Adam's steady update is lr (m/√v → ±1), not lr/(1 − β1): scale the prediction
                     "overshoot": r["overshoot"],
                     "predicted_overshoot": r["predicted_overshoot"] * ((1 - mu) if p["optimizer"] == "adam" else 1),
                     "steady_over_plain": r["steady_over_plain"]})
    return rows


def adagrad_rows(results) -> list:
    rows = []
    for p, r in cells(results, "adagrad"):
        eff = np.asarray(r["effective_lr"], dtype=np.float64)
        ideal = np.asarray(r["ideal_effective_lr"], dtype=np.float64)
        rows.append({"format": p["format"], "g": p["g"],
                     "measured": r["measured_last_growing_step"],
                     "predicted": r["predicted_last_growing_step"],
                     "reference": REFERENCE_ADAGRAD.get((p["format"], p["g"])),
                     "accumulator": r["predicted_accumulator"],
                     "steps_run": r["steps_run"],
                     "eff_lr_ratio_end": float(eff[-1] / ideal[-1]) if eff.size else math.nan,
                     "travelled_ratio": r["travelled"] / r["ideal_travelled"],
                     "frozen_eff_lr": (p["lr"] / math.sqrt(r["predicted_accumulator"])
                                       if r["predicted_accumulator"] > 0 else math.nan)})
    return rows


def sweep_rows(results) -> list:
    rows = []
    for p, r in cells(results, "sweep"):
        lo, hi, width = lr_range(r)
        final = np.asarray(r["final_excess"], dtype=np.float64)
        finite = final[np.isfinite(final)]
        rows.append({"problem": p["problem"], "format": p["format"], "optimizer": p["optimizer"],
                     "lr_low": lo, "lr_high": hi, "width": width,
                     "best": float(finite.min()) if finite.size else math.nan,
                     "lrs": np.asarray(r["lrs"]), "final": final, "target": r["target"],
                     "excess0": float(r["excess0"])})
    return rows


def tuning_widths(results) -> dict:
    """{format: {optimizer: total width in decades over the problems}}."""
    out: dict = {}
    for row in sweep_rows(results):
        out.setdefault(row["format"], {}).setdefault(row["optimizer"], 0.0)
        out[row["format"]][row["optimizer"]] += row["width"]
    return out


def adadelta_lr_dependence(results, fmt) -> list:
    """Per problem: Adadelta's progress (start excess − final excess) at the smallest and the largest
    lr of the sweep, and their ratio (1 if the result did not depend on lr)."""
    out = []
    for row in sweep_rows(results):
        if row["optimizer"] == "adadelta" and row["format"] == fmt and row["final"].size >= 2:
            small = row["excess0"] - float(row["final"][0])
            large = row["excess0"] - float(row["final"][-1])
            out.append({"problem": row["problem"], "lr_small": float(row["lrs"][0]),
                        "lr_large": float(row["lrs"][-1]), "start_excess": row["excess0"],
                        "excess_small_lr": float(row["final"][0]), "excess_large_lr": float(row["final"][-1]),
                        "progress_ratio": large / small if small > 0 else math.inf})
    return out


def resolution_floor(surface, fmt) -> float:
    """The largest excess in the box θ* ± ½ulp(θ*): the scale below which a format cannot resolve."""
    from precision import formats as _formats

    F = _formats.format(fmt)
    star = np.asarray(surface.minimum, dtype=np.float64)
    half = np.asarray(F.ulp(star), dtype=np.float64) / 2
    worst = 0.0
    for sx in (-1, 1):
        for sy in (-1, 1):
            worst = max(worst, surface.excess(star + half * np.array([sx, sy])))
    return worst


def remedy_rows(results) -> list:
    """Per (surface, narrow format, optimizer): final excess without and with each remedy, the float32
    run's, the resolution floor, and whether each remedy brings the run within 10× of
    max(float32's excess, the format's resolution floor)."""
    from .surfaces import SURFACES

    by_key = {}
    for p, r in cells(results, "trajectory"):
        by_key[(p["surface"], p["format"], p["optimizer"], p["remedy"])] = r
    rows = []
    for (surface, fmt, opt, remedy), r in by_key.items():
        if remedy != "none" or fmt not in ("float16", "bfloat16"):
            continue
        ref = by_key.get((surface, "float32", opt, "none"))
        f32 = ref["final_excess"] if ref is not None else math.nan
        floor = resolution_floor(SURFACES[surface], fmt)
        goal = 10 * max(f32 if math.isfinite(f32) else 0.0, floor)
        row = {"surface": surface, "format": fmt, "optimizer": opt, "float32": f32, "floor": floor,
               "none": r["final_excess"], "swamped_last_half": r["swamped_share_last_half"],
               "first_swamped_step": r["first_swamped_step"],
               "excess_at_first_swamp": r["excess_at_first_swamp"]}
        for other in ("state-f32", "master", "kahan", "stochastic"):
            o = by_key.get((surface, fmt, opt, other))
            row[other] = o["final_excess"] if o is not None else math.nan
        for name in ("none", "state-f32", "master", "kahan", "stochastic"):
            v = row[name]
            row["fixed_" + name] = bool(math.isfinite(v) and v <= goal)
        rows.append(row)
    return rows


def memory_rows(results) -> tuple:
    found = cells(results, "memory")
    if not found:
        return [], []
    _, r = found[0]
    return list(r["rows"]), list(r["setups"])
