"""One benchmark row, timed in the fresh process that runs this module (used by compare.py).

    python -m tests.bench.timed '{"setup": "loss_torch", "n": 4096, "c": 1000, "fmt": "float32",
                                  "threads": 1, "calls": 15, "warmup": 3}'

prints the median time of the calls in ms. Each ``setup_*`` function imports only the library it
times, builds the data and returns the call to time, so a row's process holds nothing else;
torch's rows are in timed_torch.py, imported only by a torch row's process.
"""
import json
import sys
import time
import warnings

import numpy as np


def _loss_data(n, c):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, c), dtype=np.float32) * 2, rng.dirichlet(np.ones(c), size=n)


def setup_loss_precision(n, c, fmt, threads, accum=None):
    import precision as pr

    x64, t64 = _loss_data(n, c)
    x, t = pr.format(fmt).round(x64), pr.format(fmt).round(t64)
    return lambda: pr.softmax_cross_entropy(x, t, return_grad=True, accum=accum, num_threads=threads)


def setup_loss_numpy(n, c, fmt, threads=1):
    x64, t64 = _loss_data(n, c)
    x, t = x64.astype(fmt), t64.astype(fmt)

    def call():     # max shift, one exp, log of the row sums; loss and gradient from the same exps
        z = x - x.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = (t * (np.log(s) - z)).sum() / n
        grad = (e / s * t.sum(axis=1, keepdims=True) - t) / n
        return loss, grad
    return call


def _adam_data(fmt, n=10_000_000):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * 1e-2
    return p, g


def setup_adam_precision(fmt, threads, eps=1e-8, state=None):
    import precision as pr

    p, g = (pr.format(fmt).round(a) for a in _adam_data(fmt))
    opt = pr.optim.Adam(lr=1e-3, eps=eps, state_format=state, num_threads=threads)
    return lambda: opt.step(p, g)


def setup_adam_numpy(fmt, threads=1):
    p, g = (a.astype(fmt) for a in _adam_data(fmt))
    m, v, step = np.zeros_like(p), np.zeros_like(p), [0]

    def call():
        step[0] += 1
        t = step[0]
        m[...] = 0.9 * m + 0.1 * g
        v[...] = 0.999 * v + 0.001 * g * g
        p[...] -= (1e-3 / (1 - 0.9 ** t)) * m / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return call


def main(spec: dict) -> float:
    spec = dict(spec)
    name = spec.pop("setup")
    if name.endswith("_torch"):     # torch's rows live in a module of their own
        from tests.bench import timed_torch
        setup = getattr(timed_torch, f"setup_{name}")
    else:
        setup = globals()[f"setup_{name}"]
    calls, warmup = spec.pop("calls"), spec.pop("warmup")
    warnings.simplefilter("ignore")
    call = setup(**spec)
    # a peer's import changes the process (torch's allocator and threads slow numpy's large
    # temporaries): only the row that times a library may have imported it
    for library in ("torch", "jax", "precision"):
        if library in sys.modules and library not in name:
            raise RuntimeError(f"row {name!r} runs in a process that imported {library}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
