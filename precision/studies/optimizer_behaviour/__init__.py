"""How SGD, momentum, Nesterov, Adagrad, Adadelta, RMSprop and Adam behave, in each format.

    precision study optimizer-behaviour [--smoke | --quick | --full] [--formats f16,bf16,f32,f64]

Measures the claims usually made about these optimizers (issue #15, part 1): trajectories on four
standard surfaces (contour plots and an animation), the response time of momentum after a gradient
flip and Nesterov as damped momentum, Adagrad's 1/√t decay and the step at which a format ends it,
first-step sizes and windows of RMSprop and Adadelta (and whether Adadelta needs no lr), the
learning-rate range that reaches a target loss ("easiest to tune"), state memory per parameter, and
where each optimizer's update swamps in each format and which remedy fixes it.  Modules:
``surfaces`` (the problems), ``theory`` (closed forms), ``runs`` (one cell), ``analysis`` and
``report`` (report.md, plots, GIF and the terminal verdict).
"""
from precision.study import Study
from .report import report, verdict
from .runs import OPTIMIZERS, REMEDIES, SWEEP_LRS, TRAJECTORY_LR, run_cell, summarize

NAME = "optimizer-behaviour"
ALL_FORMATS = ("float16", "bfloat16", "float32", "float64")
SIZES = {
    #           trajectory steps, sweep steps, sweep lrs, adagrad steps (float32/float64)
    "smoke": dict(trajectory=60, sweep=40, lrs=SWEEP_LRS[::5], adagrad=400),
    "quick": dict(trajectory=1000, sweep=300, lrs=SWEEP_LRS, adagrad=20000),
    "full": dict(trajectory=4000, sweep=2000, lrs=SWEEP_LRS, adagrad=200000),
}
RESPONSE_METHODS = (
    # (optimizer, extra hyperparameters, convention)
    ("sgd", {}, "torch"),
    ("momentum", {"momentum": 0.9}, "torch"), ("momentum", {"momentum": 0.99}, "torch"),
    ("nesterov", {"momentum": 0.9}, "torch"), ("nesterov", {"momentum": 0.99}, "torch"),
    ("momentum", {"momentum": 0.9}, "keras"), ("nesterov", {"momentum": 0.9}, "keras"),
    ("momentum", {"momentum": 0.9}, "optax"), ("nesterov", {"momentum": 0.9}, "optax"),
    ("adam", {"betas": [0.9, 0.999]}, "torch"),
    ("rmsprop", {}, "torch"), ("rmsprop", {"momentum": 0.9}, "torch"),
    ("adagrad", {}, "torch"), ("adadelta", {}, "torch"),
)


def grid(formats=None, size="quick", seed=0):
    """The cells, in report order."""
    n = SIZES[size]
    formats = [f for f in ALL_FORMATS if formats is None or f in formats]
    narrow = [f for f in formats if f in ("float16", "bfloat16")]
    surfaces = list(TRAJECTORY_LR)
    optimizers = list(OPTIMIZERS)
    if size == "smoke":
        surfaces, optimizers = surfaces[:2], ["sgd", "momentum", "adam"]
    cells = []
    for surface in surfaces:
        for fmt in formats:
            for opt in optimizers:
                remedies = ["none"] + ([r for r in REMEDIES if r != "none"] if fmt in narrow else [])
                for remedy in remedies:
                    cells.append({"part": "trajectory", "surface": surface, "format": fmt,
                                  "optimizer": opt, "lr": TRAJECTORY_LR[surface][opt],
                                  "remedy": remedy, "steps": n["trajectory"]})
    problems = (surfaces + ["classifier"]) if size != "smoke" else ["quadratic", "classifier"]
    for problem in problems:
        for fmt in formats:
            for opt in optimizers:
                cells.append({"part": "sweep", "problem": problem, "format": fmt, "optimizer": opt,
                              "lrs": list(n["lrs"]), "steps": n["sweep"], "seed": seed})
    methods = RESPONSE_METHODS if size != "smoke" else RESPONSE_METHODS[:5] + RESPONSE_METHODS[9:10]
    for fmt in formats:
        for opt, extra, convention in methods:
            lr = 1e-3 if opt in ("adam",) else 0.01
            cells.append({"part": "response", "format": fmt, "optimizer": opt, "convention": convention,
                          "g": 1.0, "lr": lr, **extra})
    for fmt in [f for f in formats if f in ("float32", "float64")] or formats[:1]:
        cells.append({"part": "nag-damping", "format": fmt, "mu": 0.9, "lr": 0.05,
                      "curvatures": [0.2, 1.0, 5.0, 10.0, 19.0], "steps": 200})
    for fmt in formats:
        for g in (0.01, 0.1):
            steps = n["adagrad"]
            if fmt in narrow and size != "smoke":
                steps = max(steps, 4000)          # past the float16 stall (2798 for g = 0.1)
            cells.append({"part": "adagrad", "format": fmt, "g": g, "lr": 0.01, "steps": steps})
        cells.append({"part": "first-step", "format": fmt, "lr": 1e-3, "gradients": [1.0, 0.01]})
        cells.append({"part": "window", "format": fmt, "rhos": [0.9, 0.95, 0.99, 0.999]})
    cells.append({"part": "memory", "elements": 1000})
    return cells


SMOKE_FORMATS = ("bfloat16", "float32")


def build(args):
    """The Study for the CLI: args.size is "smoke", "quick" (default) or "full"; args.formats, args.seed."""
    size = getattr(args, "size", None) or ("full" if getattr(args, "full", False) else "quick")
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    if size == "smoke" and formats is None:
        formats = list(SMOKE_FORMATS)
    return Study(name=NAME, cells=grid(formats, size, seed), run_cell=run_cell, summarize=summarize,
                 report=report, verdict=verdict, version="1",
                 metadata={"grid": size, "seed": seed},
                 table_columns=None)
