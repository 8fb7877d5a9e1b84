"""Batch-norm statistics: moving averages vs population, decay 1/n, low-precision buffers, N/(N-1), one-pass variance, tiny batches.

    precision study batchnorm-statistics [--smoke | --quick | --full] [--formats f16,bf16,f32,f64] [--seed S]

Issue #12 part 3.  Six parts, one kind of cell each: ``moving-average`` (format x stationary /
drifting data), ``cumulative`` (format x arithmetic, 10^5 batches), ``stagnation`` (buffer format),
``small-batch`` (format), ``one-pass`` (format x n), ``training`` (batch size x seed, float32).
Modules: ``parts`` (parts 1-5), ``training`` (part 6), ``theory``, ``exact`` (exact moments),
``report`` (report.md, plots, the terminal verdict).

Times: --smoke ~10 s; --quick measured 2 min 20 s of CPU (nice, --jobs 2, on the shared 2-core
machine: 6 min 23 s wall under a load average of ~8), so ~2.5 min with --jobs 1 and ~1.5 min
with --jobs 2 on an idle 2-core machine; --full not run, estimated at ~25-40 CPU-minutes (10x the
batches of part 1, 2000 channels in part 2, 8x the data in parts 4-5, 5 seeds of 30 epochs on 4096
samples in part 6), ~15-20 min with --jobs 2.
"""
from precision.study import Study
from . import parts, training
from .report import report, summarize, verdict

NAME = "batchnorm-statistics"
FORMATS = ["float16", "bfloat16", "float32", "float64"]


def run_cell(params):
    """One cell (a top-level function: the engine sends it to worker processes by reference)."""
    part, size, seed = params["part"], params["size"], params["seed"]
    if part == "moving-average":
        return parts.moving_average(params["format"], params["data"], size, seed)
    if part == "cumulative":
        return parts.cumulative(params["format"], params["accumulate"], size, seed)
    if part == "stagnation":
        return parts.stagnation(params["format"], size, seed)
    if part == "small-batch":
        return parts.small_batches(params["format"], size, seed)
    if part == "one-pass":
        return parts.one_pass(params["format"], params["n"], size, seed)
    if part == "training":
        return training.train(params["batch"], seed, size)
    raise ValueError(f"unknown part {part!r}")


def grid(formats=None, size="quick", seed=0):
    """The cells in report order; formats: storage formats to keep (None: all four)."""
    keep = [f for f in FORMATS if formats is None or f in formats] or list(FORMATS)
    cells = []

    def cell(part, **kw):
        cells.append({"part": part, "size": size, "seed": seed, **kw})

    for f in keep:
        for data in ("stationary", "drifting"):
            cell("moving-average", format=f, data=data)
    for f in keep:
        cell("cumulative", format=f, accumulate=f)
        if f in ("float16", "bfloat16"):
            cell("cumulative", format=f, accumulate="float32")
    for f in dict.fromkeys([x for x in keep if x != "float64"] + ["float32"]):
        cell("stagnation", format=f)
    for f in keep:
        cell("small-batch", format=f)
    for f in keep:
        for n in parts.ONE_PASS_SIZES[size]:
            cell("one-pass", format=f, n=n)
    seeds = {"smoke": 1, "quick": 3, "full": 5}[size]
    batches = [2, 32] if size == "smoke" else training.BATCH_SIZES
    for s in range(seed, seed + seeds):
        for b in batches:
            cells.append({"part": "training", "size": size, "seed": s, "batch": b,
                          "format": "float32"})
    return cells


def build(args):
    """The Study for the CLI: args.size is "smoke", "quick" (default) or "full"; formats, seed."""
    size = getattr(args, "size", None) or ("full" if getattr(args, "full", False) else "quick")
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    return Study(name=NAME, cells=grid(formats, size, seed), run_cell=run_cell,
                 summarize=summarize, report=report, verdict=verdict, version="2",
                 metadata={"grid": size, "seed": seed},
                 table_columns=["part", "format", "data", "accumulate", "n", "batch", "seed",
                                "headline"])
