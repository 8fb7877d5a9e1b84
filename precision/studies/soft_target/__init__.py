"""Where soft-target training stalls in each format, and why (the headline study).

    precision study soft-target-stall [--smoke | --quick | --full] [--formats f16,bf16,f32,f64] [--seed S]

The grid: problems × formats (pure and with float32 accumulation) × optimizers (+ Adam's state format,
+ attribution variants of gradient descent and Adam); then the mechanism sweeps (cells with
``part = "mechanisms"``: GD's lr, Adam's lr × state format, Adam's ε around its stability limit) and the
question's symptoms (``part = "symptoms"``: models on identical data over a sweep of the achievable KL
gain, held-out loss, L-BFGS as people run it, one-hot targets, remedies). Modules: ``problems`` (data
and exact excess), ``theory`` (predicted levels), ``train`` (one cell: a training run), ``symptoms``
(the symptom cells), ``report`` and ``symptoms_report`` (report.md, plots and the terminal verdict).
"""
from precision.study import Study
from .report import report, verdict
from . import symptoms
from .train import run_cell, summarize

NAME = "soft-target-stall"

# (storage format, accumulation format)
FORMAT_CONFIGS = [("float16", "float16"), ("float16", "float32"), ("bfloat16", "bfloat16"),
                  ("bfloat16", "float32"), ("float32", "float32"), ("float64", "float64")]


def _cell(problem, fmt, acc, optimizer, *, state=None, variant="plain", condition=None, seed=0,
          iterations=3000, size="quick"):
    return {"problem": problem, "condition": condition, "format": fmt, "accumulate": acc,
            "optimizer": optimizer, "state_format": state or (fmt if optimizer != "lbfgs" else "float64"),
            "variant": variant, "seed": seed, "iterations": iterations, "size": size}


def grid(formats=None, full=False, seed=0):
    """The cells, in report order. formats: storage formats to keep (None: all)."""
    configs = [(f, a) for f, a in FORMAT_CONFIGS if formats is None or f in formats]
    pure = [(f, a) for f, a in configs if f == a]
    # --full: five seeds, 10000 iterations (linear problems; their GD floors plateau within ~3000),
    # 20000 (MLP); about 30–40 min with --jobs 1 on a 2-core machine.
    seeds = [seed + k for k in range(5)] if full else [seed]
    steps = 10000 if full else 3000
    lbfgs_steps = 5000 if full else 1000
    conditions = [1e1, 1e2, 1e3, 1e4, 1e5] if full else [1e4]
    cells = []
    for s in seeds:
        for problem in ("bias-only", "linear"):
            for f, a in configs:
                cells.append(_cell(problem, f, a, "gd", seed=s, iterations=steps))
                cells.append(_cell(problem, f, a, "adam", seed=s, iterations=steps))
                if f in ("float16", "bfloat16"):
                    cells.append(_cell(problem, f, a, "adam", state="float32", seed=s, iterations=steps))
                cells.append(_cell(problem, f, a, "lbfgs", seed=s, iterations=lbfgs_steps))
            for f, a in (configs if full else pure):
                cells.append(_cell(problem, f, a, "momentum", seed=s, iterations=steps))
            for f, a in pure:
                if f != "float64":   # the float64 "exact" gradient would not be more exact
                    for variant in ("exact-gradient", "master-f64"):
                        cells.append(_cell(problem, f, a, "gd", variant=variant, seed=s, iterations=steps))
        for f, a in configs:
            for optimizer in ("gd", "lbfgs"):
                cells.append(_cell("linear-noisy", f, a, optimizer, seed=s,
                                   iterations=steps if optimizer == "gd" else lbfgs_steps))
        for kappa in conditions:
            for f, a in pure:
                for optimizer in ("gd", "lbfgs"):
                    cells.append(_cell("linear-ill-conditioned", f, a, optimizer, condition=kappa, seed=s,
                                       iterations=steps if optimizer == "gd" else lbfgs_steps))
        # The realizable MLP (min CE = mean H(t) exactly): pure formats in the quick grid, every
        # configuration, momentum and the attribution runs in the full one.
        mlp_steps = 20000 if full else 10000
        for f, a in (configs if full else pure):
            cells.append(_cell("mlp", f, a, "gd", seed=s, iterations=mlp_steps))
            cells.append(_cell("mlp", f, a, "adam", seed=s, iterations=mlp_steps))
            if f in ("float16", "bfloat16"):
                cells.append(_cell("mlp", f, a, "adam", state="float32", seed=s, iterations=mlp_steps))
            cells.append(_cell("mlp", f, a, "lbfgs", seed=s, iterations=lbfgs_steps))
            if full:
                cells.append(_cell("mlp", f, a, "momentum", seed=s, iterations=mlp_steps))
        # GD's gradient-resolution floor on the MLP (float64 master weights: no swamping); the
        # full grid adds the exact-gradient runs.
        for f, a in pure:
            if f != "float64":
                for variant in (("exact-gradient", "master-f64") if full else ("master-f64",)):
                    cells.append(_cell("mlp", f, a, "gd", variant=variant, seed=s, iterations=mlp_steps))
        # Adam's rebound: the same run with an exactly computed gradient, with float64 master
        # weights and state, and with ε large enough that Adam's preconditioned sharpness stays
        # below its stability threshold (eps-stable), on the linear problem and the MLP; float64
        # gets eps-stable only. Quick: float32 and float64; full: every pure format.
        # (quick: the MLP's Adam runs rebound by iteration ~2000, so 4000 iterations show it;
        # full: also bias-only, whose float32 Adam rebounds only after ~5000 iterations)
        attributed = [("linear", steps), ("mlp", mlp_steps if full else 4000)]
        for problem, n_steps in ([("bias-only", steps)] if full else []) + attributed:
            for f, a in pure:
                if not full and f not in ("float32", "float64"):
                    continue
                for variant in (("eps-stable",) if f == "float64"
                                else ("exact-gradient", "master-f64", "eps-stable")):
                    cells.append(_cell(problem, f, a, "adam", variant=variant, seed=s,
                                       iterations=n_steps))
    cells += mechanism_cells(formats, full, seeds)
    if formats is None or {"float32", "float64"} <= set(formats):   # float32 vs float64 throughout
        cells += symptoms.cells(full, seed)
    return cells


def mechanism_cells(formats=None, full=False, seeds=(0,)):
    """part = "mechanisms": GD's lr sweep (lr·λ_max ∈ LR_SWEEP) on bias-only and linear in the pure
    formats; Adam at lr 1e-3 and 1e-2 with every state format on linear; Adam's stability sweep
    (ε with lr·λ_max/ε ∈ EPS_RATIOS, β2 = EPS_SWEEP_BETA2) on linear in float32 and float64."""
    keep = [f for f in ("float16", "bfloat16", "float32", "float64") if formats is None or f in formats]
    steps = 10000 if full else 3000
    out = []
    for s in seeds:
        for problem in ("bias-only", "linear"):
            for f in keep:
                for c in LR_SWEEP:
                    out.append({**_cell(problem, f, f, "gd", seed=s, iterations=steps), "part": "mechanisms",
                                "lr_lambda": c})
        for f in keep:
            states = [f] + [x for x in ("float32", "float64") if FORMAT_RANK[x] > FORMAT_RANK[f]]
            for state in states:
                for lr in ADAM_LRS:
                    out.append({**_cell("linear", f, f, "adam", state=state, seed=s, iterations=steps),
                                "part": "mechanisms", "adam_lr": lr})
        for f in [x for x in ("float32", "float64") if x in keep]:
            for ratio in EPS_RATIOS:
                out.append({**_cell("linear", f, f, "adam", seed=s, iterations=steps), "part": "mechanisms",
                            "eps_ratio": ratio, "adam_beta2": EPS_SWEEP_BETA2})
    return out


LR_SWEEP = (0.25, 0.5, 1.0, 1.5)
ADAM_LRS = (1e-3, 1e-2)
EPS_RATIOS = (20.0, 30.0, 45.0, 60.0)
EPS_SWEEP_BETA2 = 0.99   # v̂ decays e-fold in 100 steps: the sharpness reaches lr·λ_max/ε within the run
FORMAT_RANK = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}


def smoke_grid(formats=None, seed=0):
    """A handful of short cells (seconds): checks that an installation runs the study end to end."""
    keep = [f for f in ("float32", "float64") if formats is None or f in formats] or list(formats)
    return [_cell(problem, f, f, optimizer, seed=seed, iterations=200 if optimizer == "gd" else 100)
            for problem in ("bias-only", "linear") for f in keep for optimizer in ("gd", "lbfgs")]


def build(args):
    """The Study for the CLI: args.size is "smoke", "quick" (default) or "full"; optional formats, seed."""
    size = getattr(args, "size", None) or ("full" if getattr(args, "full", False) else "quick")
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    cells = smoke_grid(formats, seed) if size == "smoke" else grid(formats, size == "full", seed)
    return Study(name=NAME, cells=cells, run_cell=run_cell, summarize=summarize, report=report,
                 verdict=verdict, version="4", metadata={"grid": size, "seed": seed})
