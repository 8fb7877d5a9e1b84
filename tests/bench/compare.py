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
and float64; precision's 16-bit policies too); one Adam step on 10M parameters (float32). Ratios are
precision's time over the peer's: below 1 is faster. Peers absent from the environment are skipped.
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

# The timing harness every child runs: `setup` defines `call`; medians of `calls` calls in ms.
HARNESS = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
{setup}
for _ in range({warmup}):
    call()
times = []
for _ in range({calls}):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
times.sort()
print(json.dumps(1e3 * times[len(times) // 2]))
"""

LOSS_DATA = r"""
import numpy as np
rng = np.random.default_rng(0)
n, c = {n}, {c}
x64 = rng.standard_normal((n, c), dtype=np.float32) * 2
t64 = rng.dirichlet(np.ones(c), size=n)
"""

LOSS_SETUPS = {
    "precision": LOSS_DATA + r"""
import precision as pr
x = pr.format("{fmt}").round(x64); t = pr.format("{fmt}").round(t64)
accum = {accum!r}
def call():
    pr.softmax_cross_entropy(x, t, return_grad=True, accum=accum, num_threads={threads})
""",
    "numpy": LOSS_DATA + r"""
x = x64.astype("{fmt}"); t = t64.astype("{fmt}")
def call():
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = (t * (np.log(s) - z)).sum() / n
    grad = (e / s * t.sum(axis=1, keepdims=True) - t) / n
    return loss, grad
""",
    "torch": LOSS_DATA + r"""
import torch
torch.set_num_threads({threads})
xt = torch.from_numpy(x64.astype("{fmt}")); tt = torch.from_numpy(t64.astype("{fmt}"))
def call():
    leaf = xt.detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(leaf, tt).backward()
""",
}

ADAM_DATA = r"""
import numpy as np
rng = np.random.default_rng(0)
N = 10_000_000
p = rng.standard_normal(N, dtype=np.float32)
g = rng.standard_normal(N, dtype=np.float32) * 1e-2
if "{fmt}" in ("float32", "float64"):
    p, g = p.astype("{fmt}"), g.astype("{fmt}")
"""

ADAM_SETUPS = {
    "precision": ADAM_DATA + r"""
import precision as pr
from precision import optim
p = pr.format("{fmt}").round(p.astype("float32")); g = pr.format("{fmt}").round(g.astype("float32"))
opt = optim.Adam(lr=1e-3, eps={eps}, state_format={state!r}, num_threads={threads})
def call():
    opt.step(p, g)
""",
    "torch": ADAM_DATA + r"""
import torch
torch.set_num_threads({threads})
pt = torch.from_numpy(p).requires_grad_(False); pt.grad = torch.from_numpy(g)
opt = torch.optim.Adam([pt], lr=1e-3, fused=True)
def call():
    opt.step()
""",
    "numpy": ADAM_DATA + r"""
m = np.zeros_like(p); v = np.zeros_like(p); step = [0]
def call():
    step[0] += 1; t = step[0]
    m[...] = 0.9 * m + 0.1 * g
    v[...] = 0.999 * v + 0.001 * g * g
    p[...] -= (1e-3 / (1 - 0.9 ** t)) * m / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
""",
}


def rows(only: set[str], threads: list[int]) -> list[dict]:
    """Every row of the table: {"group", "name", "setup"}, precision's first in each group."""
    out = []
    if "losses" in only:
        for n, c in ((4096, 1000), (65536, 10)):
            for k in threads:
                group = f"cross-entropy {n}x{c}, {k} thread{'s' if k > 1 else ''}"
                for fmt in ("float32", "float64"):
                    out.append(dict(group=group, name=f"precision {fmt}", setup=LOSS_SETUPS["precision"].format(
                        n=n, c=c, fmt=fmt, accum=None, threads=k)))
                    if k == 1:
                        out.append(dict(group=group, name=f"numpy {fmt}", setup=LOSS_SETUPS["numpy"].format(
                            n=n, c=c, fmt=fmt)))
                    out.append(dict(group=group, name=f"torch {fmt}", setup=LOSS_SETUPS["torch"].format(
                        n=n, c=c, fmt=fmt, threads=k), needs="torch"))
                for fmt, accum in (("float16", None), ("bfloat16", None), ("bfloat16", "float32")):
                    label = f"precision {fmt}" + (f" accum={accum}" if accum else " (strict)")
                    out.append(dict(group=group, name=label, setup=LOSS_SETUPS["precision"].format(
                        n=n, c=c, fmt=fmt, accum=accum, threads=k)))
    if "optim" in only:
        group = "Adam step, 10M parameters, 1 thread"
        for fmt, state, label in (("float32", None, "float32"), ("float64", None, "float64"),
                                  ("float16", None, "float16 (strict)"),
                                  ("float16", "float32", "float16, float32 state"),
                                  ("bfloat16", None, "bfloat16 (strict)")):
            eps = 1e-4 if fmt in ("float16", "bfloat16") and state is None else 1e-8
            out.append(dict(group=group, name=f"precision {label}", setup=ADAM_SETUPS["precision"].format(
                fmt=fmt, state=state, eps=eps, threads=1)))
            if fmt in ("float32", "float64"):
                out.append(dict(group=group, name=f"torch {fmt} (fused)", setup=ADAM_SETUPS["torch"].format(
                    fmt=fmt, threads=1), needs="torch"))
        out.append(dict(group=group, name="numpy float32", setup=ADAM_SETUPS["numpy"].format(fmt="float32")))
    return out


def available(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def time_row(row: dict, calls: int, warmup: int) -> float:
    code = HARNESS.format(setup=row["setup"], calls=calls, warmup=warmup)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900)
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
    print("| | ms | precision ÷ this | ÷ precision float32 |")
    print("|---|---|---|---|")
    group = None
    for row in table:
        if row["group"] != group:
            group = row["group"]
            print(f"| **{group}** | | | |")
        ms = statistics.median(times[id(row)])
        fmt = row["name"].split()[1]
        ours = next((statistics.median(times[id(r)]) for r in table if r["group"] == group
                     and r["name"] == f"precision {fmt}"), None)
        f32 = next((statistics.median(times[id(r)]) for r in table if r["group"] == group
                    and r["name"] == "precision float32"), None)
        if not row["name"].startswith("precision"):
            ratio = f"{ours / ms:.2f}" if ours is not None else ""
            cost = ""
        else:
            ratio = ""
            cost = f"{ms / f32:.2f}" if f32 and fmt not in ("float32", "float64") else ""
        print(f"| {row['name']} | {ms:.1f} | {ratio} | {cost} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
