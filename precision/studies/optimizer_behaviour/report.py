"""report.md, plots (contours, GIF, sweeps, Adagrad) and the terminal verdict of optimizer-behaviour.

Every sentence of the verdict and of the report's findings is computed from the run's cells; the
reference numbers of ``reference/training-statistics.md`` §D and the seeds' claims stand beside them.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from precision.study.plots import format_number, markdown_provenance, markdown_table, text_table
from . import analysis as an
from .surfaces import SURFACES

__all__ = ["report", "verdict", "findings"]

OPT_LABEL = {"sgd": "SGD", "momentum": "momentum", "nesterov": "Nesterov", "adagrad": "Adagrad",
             "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam"}
OPT_COLOR = {"sgd": "#7f7f7f", "momentum": "#1f77b4", "nesterov": "#17becf", "adagrad": "#2ca02c",
             "adadelta": "#bcbd22", "rmsprop": "#ff7f0e", "adam": "#d62728"}
GIF_FRAMES = 48
GIF_STEPS = 300


def _fmt(value, digits=3):
    return format_number(value, digits)


def _median(values):
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


# ------------------------------------------------------------------------------------- findings
def findings(results) -> dict:
    """The facts the verdict and the report state, each computed from the cells (None if absent)."""
    f = {}
    resp = an.response_rows(results)
    present = [fmt for fmt in an.FORMAT_ORDER if any(r["format"] == fmt for r in resp)]
    ref_fmt = present[-1] if present else None          # the widest format run
    f["response_format"] = ref_fmt
    f["flips"] = {(r["optimizer"], r["mu"]): r for r in resp
                  if r["format"] == ref_fmt and r["convention"] == "torch"}
    f["flip_format_changes"] = [r for r in resp if r["convention"] == "torch" and r["mu"]
                                and r["format"] != ref_fmt
                                and f["flips"].get((r["optimizer"], r["mu"]))
                                and r["flip_step"] != f["flips"][(r["optimizer"], r["mu"])]["flip_step"]]
    f["conventions_agree"] = all(
        r["flip_step"] == f["flips"].get((r["optimizer"], r["mu"]), {}).get("flip_step")
        for r in resp if r["format"] == ref_fmt and r["convention"] != "torch")
    nag = an.cells(results, "nag-damping")
    f["nag"] = [(p["format"], max(d["relative_deviation"] for d in r["directions"]), r["directions"])
                for p, r in nag]
    f["adagrad"] = an.adagrad_rows(results)
    fs = []
    for p, r in an.cells(results, "first-step"):
        for row in r["rows"]:
            fs.append({"format": p["format"], **row, "reference": an.REFERENCE_FIRST_STEP.get(row["case"])})
    f["first_steps"] = fs
    wins = []
    for p, r in an.cells(results, "window"):
        wins += [{"format": p["format"], **row} for row in r["rows"]]
    f["windows"] = wins
    f["widths"] = an.tuning_widths(results)
    fmts = an.formats_in(results)
    f["formats"] = fmts
    f["main_format"] = "float32" if "float32" in fmts else (fmts[-1] if fmts else None)
    f["adadelta"] = an.adadelta_lr_dependence(results, f["main_format"]) if fmts else []
    f["memory"], f["memory_setups"] = an.memory_rows(results)
    f["remedies"] = an.remedy_rows(results)
    return f


def _flip_sentence(f) -> str | None:
    flips = f["flips"]
    parts, ok = [], []
    for key in (("momentum", 0.9), ("momentum", 0.99), ("nesterov", 0.9), ("nesterov", 0.99)):
        r = flips.get(key)
        if r is None:
            continue
        parts.append(f"{'classical' if key[0] == 'momentum' else 'Nesterov'} μ={key[1]}: step "
                     f"{r['flip_step']} (reference {r['reference']})")
        ok.append(r["flip_step"] == r["reference"])
    if not parts:
        return None
    adam = flips.get(("adam", 0.9))
    tail = (f"; Adam (β1=0.9) turns at step {adam['flip_step']}, as slowly as classical momentum"
            if adam and adam["flip_step"] and adam["flip_step"] > 1 else "")
    verdict = "reproduced" if all(ok) else "NOT reproduced"
    changes = f["flip_format_changes"]
    fmt_note = ""
    if changes:
        fmt_note = "; in other formats μ rounds and the flip moves: " + ", ".join(
            f"{r['format']} {r['method']} step {r['flip_step']} (μ rounds to {r['mu_in_format']:.6g}, "
            f"which alone predicts {r['predicted_rounded_mu']}; steady buffer {r['steady_over_plain']:.3g} "
            f"plain steps, not 1/(1 − μ) = {1 / (1 - r['mu_in_format']):.3g})"
            for r in changes if r["optimizer"] == "momentum")
    return (f"After a gradient sign flip at steady state ({f['response_format']}) the update turned at "
            + "; ".join(parts) + f": {verdict}{tail}{fmt_note}.")


def _nag_sentence(f) -> str | None:
    if not f["nag"]:
        return None
    worst = max(f["nag"], key=lambda x: x[1])
    dirs = worst[2]
    damp = ", ".join(f"λ={d['curvature']:g}: μ'={d['damped_momentum']:.3g}" for d in dirs[:3])
    ok = all(dev < 1e-5 for _, dev, _ in f["nag"])
    return (f"Sutskever et al.'s view holds{'' if ok else ' only approximately'}: PyTorch's Nesterov "
            f"iterate equals the look-ahead point of classical momentum with momentum μ(1 − ηλ) "
            f"({damp} …) to a relative {_fmt(worst[1], 2)} at most ({worst[0]}).")


def _adagrad_sentence(f) -> str | None:
    rows = [r for r in f["adagrad"] if r["reference"] is not None]
    if not rows:
        return None
    bits, ok = [], True
    for r in rows:
        step = r["measured"] if r["measured"] is not None else r["predicted"]
        how = "" if r["measured"] is not None else " (computed)"
        bits.append(f"{r['format']} g={r['g']:g}: {_fmt(step, 3) if step > 1e5 else step}{how}")
        ref = r["reference"]
        ok &= (step == ref) if ref < 1e5 else abs(step / ref - 1) < 0.05
    frozen = [r for r in f["adagrad"] if r["measured"] is not None and r["g"] == 0.01]
    tail = ""
    if frozen:
        r = frozen[0]
        tail = (f"; after it the effective lr stays at lr/√G = {_fmt(r['frozen_eff_lr'], 3)} instead of "
                f"decaying: at step {r['steps_run']} it is {_fmt(r['eff_lr_ratio_end'], 3)}× the 1/√t "
                f"value, so Adagrad does not stop learning there, it becomes SGD ({r['format']})")
    return (f"Adagrad's accumulator stopped growing (last growing step) at " + "; ".join(bits)
            + f" — reference 273/350, 2181/2798, ~1.8e7/2.3e7: {'reproduced' if ok else 'NOT reproduced'}"
            + tail + ".")


def _first_step_sentence(f) -> str | None:
    rows = [r for r in f["first_steps"] if r["format"] == f["main_format"] and r["g"] == 1.0]
    if not rows:
        return None
    pick = {r["case"]: r for r in rows}
    parts = []
    for case in ("RMSprop torch α=0.99", "RMSprop keras ρ=0.9", "Adadelta Zeiler ρ=0.95 ε=1e-6",
                 "Adadelta torch ρ=0.9 ε=1e-6", "Adam torch"):
        if case in pick:
            parts.append(f"{case} {_fmt(pick[case]['step_over_lr'], 4)}·lr")
    return f"First steps from zero state ({f['main_format']}, g = 1): " + ", ".join(parts) + \
        " (reference 10, 3.162, 4.47e-3; Adam's bias correction makes its first step lr)."


def _adadelta_sentence(f) -> str | None:
    rows = f["adadelta"]
    if not rows:
        return None
    ratio = _median([r["progress_ratio"] for r in rows])
    depends = not (0.5 <= ratio <= 2)
    lo, hi = rows[0]["lr_small"], rows[0]["lr_large"]
    return (f"Adadelta (torch form: lr multiplies its step) {'does' if depends else 'does not'} depend on "
            f"lr: its progress (start − final excess) at lr = {_fmt(hi, 2)} is a median "
            f"{_fmt(ratio, 3)}× that at lr = {_fmt(lo, 2)} over {len(rows)} problems ({f['main_format']}"
            f"{'; lr ratio ' + _fmt(hi / lo, 2) if depends else ''}).")


def _tuning_sentence(f) -> str | None:
    widths = f["widths"].get(f["main_format"])
    if not widths:
        return None
    order = sorted(widths.items(), key=lambda kv: -kv[1])
    n_problems = len({r["problem"] for r in []}) or None
    del n_problems
    best, second = order[0], order[1] if len(order) > 1 else None
    adam_rank = [k for k, _ in order].index("adam") + 1 if "adam" in widths else None
    text = (f"Widest lr range reaching the target (excess ≤ {an_target()} × start, summed over problems, "
            f"{f['main_format']}): " + ", ".join(f"{OPT_LABEL[k]} {v:g}" for k, v in order[:4])
            + " decades")
    if adam_rank:
        text += f"; Adam ranks {adam_rank} of {len(order)}"
        text += (": \"easiest to tune\" holds here." if adam_rank == 1
                 else ": \"easiest to tune\" is not what this sweep shows.")
    return text


def an_target():
    from .runs import TARGET_FRACTION
    return f"{TARGET_FRACTION:g}"


def _memory_sentence(f) -> str | None:
    rows, setups = f["memory"], f["memory_setups"]
    if not rows:
        return None
    same = [(r[s + " ×model"], r["optimizer"]) for r in rows for s in setups if s in ("float32", "bfloat16")]
    lo, hi = min(v for v, _ in same), max(v for v, _ in same)
    above = sorted({name for v, name in same if v > 2})
    every = [(r[s + " ×model"], r["optimizer"], s) for r in rows for s in setups]
    top = max(every)
    return (f"State memory, measured from the state arrays: {lo:g}–{hi:g}× the model when the state has "
            f"the parameters' format (seeds: \"0 to 2×\"" + (f"; above 2×: {', '.join(above)}" if above else "")
            + f"); up to {top[0]:g}× ({top[1]}, {top[2]}).")


REMEDY_NAMES = ("master", "kahan", "stochastic", "state-f32")


def _swamp_sentence(f) -> str | None:
    rows = f["remedies"]
    if not rows:
        return None
    parts = []
    for fmt in ("float16", "bfloat16"):
        sub = [r for r in rows if r["format"] == fmt]
        if not sub:
            continue
        share = _median([r["swamped_last_half"] for r in sub]) * 100
        broken = [r for r in sub if not r["fixed_none"]]
        text = (f"{fmt}: median {share:.0f}% of coordinate updates swamped in the runs' second half; "
                f"{len(broken)} of {len(sub)} runs ended >10× above max(float32's excess, the format's "
                f"resolution)")
        if broken:
            text += " and of those " + ", ".join(
                f"{name} fixed {sum(r['fixed_' + name] for r in broken)}" for name in REMEDY_NAMES)
        parts.append(text)
    return "Swamping (w ⊕ u = w) and remedies — " + "; ".join(parts) + "."


def verdict(results) -> str:
    """What `precision study optimizer-behaviour` prints when it ends; every number is this run's."""
    f = findings(results)
    sentences = [s for s in (_flip_sentence(f), _nag_sentence(f), _adagrad_sentence(f),
                             _first_step_sentence(f), _adadelta_sentence(f), _tuning_sentence(f),
                             _memory_sentence(f), _swamp_sentence(f)) if s]
    lines = ["Verdict (this run):"]
    lines += [textwrap.fill("- " + s, width=100, subsequent_indent="  ") for s in sentences]
    table = _verdict_table(f)
    if table:
        lines += ["", text_table(table, list(table[0])).rstrip(),
                  textwrap.fill("(flip: step at which the update turns after a gradient flip, μ = β1 = 0.9; "
                                "lr decades: width of the ½-decade lr grid reaching the target, summed over "
                                "problems; lost: median share of coordinate updates swamped in the runs' "
                                "second half; bad: surfaces where bf16 ended >10× above max(float32's excess, bf16's "
                                "resolution); fixed by: how many of those master weights (M), Kahan (K), "
                                "stochastic rounding (SR), float32 state alone (F) bring within it)", 100)]
    return "\n".join(lines)


def _verdict_table(f) -> list:
    from .runs import OPTIMIZERS

    table = []
    flips = f["flips"]
    mem = {r["optimizer"]: r for r in f["memory"]}
    mem_name = {"sgd": "SGD", "momentum": "SGD momentum", "nesterov": "SGD Nesterov", "adagrad": "Adagrad",
                "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam"}
    for opt in OPTIMIZERS:
        row = {"optimizer": OPT_LABEL[opt]}
        flip = flips.get((opt, 0.9) if opt in ("momentum", "nesterov", "adam") else (opt, None))
        row["flip"] = flip["flip_step"] if flip else ""
        for fmt in ("float32", "bfloat16"):
            w = f["widths"].get(fmt, {}).get(opt)
            row[f"lr dec {'f32' if fmt == 'float32' else 'bf16'}"] = "" if w is None else f"{w:g}"
        m = mem.get(mem_name[opt])
        row["state× f32"] = f"{m['float32 ×model']:g}" if m and "float32 ×model" in m else ""
        sub = [r for r in f["remedies"] if r["optimizer"] == opt and r["format"] == "bfloat16"]
        if sub:
            row["bf16 lost"] = f"{100 * _median([r['swamped_last_half'] for r in sub]):.0f}%"
            broken = [r for r in sub if not r["fixed_none"]]
            short = {"master": "M", "kahan": "K", "stochastic": "SR", "state-f32": "F"}
            row["bf16 bad"] = f"{len(broken)}/{len(sub)}"
            row["fixed by"] = " ".join(f"{short[n]}{sum(r['fixed_' + n] for r in broken)}"
                                       for n in short) if broken else ""
        table.append(row)
    return table


# ------------------------------------------------------------------------------------- plots
def _contour(ax, surface, *, levels=18):
    xs = np.linspace(*surface.xlim, 160)
    ys = np.linspace(*surface.ylim, 140)
    Z = np.array([[surface.excess((x, y)) for x in xs] for y in ys])
    Z = np.log10(np.maximum(Z, 1e-6) + 1e-3)
    ax.contour(xs, ys, Z, levels=levels, colors="#bbbbbb", linewidths=0.6)
    ax.plot(*surface.minimum, marker="*", color="k", markersize=8, zorder=5)
    ax.set_xlim(surface.xlim)
    ax.set_ylim(surface.ylim)


def _trajectories(results):
    """{(surface, format): {optimizer: path}} of the runs without remedy."""
    out = {}
    for p, r in an.cells(results, "trajectory", remedy="none"):
        if "path" in r:
            out.setdefault((p["surface"], p["format"]), {})[p["optimizer"]] = np.asarray(r["path"])
    return out


def _figure(nrows, ncols, w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows + 0.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_contours(results, plots: Path) -> list:
    paths = _trajectories(results)
    written = []
    fmts = an.formats_in(results)
    for name, surface in SURFACES.items():
        have = [f for f in fmts if (name, f) in paths]
        if not have:
            continue
        fig, axes = _figure(1, len(have), 3.6, 3.1)
        for ax, fmt in zip(axes[0], have):
            _contour(ax, surface)
            for opt, path in paths[(name, fmt)].items():
                ax.plot(path[:, 0], path[:, 1], color=OPT_COLOR[opt], linewidth=1.1, label=OPT_LABEL[opt])
                ax.plot(path[0, 0], path[0, 1], "ko", markersize=3)
            ax.set_title(f"{name}, {fmt}", fontsize=9)
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{surface.formula} — paths of {len(paths[(name, have[0])])} optimizers", fontsize=9)
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.84, wspace=0.18)
        path = plots / f"contour_{name}.png"
        fig.savefig(path, dpi=90, metadata={"Software": None})
        written.append(path)
    return written


def animate(results, plots: Path) -> Path | None:
    """plots/trajectories.gif: the first GIF_STEPS steps of the same runs, float32 over bfloat16."""
    from matplotlib.animation import PillowWriter

    paths = _trajectories(results)
    fmts = [f for f in ("float32", "bfloat16") if any(k[1] == f for k in paths)] or \
        sorted({k[1] for k in paths})[:2]
    names = [n for n in SURFACES if any((n, f) in paths for f in fmts)]
    if not names or not fmts:
        return None
    fig, axes = _figure(len(fmts), len(names), 2.5, 2.2)
    lines = {}
    longest = 1
    for i, fmt in enumerate(fmts):
        for j, name in enumerate(names):
            ax = axes[i][j]
            _contour(ax, SURFACES[name], levels=12)
            ax.set_title(f"{name}, {fmt}", fontsize=7)
            ax.tick_params(labelsize=6)
            for opt, path in paths.get((name, fmt), {}).items():
                (line,) = ax.plot([], [], color=OPT_COLOR[opt], linewidth=1.2, label=OPT_LABEL[opt])
                (head,) = ax.plot([], [], "o", color=OPT_COLOR[opt], markersize=3)
                lines[(i, j, opt)] = (line, head, path)
                longest = max(longest, min(len(path), GIF_STEPS + 1))
    axes[0][0].legend(fontsize=5, loc="lower right")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.05, top=0.9, wspace=0.2, hspace=0.3)
    title = fig.suptitle("", fontsize=8)
    frames = sorted({int(round(x)) for x in np.geomspace(1, longest - 1, GIF_FRAMES)})
    out = plots / "trajectories.gif"
    writer = PillowWriter(fps=8)
    with writer.saving(fig, str(out), dpi=60):
        for step in frames + [frames[-1]] * 6:
            for line, head, path in lines.values():
                k = min(step, len(path) - 1)
                seg = path[:k + 1]
                seg = seg[np.all(np.isfinite(seg), axis=1)]
                if seg.size:
                    line.set_data(seg[:, 0], seg[:, 1])
                    head.set_data([seg[-1, 0]], [seg[-1, 1]])
            title.set_text(f"step {step}")
            writer.grab_frame()
    return out


def plot_sweeps(results, plots: Path) -> list:
    rows = an.sweep_rows(results)
    if not rows:
        return []
    fmts = an.formats_in(results)
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = _figure(len(fmts), len(problems), 2.8, 2.2)
    for i, fmt in enumerate(fmts):
        for j, problem in enumerate(problems):
            ax = axes[i][j]
            for r in rows:
                if r["format"] == fmt and r["problem"] == problem:
                    y = np.where(np.isfinite(r["final"]), r["final"], np.nan)
                    ax.loglog(r["lrs"], np.maximum(y, 1e-18), "-o", markersize=2, color=OPT_COLOR[r["optimizer"]],
                              label=OPT_LABEL[r["optimizer"]], linewidth=1)
                    ax.axhline(r["target"], color="k", linewidth=0.5, linestyle=":")
            ax.set_title(f"{problem}, {fmt}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=5)
    fig.suptitle("final excess after the sweep's steps vs lr (dotted: target; gaps: diverged)", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.05, top=0.93, wspace=0.3, hspace=0.45)
    path = plots / "lr_sweep.png"
    fig.savefig(path, dpi=80, metadata={"Software": None})
    return [path]


def plot_adagrad(results, plots: Path) -> list:
    found = an.cells(results, "adagrad")
    if not found:
        return []
    fig, axes = _figure(1, 2, 4.2, 3.2)
    for ax, g in zip(axes[0], (0.01, 0.1)):
        for p, r in found:
            if p["g"] == g:
                ax.loglog(r["sample_steps"], r["effective_lr"], label=p["format"], linewidth=1.2)
                ideal = (r["sample_steps"], r["ideal_effective_lr"])
        if found:
            ax.loglog(*ideal, "k:", label="lr/(g√t)")
        ax.set_title(f"Adagrad effective lr, constant g = {g}", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.25)
    path = plots / "adagrad_effective_lr.png"
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return [path]


# ------------------------------------------------------------------------------------- report
def report(results, out_dir) -> None:
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    f = findings(results)
    written = plot_contours(results, plots)
    gif = animate(results, plots)
    written += plot_sweeps(results, plots) + plot_adagrad(results, plots)
    rel = lambda p: p.relative_to(out_dir).as_posix()  # noqa: E731

    parts = ["# Optimizer behaviour: the seeds' claims, measured", "",
             "Every number below comes from this run's cells (`raw/cells/*.json`, one row per cell in "
             "`summary.csv`); references from `reference/training-statistics.md` §D stand beside them. "
             "Optimizers are `precision.optim`'s, used through their public API; gradients of the surfaces "
             "are computed in float64 and rounded once to the format (so what differs between formats is "
             "the optimizer's arithmetic).", "", "## Verdict", "", "```", verdict(results), "```", ""]

    # 1. trajectories
    parts += ["## 1. Trajectories", "",
              "Each optimizer at one lr per surface (`runs.TRAJECTORY_LR`, chosen from a float64 sweep "
              "so each makes visible progress; not each one's best), in every format:", ""]
    parts += [f"![{rel(p)}]({rel(p)})" for p in written if p.name.startswith("contour_")]
    if gif is not None:
        parts += ["", f"Animation of the first {GIF_STEPS} steps of the same runs: ![{rel(gif)}]({rel(gif)})"]
    traj = [{"surface": p["surface"], "format": p["format"], "optimizer": OPT_LABEL[p["optimizer"]],
             "lr": p["lr"], "final excess": r["final_excess"], "min excess": r["min_excess"],
             "blew up at": r["blew_up_step"]}
            for p, r in an.cells(results, "trajectory", remedy="none")]
    if traj:
        parts += ["", "<details><summary>final excess f − f* of every trajectory run</summary>", "",
                  markdown_table(traj), "</details>", ""]

    # 2. response time
    resp = an.response_rows(results)
    if resp:
        parts += ["## 2. Response time after a gradient flip", "",
                  "Constant gradient +1 until steady state (30/(1 − μ) steps), then −1; the update of "
                  "each step is read exactly (parameter reset to 0 before each step). *flip*: first step "
                  "after the flip whose update points the new way; *overshoot*: distance still travelled "
                  "the old way, in plain steps lr·|g|. Prediction: exact arithmetic with μ as given and "
                  "with μ rounded to the format (`theory.flip_step`).", "",
                  markdown_table(resp, ["format", "method", "flip_step", "reference", "predicted",
                                        "predicted_rounded_mu", "mu_in_format", "overshoot",
                                        "predicted_overshoot", "steady_over_plain"]), ""]
        s = _flip_sentence(f)
        parts += [s or "", ""]
    if f["nag"]:
        parts += ["### Nesterov = momentum with curvature-dependent damping (Sutskever et al. 2013)", "",
                  "On f = λθ²/2 from θ = 1 (lr η = 0.05, μ = 0.9, 200 steps), PyTorch's Nesterov iterate "
                  "p_t against θ_t + μ(θ_t − θ_{t−1}) of classical momentum with momentum μ(1 − ηλ):", ""]
        rows = [{"format": fmt, **d} for fmt, _, dirs in f["nag"] for d in dirs]
        parts += [markdown_table(rows), "", _nag_sentence(f) or "", ""]

    # 3. Adagrad
    if f["adagrad"]:
        parts += ["## 3. Adagrad's decay and where precision ends it", "",
                  "Constant gradient g, torch Adagrad (lr 0.01, ε 1e-10, state in the format). *measured*: "
                  "last step whose addition changed the accumulator `state_of(p)['sum']` (blank: not "
                  "reached in the steps run); *predicted*: `theory.adagrad_stall`, the recurrence "
                  "G ← G ⊕ g⊗g run exactly in the format a binade at a time (how float32's ~1.8e7 and "
                  "float64's ~1e16 steps are obtained without running them). *eff. lr ratio*: "
                  "|update|/|g| at the last step over the exact lr/(g√t).", "",
                  markdown_table(f["adagrad"], ["format", "g", "measured", "predicted", "reference",
                                                "accumulator", "frozen_eff_lr", "steps_run",
                                                "eff_lr_ratio_end", "travelled_ratio"]), "",
                  _adagrad_sentence(f) or "", "",
                  "What it does to training: before the stall the effective lr follows 1/√t in every "
                  "format (the plot); after it the accumulator is frozen, so the step is a constant "
                  "lr·g/√G — the opposite of 'the system stops learning': it stops *decaying*. "
                  "*travelled ratio* is the distance moved over the exact Σ lr/√t.", ""]
        parts += [f"![{rel(p)}]({rel(p)})" for p in written if p.name.startswith("adagrad")] + [""]

    # 4. RMSprop / Adadelta
    if f["first_steps"]:
        parts += ["## 4. Adadelta and RMSprop: first steps, windows, lr", "",
                  "First update |Δθ|/lr from zero state (no bias correction; predicted in exact arithmetic "
                  "with the format's g):", "",
                  markdown_table(f["first_steps"], ["format", "case", "g", "step_over_lr", "predicted",
                                                    "reference"], digits=4), ""]
        s = _first_step_sentence(f)
        parts += [s or "", ""]
    if f["windows"]:
        parts += ["Window: the square average after N = 1/(1 − ρ) gradients of 1 from zero holds "
                  "1 − ρ^N of the weight (read from `state_of(p)['square_avg']`):", "",
                  markdown_table(f["windows"], digits=4), ""]
    if f["adadelta"]:
        parts += ["Does Adadelta need no lr? Its final excess at the ends of the sweep:", "",
                  markdown_table(f["adadelta"]), "", _adadelta_sentence(f) or "",
                  " (Zeiler's Adadelta has no lr; torch, Keras and optax multiply its step by lr, "
                  "default 1.0 in torch and 1e-3 in Keras.)", ""]

    # 5. tuning
    srows = an.sweep_rows(results)
    if srows:
        from .runs import TARGET_FRACTION
        parts += ["## 5. \"Easiest to tune\": learning-rate sweeps", "",
                  f"Every optimizer at each lr of a ½-decade grid from 1e-5 to 1, same steps; target: final "
                  f"excess ≤ {TARGET_FRACTION:g} × the starting excess. Width = grid points reaching it × ½ "
                  "decade.", ""]
        table = [{k: r[k] for k in ("problem", "format", "optimizer", "lr_low", "lr_high", "width", "best")}
                 for r in srows]
        widths = [{"format": fmt, **{OPT_LABEL[k]: v for k, v in w.items()}} for fmt, w in f["widths"].items()]
        parts += ["Total width (decades) over the problems:", "", markdown_table(widths), "",
                  _tuning_sentence(f) or "", "", "<details><summary>per problem</summary>", "",
                  markdown_table(table), "</details>", ""]
        parts += [f"![{rel(p)}]({rel(p)})" for p in written if p.name.startswith("lr_sweep")] + [""]

    # 6. memory
    if f["memory"]:
        cols = ["optimizer"] + [s + " ×model" for s in f["memory_setups"]] + [f["memory_setups"][-1] + " arrays"]
        parts += ["## 6. Memory", "",
                  "State bytes per parameter element ÷ the parameter's bytes, summed over the arrays "
                  "`state_of` returns (master copy and Kahan compensation included):", "",
                  markdown_table(f["memory"], cols), "", _memory_sentence(f) or "", ""]

    # 7. swamping and remedies
    if f["remedies"]:
        cols = ["surface", "format", "optimizer", "swamped_last_half", "first_swamped_step",
                "excess_at_first_swamp", "float32", "floor", "none", "state-f32", "master", "kahan",
                "stochastic"]
        parts += ["## 7. Swamping per format, and the remedies", "",
                  "Swamped: a coordinate whose gradient was nonzero but which the step left unchanged "
                  "(w ⊕ u = w). Final excess of each run without remedy and with float32 state "
                  "(`state-f32`), float32 master weights (`master`), Kahan-compensated updates, "
                  "stochastic rounding; `float32`: the same run in float32; `floor`: the largest excess "
                  "within ½ ulp of the minimiser in the format.", "",
                  markdown_table(f["remedies"], cols), "", _swamp_sentence(f) or "", ""]

    # warnings
    seen = sorted({w for _, r in results for w in (r.get("warnings") or [])})
    if seen:
        parts += ["## PrecisionWarnings raised by the optimizers", ""] + [f"- {w}" for w in seen[:40]] + [""]
    try:
        parts += ["---", "", markdown_provenance(out_dir)]
    except (OSError, ValueError):
        pass
    (out_dir / "report.md").write_text("\n".join(parts), encoding="utf-8")
