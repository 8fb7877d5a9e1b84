"""summary.csv rows, report.md, plots and the terminal verdict of the gradient-averaging study.

Every sentence is built from the run's numbers by :func:`findings` (a test changes a cell's result
and sees the sentence change); published numbers (the issue's reference simulation, Goyal et al.
2017) sit beside ours, labelled as theirs.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from precision.study.plots import format_number, markdown_table, plot_panels, text_table

__all__ = ["summarize", "report", "verdict", "findings", "REFERENCE_REDUCTION", "GOYAL"]

# training-statistics.md §B: float16 sequential ring, g ~ N(0, 1e-3²): median relative error
# {workers: (post, pre)}
REFERENCE_REDUCTION = {64: (1.0e-3, 1.5e-3), 256: (2.0e-3, 4.6e-3), 1024: (3.9e-3, 1.8e-2)}
# Goyal et al. 2017, ResNet-50 on ImageNet, top-1 error (%) by minibatch size (256 = 1×); at 8k
# (32×): gradual warm-up, no warm-up, constant warm-up
GOYAL = {"batch": [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536],
         "gradual": [23.60, 23.48, 23.53, 23.49, 23.56, 23.74, 24.79, 27.55, 33.96],
         "8k_no_warmup": 24.84, "8k_constant_warmup": 25.88}


# ------------------------------------------------------------------------------------------------
# summary rows

def _last(values, default=math.nan):
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(arr[-1]) if arr.size else default


def _median(values):
    arr = np.asarray([v for v in np.asarray(values, dtype=np.float64).reshape(-1) if math.isfinite(v)])
    return float(np.median(arr)) if arr.size else math.nan


def summarize(params: dict, result: dict) -> dict:
    """One summary.csv row: a few part-specific measurements and a one-line `headline`."""
    part = params["part"]
    row: dict = {}
    if part == "one-batch":
        row = {"grad_differ": _median(result["grad_differ"]),
               "grad_median_ulps": _median(result["grad_median_ulps"]),
               "big_error_ulps": _median(result["big_error_ulps"]),
               "workers_error_ulps": _median(result["workers_error_ulps"]),
               "param_relative_final": _last(result["param_relative"]),
               "param_differ_final": _last(result["param_differ"])}
        row["headline"] = (f"grads differ in {row['grad_differ']:.0%} (median "
                           f"{format_number(row['grad_median_ulps'], 2)} ulp); params "
                           f"{format_number(row['param_relative_final'], 2)} apart")
    elif part == "shards":
        row = {"bias_relative": result["bias_relative"], "max_weight_ratio": result["max_weight_ratio"],
               "min_weight_ratio": result["min_weight_ratio"]}
        row["headline"] = (f"sample weights {format_number(result['min_weight_ratio'], 3)}–"
                           f"{format_number(result['max_weight_ratio'], 3)} × 1/N; gradient bias "
                           f"{format_number(result['bias_relative'], 2)}")
    elif part == "sum-vs-mean-sgd":
        row = {"update_differ": _median(result["update_differ"]),
               "update_max_relative": float(np.max(result["update_max_relative"])),
               "param_relative_final": _last(result["param_relative"])}
        row["headline"] = (f"updates differ in {row['update_differ']:.1%} (by up to "
                           f"{format_number(row['update_max_relative'], 2)} of the update); params "
                           f"{format_number(row['param_relative_final'], 2)} apart")
    elif part == "sum-vs-mean-adam":
        row = {"median_eps_over_sqrt_v": result["median_eps_over_sqrt_v"],
               "sum_relative": result["sum_relative"], "control_relative": result["control_relative"],
               "finite_mean": result["finite_mean"], "finite_sum": result["finite_sum"]}
        row["headline"] = (f"ε/√v̂ {format_number(result['median_eps_over_sqrt_v'], 2)}: sum vs mean "
                           f"{format_number(result['sum_relative'], 2)}, sum with k·ε "
                           f"{format_number(result['control_relative'], 2)}")
    elif part == "reduction":
        k = np.asarray(result["k"])
        i = int(np.argmax(k))
        row = {"k_max": int(k[i]), "median_rel_pre": float(result["median_rel_pre"][i]),
               "median_rel_post": float(result["median_rel_post"][i]),
               "median_rel_split": float(result["median_rel_split"][i]),
               "estimate_pre": float(result["estimate_pre"][i]),
               "estimate_post": float(result["estimate_post"][i]),
               "bound_post": float(result["bound_post"][i])}
        row["headline"] = (f"k={row['k_max']}: median rel. error pre {format_number(row['median_rel_pre'], 2)}"
                           f", post {format_number(row['median_rel_post'], 2)}")
    elif part == "reduction-facts":
        row = {"overflow_k_post_ring": result.get("overflow_k_post_ring"),
               "overflow_k_theory": result.get("overflow_k_theory")}
        row["headline"] = (f"float16 300s: post overflows from k={result.get('overflow_k_post_ring')} (ring)"
                           f"; bf16 ones sequential mean at k=512: "
                           f"{_stagnation_at(result, 'sequential', 512)}")
    elif part == "large-batch":
        row = {"test_accuracy": _last(result["test_accuracy"]), "test_loss": _last(result["test_loss"]),
               "train_loss": _last(result["train_loss"]),
               "rank0_logged_loss": _last(result["rank0_logged_loss"]),
               "global_logged_loss": _last(result["global_logged_loss"]),
               "peak_lr": result["peak_lr"], "steps": result["steps"]}
        row["headline"] = (f"test error {format_number(100 * (1 - row['test_accuracy']), 3)} %, "
                           f"test loss {format_number(row['test_loss'], 3)}")
    return row


def _stagnation_at(result, algorithm, k):
    ks = list(np.asarray(result.get("stagnation_k", [])).tolist())
    values = result.get(f"stagnation_{algorithm}")
    if k not in ks or values is None:
        return "–"
    return format_number(float(np.asarray(values)[ks.index(k)]), 3)


# ------------------------------------------------------------------------------------------------
# findings: the numbers every sentence is made of

def _select(results, **criteria):
    out = []
    for params, result in results:
        if all(params.get(key) == value for key, value in criteria.items()):
            out.append((params, result))
    return out


def findings(results) -> dict:
    """The run's headline numbers, per part (absent parts are missing keys)."""
    pairs = list(results)
    f: dict = {}
    one = _select(pairs, part="one-batch")
    if one:
        k_max = max(p["k"] for p, _ in one)
        f["one_batch"] = {p["format"]: {
            "k": p["k"], "differ": _median(r["grad_differ"]), "median_ulps": _median(r["grad_median_ulps"]),
            "big_error": _median(r["big_error_ulps"]), "workers_error": _median(r["workers_error_ulps"]),
            "param_relative": _last(r["param_relative"]), "steps": len(np.asarray(r["param_relative"])),
            "u": float(r["unit_roundoff"]), "loss_gap": abs(r["loss_one"] - r["loss_many"])}
            for p, r in one if p["k"] == k_max}
    shard = _select(pairs, part="shards")
    if shard:
        f["shards"] = [{"case": p["case"], "sizes": p.get("sizes"), "k": p.get("k"), "n": p["n"],
                        "weights": [float(w) for w in np.asarray(r["weights"]).tolist()],
                        "global_weight": r["global_weight"], "bias": r["bias_relative"],
                        "max_ratio": r["max_weight_ratio"], "repeated": r["repeated_samples"]}
                       for p, r in shard]
    sgd = _select(pairs, part="sum-vs-mean-sgd")
    if sgd:
        f["sum_sgd"] = [{"format": p["format"], "k": p["k"], "differ": _median(r["update_differ"]),
                         "max_relative": float(np.max(r["update_max_relative"])),
                         "param_relative": _last(r["param_relative"])} for p, r in sgd]
    adam = _select(pairs, part="sum-vs-mean-adam")
    if adam:
        f["sum_adam"] = [{"format": p["format"], "k": p["k"], "scale_log2": p["grad_scale_log2"],
                          "eps_ratio": r["median_eps_over_sqrt_v"], "sum": r["sum_relative"],
                          "control": r["control_relative"], "finite": bool(r["finite_mean"] and r["finite_sum"]),
                          "eps_in_format": r["eps_in_format"]} for p, r in adam]
    red = _select(pairs, part="reduction")
    if red:
        f["reduction"] = {(p["format"], p["accum"], p["wire"], p["algorithm"]): r for p, r in red}
    facts = _select(pairs, part="reduction-facts")
    if facts:
        f["facts"] = facts[0][1]
    train = _select(pairs, part="large-batch")
    if train:
        f["train"] = [{"format": p["format"], "k": p["k"], "rule": p["rule"],
                       "error": 100 * (1 - _last(r["test_accuracy"])), "test_loss": _last(r["test_loss"]),
                       "train_loss": _last(r["train_loss"]), "rank0": _last(r["rank0_logged_loss"]),
                       "global": _last(r["global_logged_loss"]), "accuracy": _last(r["test_accuracy"]),
                       "step_gap": _median(np.abs(np.asarray(r["rank0_step_loss"], dtype=float)
                                                  - np.asarray(r["global_step_loss"], dtype=float))),
                       "step_gap_max": float(np.max(np.abs(np.asarray(r["rank0_step_loss"], dtype=float)
                                                           - np.asarray(r["global_step_loss"], dtype=float)),
                                                    initial=0.0)),
                       "peak_lr": r["peak_lr"], "steps": r["steps"]} for p, r in train]
    return f


def _goyal_gap(multiplier: int) -> str:
    """Goyal et al.'s top-1 error at `multiplier` × 256 minus theirs at 256 (gradual warm-up)."""
    i = GOYAL["batch"].index(256 * multiplier)
    return f"{GOYAL['gradual'][i] - GOYAL['gradual'][0]:+.2f}"


def _fmt(x, digits=2):
    return format_number(x, digits)


def _reduction_row(f, fmt, algorithm, k):
    r = f.get("reduction", {}).get((fmt, fmt, fmt, algorithm))
    if r is None:
        return None
    ks = list(np.asarray(r["k"]).tolist())
    if k not in ks:
        return None
    i = ks.index(k)
    return {key: float(np.asarray(r[key])[i]) for key in (
        "median_rel_pre", "median_rel_post", "median_rel_split", "estimate_pre", "estimate_post",
        "bound_post", "bound_pre", "subnormal_pre", "zero_pre", "inf_post")}


def _within(a, b, factor):
    return math.isfinite(a) and math.isfinite(b) and b > 0 and a > 0 and max(a / b, b / a) <= factor


def sentences(f: dict) -> list:
    """The findings in plain words, every number from `f`."""
    out = []
    one = f.get("one_batch", {})
    if one:
        parts = []
        for fmt, d in one.items():
            parts.append(f"{fmt} {_fmt(d['param_relative'])} ({_fmt(d['param_relative'] / d['u'])} u)")
        d0 = next(iter(one.values()))
        equally = all(_within(d["big_error"], d["workers_error"], 1.5) for d in one.values())
        out.append(
            f"One big batch? Up to rounding, yes: at k = {d0['k']} workers the averaged gradient differs "
            f"from the one-worker gradient of the same {d0['k']}× batch in "
            f"{_fmt(min(d['differ'] for d in one.values()) * 100)}–{_fmt(max(d['differ'] for d in one.values()) * 100)} % "
            f"of its entries, by a median of {_fmt(max(d['median_ulps'] for d in one.values()))} ulp; "
            + ("both are equally far from the float64 gradient (median "
               + ", ".join(f"{fmt} {_fmt(d['big_error'])} vs {_fmt(d['workers_error'])} ulp" for fmt, d in one.items())
               + ")" if equally else "they are not equally accurate (see report.md)")
            + f". After {d0['steps']} SGD steps the two parameter vectors are apart by (relative to the "
            f"distance travelled) " + "; ".join(parts) + ".")
    shards = f.get("shards", [])
    sizes = [s for s in shards if s["case"] == "sizes"]
    sampler = [s for s in shards if s["case"] == "sampler"]
    if sizes:
        s = sizes[0]
        out.append(
            f"Uneven shards are not one big batch: shards of {s['sizes']} weight their samples "
            + ", ".join(_fmt(w, 3) for w in s["weights"]) + f" instead of {_fmt(s['global_weight'], 3)} each "
            f"(gradient bias {_fmt(s['bias'])} of its norm at initialisation here)"
            + (f"; DistributedSampler's padding gives {sampler[-1]['repeated']} of {sampler[-1]['n']} samples "
               f"weight {_fmt(sampler[-1]['max_ratio'], 3)}/N at k = {sampler[-1]['k']} (bias "
               f"{_fmt(sampler[-1]['bias'])})" if sampler else "") + ".")
    sgd = f.get("sum_sgd", [])
    if sgd:
        pow2 = [d for d in sgd if d["k"] & (d["k"] - 1) == 0]
        other = [d for d in sgd if d["k"] & (d["k"] - 1) != 0]
        pow2_identical = [d for d in pow2 if d["differ"] == 0 and d["param_relative"] == 0]
        text = (f"Sum with lr vs mean with k·lr (SGD): for power-of-two k the runs were bit-identical in "
                f"{len(pow2_identical)} of {len(pow2)} (format, k) pairs")
        if other:
            text += (f"; for k = {', '.join(str(k) for k in sorted({d['k'] for d in other}))} a median "
                     f"{_fmt(100 * _median([d['differ'] for d in other]))} % of the updates differ, by at most "
                     f"{_fmt(max(d['max_relative'] for d in other))} of the update (relative)")
        out.append(text + ": summing is linear scaling of the learning rate, up to that rounding.")
    adam = f.get("sum_adam", [])
    if adam:
        fine = [d for d in adam if d["finite"]]
        matters = [d for d in fine if d["sum"] > 10 * max(d["control"], 1e-300) and d["sum"] > 1e-3]
        control_max = max((d["control"] for d in fine), default=math.nan)
        text = (f"Adam on the sum vs the mean: the sum with k·ε reproduces the mean to "
                f"{_fmt(control_max)} (relative) in every finite run; with the same ε the runs differ by "
                f"{_fmt(min((d['sum'] for d in fine), default=math.nan))}–{_fmt(max((d['sum'] for d in fine), default=math.nan))}")
        if matters:
            lowest = min(d["eps_ratio"] for d in matters)
            text += (f", more than 1e-3 only where ε is at least {_fmt(lowest)} of √v̂ (median), i.e. "
                     f"gradients of order ε or smaller")
        blown = [d for d in adam if not d["finite"]]
        if blown:
            text += (f"; {len(blown)} of {len(adam)} runs went non-finite ("
                     + ", ".join(sorted({f"{d['format']} at scale 2^{d['scale_log2']}" for d in blown})) + ")")
            eps_zero = sorted({d["format"] for d in blown if d["eps_in_format"] == 0})
            if eps_zero:
                text += (f": in {', '.join(eps_zero)} ε = 1e-8 rounds to 0, so a gradient entry that is "
                         "exactly 0 (a dead ReLU unit) gives 0/0")
        out.append(text + ".")
    ref_rows = []
    for k, (post_ref, pre_ref) in REFERENCE_REDUCTION.items():
        row = _reduction_row(f, "float16", "ring", k)
        if row:
            ref_rows.append((k, row, post_ref, pre_ref))
    if ref_rows:
        k, row, post_ref, pre_ref = ref_rows[-1]
        agree = _within(row["median_rel_post"], post_ref, 1.5) and _within(row["median_rel_pre"], pre_ref, 1.5)
        out.append(
            f"float16 all-reduce (ring), g ~ N(0, 1e-3²), {k} workers: median relative error post-divide "
            f"{_fmt(row['median_rel_post'])} vs pre-divide {_fmt(row['median_rel_pre'])} (reference "
            f"simulation {_fmt(post_ref)} vs {_fmt(pre_ref)}: " + ("reproduced within 1.5×" if agree else
                                                                   "not reproduced within 1.5×")
            + f"); pre-division makes {_fmt(100 * row['subnormal_pre'])} % of the contributions subnormal. "
            f"The statistical rounding model predicts {_fmt(row['estimate_post'])} / {_fmt(row['estimate_pre'])}; "
            f"Higham's worst-case bound (median over elements) is {_fmt(row['bound_post'])} for post -- a bound, "
            f"{_fmt(row['bound_post'] / row['median_rel_post'], 2)}× above what happens.")
    facts = f.get("facts")
    if facts:
        alg = list(facts["algorithms"])
        firsts = ", ".join(f"{a} {facts.get(f'overflow_k_post_{a}') or 'never'}" for a in alg)
        ks = list(np.asarray(facts["stagnation_k"]).tolist())
        k_stag = 512 if 512 in ks else ks[-1]
        out.append(
            f"float16, every worker holding 300: post-division overflows to inf from k = {firsts} (the exact "
            f"sum reaches 65520 at k = {facts['overflow_k_theory']}); at 256 workers post gives "
            + ", ".join(f"{_fmt(facts.get(f'at256_post_{a}'), 5)} ({a})" for a in alg[:2])
            + " and pre gives " + ", ".join(f"{_fmt(facts.get(f'at256_pre_{a}'), 5)} ({a})" for a in alg)
            + f". bfloat16 mean of {k_stag} ones: "
            + ", ".join(f"{a} {_stagnation_at(facts, a, k_stag)}" for a in alg) + ".")
    train = [d for d in f.get("train", []) if d["format"] == "float32"] or f.get("train", [])
    if train:
        fmt = train[0]["format"]
        base = next((d for d in train if d["k"] == 1), None)
        k_max = max(d["k"] for d in train)
        at_max = {d["rule"]: d for d in train if d["k"] == k_max}
        if base and at_max:
            ranked = sorted(at_max.values(), key=lambda d: d["error"] if math.isfinite(d["error"]) else math.inf)
            gradual = at_max.get("linear-gradual")
            text = (f"Large batches ({fmt}, a fixed number of epochs: {base['steps']} steps at k = 1, "
                    f"{at_max[ranked[0]['rule']]['steps']} at k = {k_max}): test error {_fmt(base['error'], 3)} % at k = 1; at k = {k_max}: "
                    + ", ".join(f"{d['rule']} {_fmt(d['error'], 3)} %" for d in ranked)
                    + f". Best at k = {k_max}: {ranked[0]['rule']}")
            if gradual is not None:
                text += (f"; linear scaling with gradual warm-up is {gradual['error'] - base['error']:+.2f} "
                         f"points from k = 1 (Goyal et al., ResNet-50: {_goyal_gap(32)} points at 32×, "
                         f"{_goyal_gap(128)} at 128×)")
            out.append(text + ". A shape comparison only: a 2-layer MLP on synthetic data is not ResNet-50.")
    puzzle = [d for d in f.get("train", []) if d["k"] > 1]
    all_train = f.get("train", [])
    if puzzle:
        k2 = [d for d in puzzle if d["k"] == 2] or puzzle
        gap = _median([d["step_gap"] for d in k2])
        gap_max = max(d["step_gap_max"] for d in k2)
        inverted = 0
        pairs = 0
        for i, a in enumerate(all_train):
            for b in all_train[i + 1:]:
                if all(math.isfinite(x) for x in (a["rank0"], b["rank0"], a["accuracy"], b["accuracy"])) \
                        and a["rank0"] != b["rank0"] and a["accuracy"] != b["accuracy"]:
                    pairs += 1
                    if (a["rank0"] < b["rank0"]) == (a["accuracy"] < b["accuracy"]):
                        inverted += 1
        out.append(
            f"The loss/accuracy puzzle: at k = {k2[0]['k']} the loss rank 0 logs (its own shard) differs from "
            f"the global batch loss by a median {_fmt(gap)} per step (up to {_fmt(gap_max)}) in the last epoch; "
            f"and in {inverted} of {pairs} pairs of runs the one with the lower logged training loss had the "
            f"lower test accuracy"
            + (": a lower logged loss with a lower accuracy needs nothing to be wrong." if inverted else
               " (no such pair in this run; the per-shard and running-mean effects remain)."))
    return out


# ------------------------------------------------------------------------------------------------
# report.md

def _plots(f: dict, out_dir: Path) -> list:
    plots = []
    red = f.get("reduction", {})
    panels = {}
    for (fmt, accum, wire, algorithm), r in red.items():
        if algorithm != "ring":
            continue
        ks = np.asarray(r["k"], dtype=float)
        title = fmt if accum == fmt and wire == fmt else f"{fmt}, accum {accum}, wire {wire}"
        panels[title] = {"pre": (ks, r["median_rel_pre"]), "post": (ks, r["median_rel_post"]),
                         "split": (ks, r["median_rel_split"]),
                         "model pre": (ks, r["estimate_pre"]), "model post": (ks, r["estimate_post"])}
    if panels:
        plots.append(plot_panels(out_dir / "plots" / "reduction_error.png", panels, xlabel="workers k",
                                 ylabel="median relative error", logx=True, ncols=4, sharey=False,
                                 title="All-reduced mean of g ~ N(0, 1e-3²), ring: measured and rounding model",
                                 legend_location="figure", width=3.6, height=2.8))
    algos = {}
    for (fmt, accum, wire, algorithm), r in red.items():
        if fmt == accum == wire == "float16":
            ks = np.asarray(r["k"], dtype=float)
            algos.setdefault("float16 post-divide", {})[algorithm] = (ks, r["median_rel_post"])
            algos.setdefault("float16 pre-divide", {})[algorithm] = (ks, r["median_rel_pre"])
    if algos:
        plots.append(plot_panels(out_dir / "plots" / "reduction_algorithms.png", algos, xlabel="workers k",
                                 ylabel="median relative error", logx=True, ncols=2,
                                 legend_location="upper left"))
    train = [d for d in f.get("train", []) if d["format"] == "float32"]
    if train:
        lines = {}
        base = [d for d in train if d["k"] == 1]
        for rule in sorted({d["rule"] for d in train if d["k"] > 1}):
            pts = sorted(base + [d for d in train if d["rule"] == rule and d["k"] > 1], key=lambda d: d["k"])
            lines[rule] = (np.array([d["k"] for d in pts], float), np.array([d["error"] for d in pts]))
        goyal = {"Goyal et al. gradual warm-up": (np.array(GOYAL["batch"], float) / 256,
                                                  np.array(GOYAL["gradual"]))}
        plots.append(plot_panels(out_dir / "plots" / "large_batch.png",
                                 {"this study (float32 MLP): test error %": lines,
                                  "Goyal et al. 2017, ResNet-50: top-1 error %": goyal},
                                 xlabel="batch multiplier k", ylabel="error (%)", logx=True, logy=False,
                                 sharey=False, legend_location="upper left"))
    return [p.relative_to(out_dir).as_posix() for p in plots]


def report(results, out_dir) -> None:
    out_dir = Path(out_dir)
    f = findings(results)
    words = sentences(f)
    plots = _plots(f, out_dir)
    parts = ["# Gradient averaging across workers: is it one big batch?", "",
             "Issue #13, part 3. Every number below was computed by this run (precision's kernels: "
             "`matmul`, `softmax_cross_entropy`, `optim.SGD`/`Adam`, `parallel.allreduce`); published "
             "numbers are labelled as such.", "", "## Findings", ""]
    parts += [f"* {s}" for s in words] + [""]
    rows = []
    for p, r in results:
        if p["part"] == "one-batch":
            row = summarize(p, r)
            rows.append({"format": p["format"], "k": p["k"], **{k: row[k] for k in (
                "grad_differ", "grad_median_ulps", "big_error_ulps", "workers_error_ulps",
                "param_differ_final", "param_relative_final")}})
    if rows:
        parts += ["## 1. k workers with batch b vs one worker with batch k·b", "",
                  "Same data, same initial parameters; SGD (lr 0.1) on the mean loss. Gradients compared at the "
                  "one-worker run's parameters each step (ulps of the format at the float64 gradient); "
                  "*error* columns: median ulps from the float64 gradient of the same batch. Parameters: "
                  "the two runs after the last step (share of entries that differ; ‖θ_k − θ_1‖/‖θ_1 − θ_0‖). "
                  "k workers: per-worker mean over b = 8 rows, DDP's all-reduce (pre-divide, ring).", "",
                  markdown_table(rows, headers={"grad_differ": "grads differ", "grad_median_ulps": "median ulps",
                                                "big_error_ulps": "error 1 worker", "workers_error_ulps":
                                                "error k workers", "param_differ_final": "params differ",
                                                "param_relative_final": "params apart"}), ""]
    shard_rows = [{"case": s["case"], "shards / k": s["sizes"] if s["case"] == "sizes" else s["k"],
                   "n": s["n"], "weights (per shard)": ", ".join(_fmt(w, 3) for w in s["weights"]),
                   "1/N": s["global_weight"], "max weight × N": s["max_ratio"], "repeated": s["repeated"],
                   "gradient bias": s["bias"]} for s in f.get("shards", [])]
    if shard_rows:
        parts += ["### Uneven shards and sampler padding", "",
                  "Mean of per-worker means (`parallel.shard_weights`) and `DistributedSampler` padding "
                  "(`parallel.distributed_sampler_indices`, no drop_last); bias = ‖ḡ_workers − ḡ_global‖/‖ḡ_global‖ "
                  "at the initial parameters, float64 (a semantic effect: no rounding involved).", "",
                  markdown_table(shard_rows), ""]
    if f.get("sum_sgd"):
        parts += ["## 2. Sum vs mean", "", "SGD: all-reduced sum with lr = 0.01 vs mean with k·lr, compared "
                  "step by step at the mean run's parameters (*updates differ*: share of parameters whose new "
                  "value differs), and the two trajectories at the end.", "",
                  markdown_table(f["sum_sgd"], headers={"differ": "updates differ", "max_relative": "max rel. diff.",
                                                        "param_relative": "params apart"}), ""]
    if f.get("sum_adam"):
        parts += ["Adam (lr 1e-3, ε = 1e-8): *sum*: ‖θ_sum − θ_mean‖/‖θ_mean − θ_0‖ at the end; *control*: "
                  "the sum run with ε·k, which equals the mean run in real arithmetic (m and √v scale by k), "
                  "so it measures rounding alone. Gradients scaled by 2^scale (a loss scale) to move √v̂ "
                  "towards ε.", "",
                  markdown_table(f["sum_adam"], headers={"eps_ratio": "median ε/√v̂", "sum": "sum vs mean",
                                                         "control": "control (k·ε)",
                                                         "eps_in_format": "ε in format"}), ""]
    red_rows = []
    for (fmt, accum, wire, algorithm), r in f.get("reduction", {}).items():
        for i, k in enumerate(np.asarray(r["k"]).tolist()):
            if k in (2, 16, 64, 256, 1024):
                red_rows.append({"format": fmt, "accum": accum, "wire": wire, "algorithm": algorithm, "k": k,
                                 "pre": r["median_rel_pre"][i], "post": r["median_rel_post"][i],
                                 "split": r["median_rel_split"][i], "model pre": r["estimate_pre"][i],
                                 "model post": r["estimate_post"][i], "bound pre": r["bound_pre"][i],
                                 "bound post": r["bound_post"][i], "subnormal pre": r["subnormal_pre"][i],
                                 "depth": r["depth"][i]})
    if red_rows:
        ref = ["| k | post (reference) | pre (reference) | post (this run) | pre (this run) |",
               "|---:|---:|---:|---:|---:|"]
        for k, (post_ref, pre_ref) in REFERENCE_REDUCTION.items():
            row = _reduction_row(f, "float16", "ring", k)
            if row:
                ref.append(f"| {k} | {_fmt(post_ref)} | {_fmt(pre_ref)} | {_fmt(row['median_rel_post'])} | "
                           f"{_fmt(row['median_rel_pre'])} |")
        parts += ["## 3. Precision of the reduction", "",
                  "g ~ N(0, 1e-3²) rounded to the format, k workers, median over elements of "
                  "|computed mean − exact mean|/|exact mean| (exact: `math.fsum`, k a power of two). "
                  "*model*: the statistical model of rounding (each rounded op adds an independent error uniform "
                  "on ±ulp/2 of its result, tracked through the algorithm's own order; Monte Carlo median) -- an "
                  "estimate. *bound*: Higham's worst case γ_d·Σ|g|/|Σg| + u (pre: plus the pre-division's "
                  "relative and subnormal absolute errors), d = the deepest chain of additions "
                  "(*depth*) -- an upper bound, never a level.", "",
                  "The reference simulation (training-statistics.md §B: float16, sequential ring) beside ours:", "",
                  "\n".join(ref), "", markdown_table(red_rows), ""]
    facts = f.get("facts")
    if facts:
        alg = facts["algorithms"]
        rows = [{"divide": d, **{a: facts.get(f"overflow_k_{d}_{a}") or "never" for a in alg},
                 **{f"k=256 {a}": facts.get(f"at256_{d}_{a}") for a in alg}} for d in ("pre", "post", "split")]
        stag = [{"k": k, **{a: float(np.asarray(facts[f"stagnation_{a}"])[i]) for a in alg},
                 "theory (sequential)": float(np.asarray(facts["stagnation_theory"])[i])}
                for i, k in enumerate(np.asarray(facts["stagnation_k"]).tolist())]
        parts += ["### Overflow, underflow, stagnation", "",
                  f"float16, every worker holding 300: the smallest k at which the all-reduced mean is inf "
                  f"(exact sum reaches 65504 + half an ulp = 65520 at k = {facts['overflow_k_theory']}), "
                  "and the result at 256 workers:", "", markdown_table(rows), "",
                  f"Pre-division underflow, |g| = 1e-3: g/k is subnormal in float16 from k = "
                  f"{facts['underflow_subnormal_k_float16']} (theory: k > g/2^-14, "
                  f"{int(facts['underflow_subnormal_theory_float16'])}) and 0 from k = "
                  f"{facts['underflow_zero_k_float16']}; bfloat16 and float32 share float32's exponent range "
                  f"(subnormal only beyond k ≈ {_fmt(facts['underflow_subnormal_theory_bfloat16'])}).", "",
                  "bfloat16, every worker holding 1 (mean computed post-divide):", "", markdown_table(stag), ""]
    train = f.get("train", [])
    if train:
        goyal = [{"batch multiplier": b // 256, "Goyal batch": b, "Goyal top-1 error % (gradual warm-up)": e}
                 for b, e in zip(GOYAL["batch"], GOYAL["gradual"])]
        parts += ["## 4. Large-batch training", "",
                  "The MLP (16-32-4, ReLU) on a synthetic 4-class task (2048 training, 2048 test samples, "
                  "teacher labels with Gumbel noise), SGD with momentum 0.9, b = 16 per worker, η₀ = 0.005, "
                  "a fixed number of epochs (so k workers take k times fewer steps). Rules: *none* η₀; "
                  "*linear* kη₀ from the start; *linear-gradual* η₀ → kη₀ linearly over 2 epochs (Goyal et al.: "
                  "5 of 90); *linear-constant* η₀ for 2 epochs, then kη₀; *sqrt* √k·η₀. Error = 100 − test accuracy.", "",
                  markdown_table(train, ["format", "k", "rule", "steps", "peak_lr", "error", "test_loss",
                                         "train_loss", "rank0", "global"],
                                 headers={"error": "test error %", "rank0": "rank-0 logged loss",
                                          "global": "global logged loss", "peak_lr": "peak lr"}), "",
                  "Goyal et al. (2017), ResNet-50 on ImageNet, published (not reproduced here): at 8k (32×) "
                  f"no warm-up {GOYAL['8k_no_warmup']} %, constant warm-up {GOYAL['8k_constant_warmup']} %, gradual:", "",
                  markdown_table(goyal), "",
                  "Shape comparison only: what transfers is the ordering of the rules and whether the error "
                  "stays flat up to some k, not the levels.", ""]
        puzzle = [{k: d[k] for k in ("format", "k", "rule", "rank0", "global", "train_loss", "test_loss",
                                     "accuracy", "step_gap")}
                  for d in train if d["k"] in (1, 2) and d["rule"] in ("none", "linear", "linear-gradual")]
        parts += ["## 5. The loss/accuracy puzzle", "",
                  markdown_table(puzzle, headers={"rank0": "rank-0 logged loss", "global": "global logged loss",
                                                  "train_loss": "final train loss", "test_loss": "test loss",
                                                  "accuracy": "test accuracy",
                                                  "step_gap": "median |rank 0 − global| per step"}), "",
                  "*rank-0 logged loss*: the mean over the last epoch of the loss rank 0 computes on its own "
                  "shard (what a script that logs `loss.item()` on rank 0 prints); *global logged loss*: the "
                  "mean over all workers (the big-batch loss of the same steps); both are running averages "
                  "over an epoch during which the parameters change, unlike *train_loss* (the final model on "
                  "all training data) and the test metrics. Three separate effects, measured above: (1) one "
                  "shard is not the batch; (2) an epoch's running mean is not the end-of-epoch loss; (3) "
                  "cross-entropy and accuracy rank models differently (a model can be more confident on what "
                  "it gets right and still get fewer right).", ""]
    parts += ["## Limits of this run", "",
              "* One seed; the model is a small MLP on synthetic data, so part 4 compares shapes, not levels.",
              "* Part 1 and 2 compare runs over a fixed number of steps; differences in trajectories grow "
              "with the number of steps (chaotic dynamics amplify one-ulp differences).",
              "* The reduction error is measured on random N(0, σ²) gradients, as the reference simulation "
              "did; real gradients are correlated across workers, which lowers the conditioning Σ|g|/|Σg|.", ""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    try:
        from precision.study.plots import markdown_provenance
        parts.append(markdown_provenance(out_dir))
    except Exception:
        pass
    (out_dir / "report.md").write_text("\n".join(parts), encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# terminal verdict

def verdict(results) -> str:
    """What `precision study gradient-averaging` prints at the end: sentences and one table."""
    f = findings(results)
    lines = ["Verdict (this run):"]
    lines += [textwrap.fill("- " + s, width=100, subsequent_indent="  ") for s in sentences(f)]
    table = []
    for k in (64, 256, 1024):
        row = {"k": k}
        for fmt in ("float16", "bfloat16", "float32"):
            r = _reduction_row(f, fmt, "ring", k)
            if r:
                short = {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}[fmt]
                row[f"{short} post"] = r["median_rel_post"]
                row[f"{short} pre"] = r["median_rel_pre"]
        if len(row) > 1:
            if k in REFERENCE_REDUCTION:
                row["ref f16 post/pre"] = "/".join(_fmt(v) for v in REFERENCE_REDUCTION[k])
            table.append(row)
    if table:
        columns = list(dict.fromkeys(c for row in table for c in row))
        lines += ["", "Median relative error of the all-reduced mean (ring, g ~ N(0, 1e-3²)):",
                  text_table(table, columns, digits=2).rstrip()]
    return "\n".join(lines)
