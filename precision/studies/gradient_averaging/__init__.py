"""Is averaging gradients over k workers one big batch? Rounding, sums vs means, reductions, large batches.

    precision study gradient-averaging [--smoke | --quick | --full] [--formats f16,bf16,f32,f64] [--seed S]

Issue #13, part 3. The grid has one part per question (``cells``): one-batch (k workers vs one
worker with k times the batch), shards (unequal shards, sampler padding), sum-vs-mean-sgd and
sum-vs-mean-adam, reduction and reduction-facts (the all-reduce's precision against k, per format
and divide mode, with Higham's bounds), large-batch (training at a fixed number of epochs under
learning-rate rules; its per-epoch logs answer the loss/accuracy puzzle). Modules: ``model``
(data, the MLP and its k-worker gradients), ``cells`` (run_cell), ``report`` (summarize, report.md,
plots and the terminal verdict).
"""
from precision.study import Study
from .cells import RULES, run_cell
from .report import report, summarize, verdict

NAME = "gradient-averaging"

FORMATS = ["float16", "bfloat16", "float32", "float64"]
# (storage, arithmetic, wire) of the reduction part: pure formats, apex's allreduce_always_fp32 for
# float16 gradients, and DDP's fp16/bf16 compression hooks for float32 gradients
REDUCTION_CONFIGS = [("float16", "float16", "float16"), ("bfloat16", "bfloat16", "bfloat16"),
                     ("float32", "float32", "float32"), ("float64", "float64", "float64"),
                     ("float16", "float32", "float32"), ("float32", "float32", "float16"),
                     ("float32", "float32", "bfloat16")]
ALGORITHMS = ["ring", "tree", "pairwise", "sequential"]

SIZES = {
    # smoke: seconds; quick: the committed run (< 5 min on 2 cores); full: more workers, steps, epochs
    "smoke": {"n_train": 256, "steps": 8, "ks_one": [2, 4], "ks_sum": [2, 3], "adam_scales": [0, -27],
              "adam_k": [4], "red_ks": [2, 16, 256], "red_n": 64, "red_algorithms": ["ring", "pairwise"],
              "k_max": 300, "epochs": 2, "ks_train": [1, 4], "train_formats": ["float32"],
              "rules": ["none", "linear-gradual"], "n_test": 256},
    "quick": {"n_train": 2048, "steps": 60, "ks_one": [2, 8, 32], "ks_sum": [2, 3, 8, 24, 64],
              "adam_scales": [0, -13, -20, -27], "adam_k": [8], "red_ks": [2 ** j for j in range(1, 11)],
              "red_n": 512, "red_algorithms": ALGORITHMS, "k_max": 1024, "epochs": 10,
              "ks_train": [1, 2, 4, 8, 16, 32, 64], "train_formats": ["float32", "bfloat16", "float16"],
              "rules": list(RULES), "n_test": 2048},
    "full": {"n_train": 4096, "steps": 200, "ks_one": [2, 8, 32, 64], "ks_sum": [2, 3, 8, 24, 64],
             "adam_scales": [0, -7, -13, -17, -20, -23, -27], "adam_k": [8, 64],
             "red_ks": [2 ** j for j in range(1, 11)], "red_n": 2048, "red_algorithms": ALGORITHMS,
             "k_max": 1024, "epochs": 20, "ks_train": [1, 2, 4, 8, 16, 32, 64, 128],
             "train_formats": ["float32", "bfloat16", "float16"], "rules": list(RULES), "n_test": 4096},
}
BATCH = 8           # one-batch and sum-vs-mean: samples per worker
TRAIN_BATCH = 16    # large-batch: samples per worker (global batch 16·k)


def grid(size: str = "quick", formats=None, seed: int = 0) -> list:
    """The cells, in report order. formats: storage formats to keep (None: all)."""
    cfg = SIZES[size]
    keep = [f for f in FORMATS if formats is None or f in formats] or list(formats)
    cells = []
    for fmt in keep:
        for k in cfg["ks_one"]:
            cells.append({"part": "one-batch", "format": fmt, "k": k, "batch": BATCH,
                          "steps": cfg["steps"], "n_train": cfg["n_train"], "seed": seed})
    cells.append({"part": "shards", "case": "sizes", "sizes": [3, 1], "n": 4, "seed": seed})
    cells.append({"part": "shards", "case": "sizes", "sizes": [300, 300, 300, 100], "n": 1000,
                  "seed": seed})
    for k in (3, 8, 64):
        cells.append({"part": "shards", "case": "sampler", "k": k, "n": 1000, "seed": seed})
    for fmt in keep:
        for k in cfg["ks_sum"]:
            cells.append({"part": "sum-vs-mean-sgd", "format": fmt, "k": k, "batch": BATCH,
                          "steps": cfg["steps"], "n_train": cfg["n_train"], "seed": seed})
    for fmt in keep:
        for k in cfg["adam_k"]:
            for scale in cfg["adam_scales"]:
                cells.append({"part": "sum-vs-mean-adam", "format": fmt, "k": k, "batch": BATCH,
                              "grad_scale_log2": scale, "steps": cfg["steps"],
                              "n_train": cfg["n_train"], "seed": seed})
    for storage, accum, wire in REDUCTION_CONFIGS:
        if storage not in keep:
            continue
        for algorithm in cfg["red_algorithms"]:
            cells.append({"part": "reduction", "format": storage, "accum": accum, "wire": wire,
                          "algorithm": algorithm, "ks": cfg["red_ks"], "n": cfg["red_n"],
                          "sigma": 1e-3, "seed": seed})
    cells.append({"part": "reduction-facts", "algorithms": cfg["red_algorithms"], "k_max": cfg["k_max"]})
    train_formats = [f for f in cfg["train_formats"] if f in keep] or keep[:1]
    for fmt in train_formats:
        rules = cfg["rules"] if fmt == train_formats[0] else ["linear-gradual"]
        for k in cfg["ks_train"]:
            for rule in (rules[:1] if k == 1 else rules):   # at k = 1 every rule is η₀
                cells.append({"part": "large-batch", "format": fmt, "k": k, "rule": rule,
                              "batch": TRAIN_BATCH, "epochs": cfg["epochs"], "n_train": cfg["n_train"],
                              "n_test": cfg["n_test"], "warmup_epochs": 2, "seed": seed})
    return cells


def build(args):
    """The Study for the CLI: args.size is "smoke", "quick" (default) or "full"; optional formats, seed."""
    size = getattr(args, "size", None) or ("full" if getattr(args, "full", False) else "quick")
    formats = getattr(args, "formats", None)
    seed = int(getattr(args, "seed", 0) or 0)
    return Study(name=NAME, cells=grid(size, formats, seed), run_cell=run_cell, summarize=summarize,
                 report=report, verdict=verdict, version="1", metadata={"grid": size, "seed": seed},
                 table_columns=["part", "format", "k", "rule", "algorithm", "headline"])
