"""One comparison table: precision against numpy and torch, each timed in a fresh process.

    make bench                                   # = python -m tests.bench.compare
    python -m tests.bench.compare --rounds 5 --threads 1,2 --only losses

Why fresh processes: a library's speed depends on the state of the process it runs in. numpy's
reference cross-entropy allocates 16 MB temporaries; in a fresh interpreter they come from fresh pages
at one cost, in a process that has imported torch or called another kernel first they cost 1.5x more
(malloc history decides whether they page-fault). Timing every implementation in the same process
favours whichever ran first. So each row here is its own interpreter that imports only what it times,
warms up, and reports the median of its calls; rounds repeat every row, round-robin, so load on a
shared machine hits all rows alike, and the table shows the median over rounds.

Rows: soft-target cross-entropy, loss and gradient, reduction "mean" (4096x1000 and 65536x10, float32
and float64; precision's 16-bit policies too, strict and with accum="float32"); one Adam step on 10M
parameters (float32). Ratios are precision's time over the peer's: below 1 is faster; a 16-bit row's
time over precision float32's, and an accum= row's over the strict row of its format. Peers absent
from the environment are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

def rows(only: set[str], threads: list[int]) -> list[dict]:
    """Every row of the table: {"group", "name", "spec"} (the spec tests/bench/timed.py runs),
    precision's first in each group."""
    out = []

    def row(group, name, needs=None, **spec):
        out.append(dict(group=group, name=name, needs=needs, spec=spec))

    if "losses" in only:
        for n, c in ((4096, 1000), (65536, 10)):
            for k in threads:
                group = f"cross-entropy {n}x{c}, {k} thread{'s' if k > 1 else ''}"
                for fmt in ("float32", "float64"):
                    row(group, f"precision {fmt}", setup="loss_precision", n=n, c=c, fmt=fmt, threads=k)
                    if k == 1:
                        row(group, f"numpy {fmt}", setup="loss_numpy", n=n, c=c, fmt=fmt)
                    row(group, f"torch {fmt}", "torch", setup="loss_torch", n=n, c=c, fmt=fmt, threads=k)
                for fmt, accum in (("float16", None), ("float16", "float32"), ("bfloat16", None),
                                   ("bfloat16", "float32")):
                    label = f"precision {fmt}" + (f" accum={accum}" if accum else " (strict)")
                    row(group, label, setup="loss_precision", n=n, c=c, fmt=fmt, threads=k, accum=accum)
    if "optim" in only:
        group = "Adam step, 10M parameters, 1 thread"
        for fmt, state, label in (("float32", None, "float32"), ("float64", None, "float64"),
                                  ("float16", None, "float16 (strict)"),
                                  ("float16", "float32", "float16, float32 state"),
                                  ("bfloat16", None, "bfloat16 (strict)")):
            eps = 1e-4 if fmt in ("float16", "bfloat16") and state is None else 1e-8
            row(group, f"precision {label}", setup="adam_precision", fmt=fmt, threads=1, eps=eps,
                state=state)
            if fmt in ("float32", "float64"):
                row(group, f"torch {fmt} (fused)", "torch", setup="adam_torch", fmt=fmt, threads=1)
        row(group, "numpy float32", setup="adam_numpy", fmt="float32")
    return out


def available(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def time_row(row: dict, calls: int, warmup: int) -> float:
    spec = json.dumps({**row["spec"], "calls": calls, "warmup": warmup})
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run([sys.executable, "-m", "tests.bench.timed", spec], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{row['name']} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions() -> str:
    code = ("import importlib, json\nout = {}\nfor m in ('numpy', 'torch', 'precision'):\n"
            "    try: out[m] = importlib.import_module(m).__version__\n    except Exception: pass\n"
            "print(json.dumps(out))")
    found = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      cwd=ROOT).stdout)
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, " + ", ".join(
        f"{k} {v}" for k, v in found.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default 3)")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per process (default 15)")
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (default 1)")
    parser.add_argument("--only", default="losses,optim", help="groups: losses, optim")
    args = parser.parse_args(argv)
    threads = [int(k) for k in args.threads.split(",")]
    table = rows(set(args.only.split(",")), threads)
    have = {"torch": available("torch")}
    table = [r for r in table if have.get(r.get("needs"), True)]
    times = {id(r): [] for r in table}
    for round_ in range(args.rounds):
        for i, row in enumerate(table):
            print(f"\rround {round_ + 1}/{args.rounds}, row {i + 1}/{len(table)}: {row['name']:40s}",
                  end="", file=sys.stderr, flush=True)
            times[id(row)].append(time_row(row, args.calls, warmup=3))
    print(file=sys.stderr)
    print(f"Measured on {versions()}; each row a fresh process, median of {args.calls} calls, "
          f"median over {args.rounds} round-robin rounds.\n")
    print("| | ms | precision ÷ this | ÷ precision float32 | ÷ strict |")
    print("|---|---|---|---|---|")
    group = None
    for row in table:
        if row["group"] != group:
            group = row["group"]
            print(f"| **{group}** | | | | |")
        ms = statistics.median(times[id(row)])
        fmt = row["name"].split()[1]

        def ours(name):
            return next((statistics.median(times[id(r)]) for r in table if r["group"] == group
                         and r["name"] == name), None)
        mine, f32 = ours(f"precision {fmt}"), ours("precision float32")
        strict = ours(f"precision {fmt} (strict)") if "accum=" in row["name"] else None
        if not row["name"].startswith("precision"):
            ratio = f"{mine / ms:.2f}" if mine is not None else ""
            cost = ""
        else:
            ratio = ""
            cost = f"{ms / f32:.2f}" if f32 and fmt != "float32" else ""
        print(f"| {row['name']} | {ms:.1f} | {ratio} | {cost} | {f'{ms / strict:.2f}' if strict else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
