"""Where soft-target training stalls in each format, and why (issue 5: the headline study).

    precision study soft-target-stall [--quick | --full] [--formats f16,bf16,f32,f64] [--seed S]

The grid: problems × formats (pure and with float32 accumulation) × optimizers (+ Adam's state format,
+ attribution variants of gradient descent). Cells are computed by precision.study.soft_target.run_cell
and reported by precision.study.report_soft_target.report.
"""
from precision.study import Study
from precision.study.report_soft_target import report
from precision.study.soft_target import run_cell, summarize

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
    seeds = [seed, seed + 1, seed + 2] if full else [seed]
    steps = 20000 if full else 3000
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
        if full:
            for f, a in pure:
                if f != "float64":
                    for variant in ("exact-gradient", "master-f64"):
                        cells.append(_cell("mlp", f, a, "gd", variant=variant, seed=s,
                                           iterations=mlp_steps))
    return cells


def build(args):
    """The Study for the CLI: --quick (default) or --full, optional --formats and --seed."""
    full = bool(getattr(args, "full", False))
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    return Study(name="soft-target-stall", cells=grid(formats, full, seed), run_cell=run_cell,
                 summarize=summarize, report=report, version="2",
                 metadata={"grid": "full" if full else "quick", "seed": seed})
