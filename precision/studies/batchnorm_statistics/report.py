"""report.md, plots and the terminal verdict of the batch-norm statistics study.

Each ``*_findings`` function turns the finished cells of one part into the numbers its table,
plot and sentences use; ``report`` and ``verdict`` only format them, so every sentence is computed
from this run's numbers.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from precision.study.plots import (format_number, markdown_provenance, markdown_table,
                                   plot_comparison, plot_panels, text_table)
from . import theory
from .parts import MOVING_CONFIGS, _key

__all__ = ["summarize", "report", "verdict", "REFERENCE_STALLS", "WU_HE_BN_ERROR"]

# training-statistics.md section A, [sim] rows: (store, alpha) -> (value, updates), float32 arithmetic
REFERENCE_STALLS = {("bfloat16", 0.1): (0.984375, 37), ("bfloat16", 0.01): (0.8046875, 146),
                    ("float16", 0.1): (0.998046875, 57), ("float16", 0.01): (0.9755859375, 358)}
# [sim] cumulative average, x ~ N(1, 0.1^2), 2000 channels x 20000 batches
REFERENCE_CMA = {"bfloat16": (90, 8.4e-3), "float16": (1010, 3.2e-3), "float32": (None, 4.3e-5)}
# Wu & He 2018 (Group Normalization), ResNet-50 ImageNet val error (%), BN, per images per GPU
WU_HE_BN_ERROR = {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7}
FORMAT_ORDER = ["float16", "bfloat16", "float32", "float64"]


def _f(x, d=3):
    return format_number(x, d)


# ------------------------------------------------------------------------------ summary rows
def summarize(params, result):
    """One summary.csv row: the cell's headline number."""
    part = params["part"]
    if part == "moving-average":
        k = _key("torch a=0.1")
        return {"headline": f"torch a=0.1 mean err {_f(result['mean_err_' + k][-1])} sigma; "
                            f"cumulative {_f(result['mean_err_cumulative'][-1])}"}
    if part == "cumulative":
        return {"headline": f"median last change {int(np.median(result['last_change']))}; "
                            f"median |err| {_f(np.median(result['abs_err']))}, "
                            f"max {_f(np.max(result['ulp_err']))} ulps"}
    if part == "stagnation":
        r = result["rows"][0]
        return {"headline": f"{r['arith']} a={r['alpha']:.3g}: {r['value']!r} after {r['updates']}"}
    if part == "small-batch":
        return {"headline": f"torch/keras running var at batch 2: {_f(np.median(result['ratio']))}"}
    if part == "one-pass":
        worst = max(result["rows"], key=lambda r: r["negative"])
        return {"headline": f"most negative: {worst['method']} at sigma/mu={worst['ratio']:g}: "
                            f"{100 * worst['negative']:.1f}%"}
    if part == "training":
        return {"headline": f"test acc running {_f(result['test_acc_running'])}, population "
                            f"{_f(result['test_acc_population'])}, batch {_f(result['test_acc_batch'])}"}
    return {"headline": ""}


# ------------------------------------------------------------------------------ findings
def moving_findings(results):
    rows, traces = [], {}
    for params, r in results.select(part="moving-average"):
        for label, conv, mom in MOVING_CONFIGS:
            k = _key(label)
            rows.append({"format": params["format"], "data": params["data"], "statistics": label,
                         "mean err (sigma)": float(r[f"mean_err_{k}"][-1]),
                         "theory": float(r[f"mean_theory_{k}"]),
                         "var rel err": float(r[f"var_err_{k}"][-1]), "_batches": int(r["batches"])})
            traces.setdefault(f"{params['format']} {params['data']}", {})[label] = (
                r["checkpoints"], r[f"mean_err_{k}"])
    return rows, traces


def _pick(rows, **kw):
    for row in rows:
        if all(row.get(k) == v for k, v in kw.items()):
            return row
    return None


def training_findings(results):
    by_batch = {}
    for params, r in results.select(part="training"):
        by_batch.setdefault(params["batch"], []).append(r)
    table = []
    for b in sorted(by_batch):
        rs = by_batch[b]
        row = {"batch": b, "seeds": len(rs)}
        for name in ("batch", "running", "population", "last_epoch_cumulative"):
            row[f"err {name}"] = 100 * (1 - float(np.mean([r[f"test_acc_{name}"] for r in rs])))
        row["gap"] = 100 * float(np.mean([r["train_acc_batch"] - r["train_acc_running"] for r in rs]))
        row["Wu&He BN"] = WU_HE_BN_ERROR.get(b)
        table.append(row)
    cost = None
    if by_batch:
        cost = float(next(iter(by_batch.values()))[0]["population_cost_fraction"])
    return table, cost


def cumulative_findings(results):
    rows = []
    for params, r in results.select(part="cumulative"):
        lc = np.asarray(r["last_change"])
        n = int(r["batches"])
        ref = REFERENCE_CMA.get(params["format"], (None, None))
        pred = np.asarray(r["predicted_last_change"])
        row = {"format": params["format"], "arith": params["accumulate"], "batches": n,
               "channels": int(r["channels"]),
               "moving at end %": 100 * float(np.mean(lc > n - 1000)),
               "median last change": float(np.median(lc)),
               "predicted": float(np.median(pred)) if pred.size else None,
               "ref last change": ref[0],
               "median |err| @2e4": (float(np.median(r["abs_err_20000"])) if "abs_err_20000" in r
                                     else None),
               "ref |err|": ref[1],
               "median |err|": float(np.median(r["abs_err"])),
               "median ulps": float(np.median(r["ulp_err"])),
               "max ulps": float(np.max(r["ulp_err"])),
               "mean signed ulps": float(np.mean(r["signed_ulp_err"])),
               "weights share": float(r["weights_bias_ulps"]),
               "exact-product max ulps": (float(np.max(r["exact_product_ulp_err"]))
                                          if "exact_product_ulp_err" in r else None),
               "incremental max ulps": float(np.max(r["incremental_ulp_err"])),
               "incremental median |err|": float(np.median(r["incremental_abs_err"]))}
        rows.append(row)
    return rows


def stagnation_findings(results):
    rows = []
    for params, r in results.select(part="stagnation"):
        for s in r["rows"]:
            ref = REFERENCE_STALLS.get((r["store"], s["alpha"])) if (
                s["arith"] == "float32" and s["convention"] == "torch") else None
            rows.append({"store": r["store"], "arith": s["arith"], "convention": s["convention"],
                         "alpha": s["alpha"], "frozen at": s["value"], "updates": s["updates"],
                         "1 - value": 1.0 - s["value"], "threshold": s["threshold"],
                         "reference": f"{ref[0]!r} / {ref[1]}" if ref else "",
                         "_match": None if ref is None else (ref == (s["value"], s["updates"]))})
    return rows


def small_findings(results):
    out = []
    for params, r in results.select(part="small-batch"):
        d = np.asarray(r["pair_d"])
        y = np.asarray(r["pair_y"])
        big = np.abs(d) >= 1.0
        out.append({"format": params["format"], "result": r,
                    "ratio_median": float(np.median(r["ratio"])),
                    "ratio_min": float(np.min(r["ratio"])), "ratio_max": float(np.max(r["ratio"])),
                    "max_dev_big_d": float(np.max(1.0 - y[big])) if big.any() else None,
                    "max_theory_dev_big_d": float(np.max(1.0 - np.asarray(r["pair_theory"])[big])),
                    "max_sum": float(np.max(np.abs(r["pair_y_sum"])))})
    return out


def one_pass_findings(results):
    rows = []
    overflow = None
    for params, r in results.select(part="one-pass"):
        for row in r["rows"]:
            rows.append({"format": params["format"], "n": r["n"], "trials": r["trials"], **row})
        if "overflow" in r:
            overflow = r["overflow"]
    return rows, overflow


# ------------------------------------------------------------------------------ sentences
def _moving_sentences(rows, cost):
    out = []
    fmt = "float32" if _pick(rows, format="float32") else (rows[0]["format"] if rows else None)
    if fmt is None:
        return out
    st = {r["statistics"]: r for r in rows if r["format"] == fmt and r["data"] == "stationary"}
    dr = {r["statistics"]: r for r in rows if r["format"] == fmt and r["data"] == "drifting"}
    if st:
        out.append(f"Fixed network ({fmt}): after {rows[0].get('_batches', '')} batches the cumulative "
                   f"average is {_f(st['cumulative']['mean err (sigma)'], 2)} sigma from the exact "
                   f"population mean, PyTorch's EMA (0.1) {_f(st['torch a=0.1']['mean err (sigma)'], 2)} "
                   f"sigma (theory {_f(st['torch a=0.1']['theory'], 2)}): its cost is noise, and Keras's "
                   f"biased variance is {_f(st['keras 0.99']['var rel err'], 2)} off "
                   f"(theory 1/B = {_f(1 / 32, 2)}).")
    if dr:
        best = min(dr.values(), key=lambda r: r["mean err (sigma)"])
        out.append(f"Drifting network: the cumulative average lags {_f(dr['cumulative']['mean err (sigma)'], 2)} "
                   f"sigma (theory {_f(dr['cumulative']['theory'], 2)}), EMA 0.1 "
                   f"{_f(dr['torch a=0.1']['mean err (sigma)'], 2)}, best {best['statistics']} "
                   f"{_f(best['mean err (sigma)'], 2)}: tracking is what the moving average buys.")
    bf = {r["statistics"]: r for r in rows if r["format"] == "bfloat16" and r["data"] == "drifting"}
    if bf and dr and "torch a=0.01" in bf:
        ratio = bf["torch a=0.01"]["mean err (sigma)"] / max(dr["torch a=0.01"]["mean err (sigma)"], 1e-300)
        out.append(f"A bfloat16 buffer with weight 0.01 ends {_f(bf['torch a=0.01']['mean err (sigma)'], 2)} "
                   f"sigma off on drifting data, {_f(ratio, 2)}x the {fmt} buffer's (it stagnates: part 3).")
    if cost is not None:
        out.append(f"Speed: the EMA costs 2 multiplies and an add per statistic per batch; exact "
                   f"population statistics cost one more forward pass over the training set, "
                   f"{_f(100 * cost, 2)}% of part 6's training compute (counted, forward+backward "
                   f"~3 forwards): the moving average saves that pass and a separate step, not accuracy.")
    return out


def _cumulative_sentences(rows):
    out = []
    wide = [r for r in rows if r["format"] in ("float32", "float64") and r["arith"] == r["format"]]
    for r in wide:
        text = (f"decay 1/n in {r['format']} (R(w_old m) + R(w_new x), every framework's form): after "
                f"{r['batches']} batches within {_f(r['max ulps'], 3)} ulps of the exact mean (median "
                f"{_f(r['median ulps'], 2)}, mean signed {_f(r['mean signed ulps'], 2)}); the weights' "
                f"own rounding explains {_f(r['weights share'], 2)} ulps of it")
        if r["exact-product max ulps"] is not None:
            text += (f", an exact product w_old m brings the max to {_f(r['exact-product max ulps'], 3)} "
                     f"ulps")
        text += (f"; the incremental form m += (x - m)/n stays within "
                 f"{_f(r['incremental max ulps'], 3)} ulps.")
        out.append(text)
    narrow = [r for r in rows if r["format"] in ("float16", "bfloat16")]
    narrow.sort(key=lambda r: (r["arith"] != "float32", r["format"] != "bfloat16"))
    for r in narrow:
        ref = ""
        if r["ref last change"]:
            close = (abs(r["median last change"] / r["ref last change"] - 1) <= 0.2
                     and abs(r["median |err|"] / r["ref |err|"] - 1) <= 0.2)
            ref = (f" (reference [sim]: batch {r['ref last change']}, {_f(r['ref |err|'], 2)}: "
                   + ("within 20%" if close else "not within 20%") + ")")
        pred = f", half-gap criterion predicts {_f(r['predicted'], 3)}" if r["predicted"] is not None else ""
        out.append(f"{r['format']} buffer, {r['arith']} arithmetic: decay 1/n stops moving at batch "
                   f"{_f(r['median last change'], 4)} (median over channels{pred}) and keeps a median "
                   f"error of {_f(r['median |err|'], 2)}{ref}.")
    return out


def _stagnation_sentences(rows):
    out = []
    checked = [r for r in rows if r["_match"] is not None]
    if checked:
        good = sum(bool(r["_match"]) for r in checked)
        bad = [f"{r['store']} a={r['alpha']:g}: {r['frozen at']!r}/{r['updates']}" for r in checked
               if not r["_match"]]
        out.append(f"Stall table (float32 arithmetic, buffer rounded to its format): {good} of "
                   f"{len(checked)} reference entries reproduced exactly" + (
                       "." if not bad else f"; different: {'; '.join(bad)}."))
    f32 = [r for r in rows if r["store"] == "float32" and r["arith"] == "float32"
           and r["convention"] == "torch"]
    if f32:
        out.append("A float32 buffer stalls at " + ", ".join(
            f"1 - {_f(r['1 - value'], 2)} (a={r['alpha']:g}, {r['updates']} updates)" for r in f32) + ".")
    own = [r for r in rows if r["arith"] == r["store"] and r["store"] != "float32"
           and r["convention"] == "torch" and r["alpha"] == 0.01]
    for r in own:
        base = _pick(rows, store=r["store"], arith="float32", convention="torch", alpha=0.01)
        if base:
            out.append(f"In {r['store']}'s own arithmetic (weight 0.01) it stalls at {r['frozen at']!r} "
                       f"after {r['updates']} updates, vs {base['frozen at']!r} after "
                       f"{base['updates']} with float32 arithmetic.")
    return out


def _small_sentences(found):
    out = []
    for s in found:
        if s["format"] != "float32" and len(found) > 1:
            continue
        r = s["result"]
        out.append(f"Batch 2 ({s['format']}): PyTorch's stored running variance / Keras's = "
                   f"{_f(s['ratio_median'], 4)} (range {_f(s['ratio_min'], 4)}-{_f(s['ratio_max'], 4)}; "
                   f"Bessel: 2); means {_f(r['torch_var_mean'], 3)} vs {_f(r['keras_var_mean'], 3)} "
                   f"(Keras 0.99: {_f(r['keras_default_var_mean'], 3)}; keras PR #9028 saw 0.47 vs 1.0) "
                   f"for unit-variance data.")
        bb = np.asarray(r["biased_bias"])
        out.append(f"Biased variance at batch 2 is {_f(bb[0], 3)} relative (theory -1/2), at 256 "
                   f"{_f(bb[-1], 2)} (theory {_f(-1 / 256, 2)}).")
        out.append(f"A batch of two normalises to +-1: for |a-b| >= 1, 1-|y| <= {_f(s['max_dev_big_d'], 2)} "
                   f"(theory 2 eps/d^2 <= {_f(s['max_theory_dev_big_d'], 2)}), y1 + y2 = 0 within "
                   f"{_f(s['max_sum'], 2)}.")
    return out


def _one_pass_sentences(rows, overflow):
    out = []
    at = {(r["format"], r["method"]): r for r in rows
          if r["ratio"] == 1e-4 and r["n"] == max(x["n"] for x in rows)}
    seq = at.get(("float32", "one-pass seq"))
    pw = at.get(("float32", "one-pass"))
    two = at.get(("float32", "two-pass"))
    if seq and pw and two:
        inside = "inside" if 0.46 <= seq["negative"] <= 0.51 else "outside"
        out.append(f"float32, sigma/mu = 1e-4, n = {seq['n']}: one-pass is negative in "
                   f"{_f(100 * seq['negative'], 3)}% of {seq.get('trials', '')} trials summed "
                   f"sequentially ({inside} the reference's 46-51%), "
                   f"{_f(100 * pw['negative'], 3)}% pairwise; median relative error "
                   f"{_f(seq['rel_err_median'], 2)} (reference ~70) and {_f(pw['rel_err_median'], 2)}, "
                   f"two-pass {_f(two['rel_err_median'], 2)} (theory u kappa^2 = "
                   f"{_f(theory.one_pass_level(1e-4, 'float32'), 2)} for one-pass).")
    if overflow:
        four = [o for o in overflow if o["value"] == 4.0]
        if four:
            o = four[0]
            out.append(f"float16 one-pass overflows from n = {o['first_overflow_n']} values of 4 "
                       f"(n v^2 >= 65520: {o['predicted_n']}); float32 accumulation stays finite: "
                       f"{o['f32_accum_finite_at_4096']}.")
    return out


def _training_sentences(table, cost):
    out = []
    rows = {r["batch"]: r for r in table}
    if 32 in rows and 2 in rows:
        e32, e2 = rows[32]["err running"], rows[2]["err running"]
        out.append(f"Tiny batches (MLP, synthetic task, {rows[2]['seeds']} seeds): test error with "
                   f"running statistics {_f(e32, 3)}% at batch 32, {_f(e2, 3)}% at 2 "
                   f"(+{_f(e2 - e32, 2)} points, x{_f(e2 / e32 if e32 else math.nan, 2)}); Wu & He's "
                   f"ResNet-50: 23.6% -> 34.7% (+11.1, x1.47). A shape comparison only.")
        pop2, run2, bat2 = rows[2]["err population"], rows[2]["err running"], rows[2]["err batch"]
        if abs(pop2 - run2) < 0.25 * abs(e2 - e32):
            why = "so the loss at batch 2 is in the weights learned, not in estimating the statistics"
        else:
            why = "so estimating the statistics accounts for part of the loss at batch 2"
        out.append(f"At batch 2 exact population statistics give {_f(pop2, 3)}%, running "
                   f"{_f(run2, 3)}%, batch statistics {_f(bat2, 3)}%: {why}; train/eval gap "
                   f"(train accuracy, batch minus running statistics) {_f(rows[2]['gap'], 2)} points "
                   f"at 2, {_f(rows[32]['gap'], 2)} at 32.")
    return out


# ------------------------------------------------------------------------------ verdict
def verdict(results):
    """What `precision study batchnorm-statistics` prints at the end; every number is this run's."""
    mrows, _ = moving_findings(results)
    table6, cost = training_findings(results)
    lines = ["Verdict (this run):"]
    groups = [_moving_sentences(mrows, cost)[:2] + _moving_sentences(mrows, cost)[3:],
              _cumulative_sentences(cumulative_findings(results))[:1]
              + _cumulative_sentences(cumulative_findings(results))[2:4],
              _stagnation_sentences(stagnation_findings(results))[:2],
              _small_sentences(small_findings(results))[:1],
              _one_pass_sentences(*one_pass_findings(results))[:1],
              _training_sentences(table6, cost)[:1]]
    for group in groups:
        for s in group:
            lines.append(textwrap.fill("- " + s, width=100, subsequent_indent="  "))
    if table6:
        compact = [{"batch": r["batch"], "err batch%": r["err batch"], "err running%": r["err running"],
                    "err population%": r["err population"], "gap pts": r["gap"],
                    "Wu&He BN%": r["Wu&He BN"]} for r in table6]
        lines += ["", text_table(compact, list(compact[0])).rstrip(),
                  "(part 6: test error by the statistics used at evaluation; Wu & He: ResNet-50 "
                  "ImageNet, shape only)"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report
def _public(rows):
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def report(results, out_dir):
    """Write report.md and plots/*.png (see the module docstring)."""
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    md = ["# Batch-norm statistics", "",
          "Issue #12 part 3. Each part: what was measured, a table, a plot, the theory beside the "
          "measurement and sentences computed from this run. Reference numbers are from "
          "`training-statistics.md` section A ([sim] rows: the reference's own simulations) and the "
          "papers named.", ""]
    mrows, mtraces = moving_findings(results)
    table6, cost = training_findings(results)
    # part 1
    md += ["## 1. Moving average vs population", "",
           "C = 64 channels, batches of B = 32 drawn epoch by epoch from a dataset of 256 batches; "
           "stationary: fixed activations; drifting: each channel's mean moves 2 sigma and its scale 1.5x "
           "toward their final values with time constant 1/8 of the run (a network that trains). Error: "
           "RMS over channels of |running - population| / population sigma, population = the exact "
           "statistics of the current network's activations on the whole dataset. Theory: EMA noise "
           "sqrt(a/(2-a)/B) (i.i.d. batches; shuffled epochs cancel part of it once 2/a nears an epoch) "
           "plus the exact deterministic response to the start at 0 and to the drift. 'keras 0.99' "
           "and 'torch a=0.01' give the new batch the same weight, so their means coincide (the plot "
           "shows one line); they differ in the variance (biased vs unbiased).", ""]
    md += [s + "\n" for s in _moving_sentences(mrows, cost)]
    md += [markdown_table(_public(mrows)), ""]
    if mtraces:
        plot_panels(plots / "moving_average.png", mtraces, xlabel="batches", ylabel="mean error (sigma)",
                    logx=True, ncols=2, legend_location="figure", title="Running mean vs exact population")
        md += ["![moving average](plots/moving_average.png)", ""]
    # part 2
    crows = cumulative_findings(results)
    md += ["## 2. decay = 1/n (the cumulative average)", "",
           "torch's momentum=None over a stream of batch means x ~ N(1, 0.1^2) (truncated at +-5 sigma), "
           "against the exact mean of the stream. Theory: an increment (x - m)/n is lost once it is below "
           "half the gap to m's neighbour on its side (half an ulp; below a power of two the gap is half "
           "the gap above); 'predicted' is the median last change that criterion gives for each "
           "channel's frozen value (for float32 arithmetic; in 16-bit arithmetic the weight 1 - 1/n "
           "itself rounds to 1 once 1/n is below half the gap under 1, after which each update only "
           "adds R(x/n): a pull upward, visible in 'mean signed ulps').", ""]
    md += [s + "\n" for s in _cumulative_sentences(crows)]
    md += ["Columns: 'moving at end %' = channels whose value changed in the last 1000 batches; "
           "'predicted' = median last change from the half-ulp criterion; 'ref' = the reference's "
           "[sim] (2000 channels x 20000 batches, arithmetic not stated); ulps are of the buffer's "
           "format at the exact mean; 'weights share' = the signed error that rounding w_new = 1/k "
           "and w_old = 1 - 1/k alone predicts (theory.weight_rounding_bias); 'exact-product' = the "
           "same update with w_old m unrounded (arithmetic of at most 24 bits); 'incremental' = "
           "m = R(m + R(R(x - m) / k)) in the same arithmetic and buffer (no framework's convention; "
           "precision.batchnorm does not offer it, so the study runs it).", "",
           markdown_table(crows), ""]
    if crows:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for params, r in results.select(part="cumulative"):
            lc = np.sort(np.asarray(r["last_change"]))
            ax.step(lc, np.arange(1, lc.size + 1) / lc.size, where="post",
                    label=f"{params['format']} ({params['accumulate']} arith)")
        ax.set_xscale("log")
        ax.set_xlabel("batch of the last change")
        ax.set_ylabel("fraction of channels")
        ax.set_title("Where decay 1/n stops moving")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "cumulative_freeze.png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        md += ["![cumulative](plots/cumulative_freeze.png)", ""]
    # part 3
    srows = stagnation_findings(results)
    md += ["## 3. Low-precision running buffers", "",
           "One channel from 0 toward the constant 1.0: new = R(R(w_old * old) + R(w_new * 1)) in the "
           "arithmetic named (float32: the reference's), stored once into the buffer's format. Theory: "
           "it stops once a |1 - m| < ulp(m)/2, i.e. above the threshold 1 - ulp/(2a) (ulp just below 1).", ""]
    md += [s + "\n" for s in _stagnation_sentences(srows)]
    md += [markdown_table(_public(srows), digits=10), ""]
    if srows:
        pts = {}
        for r in srows:
            pts.setdefault(f"{r['store']} ({r['arith']} arith)", []).append(
                (1.0 - r["threshold"], r["1 - value"]))
        plot_comparison(plots / "stagnation.png", pts, xlabel="predicted gap ulp/(2a)",
                        ylabel="measured gap 1 - frozen value", title="Where a running mean stalls")
        md += ["![stagnation](plots/stagnation.png)", ""]
    # part 4
    sfound = small_findings(results)
    md += ["## 4. N/(N-1) and small batches", "",
           "Bias of the batch variance (relative, mean over 2^21 values per batch size, N(0, 1) data "
           "rounded to the format); PyTorch (a = 0.1, unbiased) and Keras (momentum 0.9, i.e. the same "
           "a, biased) running variances after many batches of 2; batch norm (no affine map, eps 1e-5) "
           "of pairs a, b. Theory: E[biased] = (m-1)/m sigma^2; ratio m/(m-1) = 2; "
           "|y| = |d| / sqrt(d^2 + 4 eps).", ""]
    md += [s + "\n" for s in _small_sentences(sfound)]
    bias_rows, panels = [], {}
    for s in sfound:
        r = s["result"]
        for i, m in enumerate(np.asarray(r["batch_sizes"]).tolist()):
            bias_rows.append({"format": s["format"], "batch": m, "biased": float(r["biased_bias"][i]),
                              "theory -1/m": -1.0 / m, "unbiased": float(r["unbiased_bias"][i]),
                              "+- se": float(r["bias_se"][i])})
        panels[s["format"]] = {"measured |y|": (r["pair_d"], r["pair_y"]),
                               "theory": (r["pair_d"], r["pair_theory"])}
        md += [f"- {s['format']}: torch/keras ratio median {_f(s['ratio_median'], 6)}, range "
               f"{_f(s['ratio_min'], 6)}-{_f(s['ratio_max'], 6)}; max |y1 + y2| {_f(s['max_sum'], 2)}"]
    md += ["", markdown_table(bias_rows), ""]
    if panels:
        plot_panels(plots / "batch_of_two.png", panels, xlabel="|a - b|", ylabel="|y|", logx=True,
                    logy=False, legend_location="lower right", title="Batch norm of two values")
        md += ["![batch of two](plots/batch_of_two.png)", ""]
    # part 5
    orows, overflow = one_pass_findings(results)
    md += ["## 5. One-pass variance", "",
           "Trials of n values round(1 + r z), r = sigma/|mu|; relative error against the exact variance "
           "of the stored values (median over trials), and the share of negative results. "
           "'one-pass' sums pairwise (precision's default), 'one-pass seq' sequentially (the reference's "
           "simulation), 'one-pass f32' accumulates a 16-bit input in float32. Theory: typical level "
           "u kappa^2 (kappa^2 = 1 + mu^2/sigma^2), bound n u kappa^2 (Chan, Golub & LeVeque 1983); "
           "negative results once u kappa^2 >~ 1. 'unresolved': trials whose stored values are all equal "
           "(the format cannot hold sigma), left out of the error.", ""]
    md += [s + "\n" for s in _one_pass_sentences(orows, overflow)]
    for row in orows:
        row["theory u k^2"] = theory.one_pass_level(row["ratio"], row["format"]) if \
            row["method"].startswith("one-pass") else None
    md += [markdown_table(orows), ""]
    if overflow:
        md += ["float16 one-pass Sigma x^2 overflow (n copies of v; binary search over n):", "",
               markdown_table(overflow), ""]
    if orows:
        nmax = max(r["n"] for r in orows)
        panels = {}
        for r in orows:
            if r["n"] == nmax:
                panels.setdefault(f"{r['format']}, n = {nmax}", {}).setdefault(r["method"], []).append(
                    (r["ratio"], r["rel_err_median"]))
        panels = {k: {m: (np.array([p[0] for p in v]), np.array([p[1] for p in v]))
                      for m, v in d.items()} for k, d in panels.items()}
        plot_panels(plots / "one_pass.png", panels, xlabel="sigma / |mu|", ylabel="median relative error",
                    logx=True, ncols=2, legend_location="figure", title="Variance: one-pass vs two-pass")
        md += ["![one-pass](plots/one_pass.png)", ""]
    # part 6
    md += ["## 6. Training with tiny batches", "",
           "Two-hidden-layer MLP with batch norm (precision's batch_norm forward/backward, "
           "softmax_cross_entropy, matmul; float32), synthetic 4-class task, SGD momentum 0.9, "
           "lr = 0.05 B/32, the same epochs at every batch size. Test error (%) evaluated with batch "
           "statistics (test batches of B), PyTorch's running statistics, the exact population "
           "statistics of the training set (one extra pass), and the cumulative average over the last "
           "epoch (Ioffe & Szegedy's Algorithm 2, no extra pass). gap: train accuracy with batch "
           "statistics minus with running statistics (points). Wu & He 2018: ResNet-50 on ImageNet, "
           "images per GPU; only the shape of the curve is comparable, not the level.", ""]
    md += [s + "\n" for s in _training_sentences(table6, cost)]
    md += [markdown_table(table6), ""]
    if table6:
        curves = {}
        for name in ("batch", "running", "population", "last_epoch_cumulative"):
            curves[name] = (np.array([r["batch"] for r in table6], dtype=float),
                            np.array([r[f"err {name}"] for r in table6]))
        wh = sorted(WU_HE_BN_ERROR)
        plot_panels(plots / "tiny_batches.png",
                    {"this study (MLP, synthetic)": curves,
                     "Wu & He 2018 (ResNet-50, ImageNet)": {"BN": (np.array(wh, dtype=float),
                                                                   np.array([WU_HE_BN_ERROR[b] for b in wh]))}},
                    xlabel="batch size", ylabel="test error (%)", logx=True, logy=False, sharey=False,
                    legend_location="upper right", title="Batch size and batch norm")
        md += ["![tiny batches](plots/tiny_batches.png)", ""]
    md += ["## Provenance", "", markdown_provenance(out), ""]
    (out / "report.md").write_text("\n".join(md))
