"""The refinement check's a-priori stage for float32 arithmetic (kernels/losses_refine.h,
losses_cancels_f32), evaluated in float.

For float32 arithmetic with 16-bit storage the stage runs on every row (in the blocks on every
lane), so it is written as a float test whose constants are rounded outward from the row's
doubles (the header comment proves the claim tested here).  Over generated gradients and
targets -- random, cancelling to every depth, subnormal, zero, with every batch size and both
16-bit storage formats:

* rigour: an entry the test leaves unflagged has the exact bound
  E = c u (|g| + (2/N) |t|) + abs_err within u_S/8 |g| or eta_S/8 (exact rational arithmetic);
* the emulated twin (precision.exact.losses) replays the decision, and every build gives it;
* the test is monotone in c u, so the stage with the row's own Z flags only rows that the stage
  with Z at its cap flags too (the blocks rely on it to skip the latter).
"""
from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st

import precision as pr
from precision._kernels import load, variants
from precision.exact.losses import EmulatedLosses, refine_cancel_cu

K = load("losses")
ZCAP = 104.0


def entries(rng, kind, n, batch):
    """(g, t) as float32 arrays: gradient entries (already divided by the batch) and targets."""
    t = rng.dirichlet(np.ones(n)).astype(np.float32)
    if kind == "random":
        g = (rng.uniform(-1, 1, n) / batch).astype(np.float32)
    elif kind == "cancel":      # |g| a relative 2^-k of t (and of each other's scale)
        depth = rng.integers(3, 30, n)
        g = (t * rng.choice([-1.0, 1.0], n) * 2.0 ** -depth.astype(float) / batch).astype(np.float32)
    elif kind == "subnormal":   # gradients near float32's and the 16-bit formats' subnormals
        g = (rng.integers(-40, 40, n) * 2.0 ** rng.integers(-149, -120, n)).astype(np.float32)
        t = np.where(rng.random(n) < 0.5, t, np.float32(2.0 ** -140)).astype(np.float32)
    else:                       # zeros in either
        g = (rng.uniform(-1, 1, n) / batch).astype(np.float32)
        g[rng.random(n) < 0.4] = 0
        t[rng.random(n) < 0.4] = 0
    return g, t


@settings(deadline=None)
@given(storage=st.sampled_from(["float16", "bfloat16"]),
       n=st.integers(1, 150),
       z=st.floats(0, 200, width=32),
       c=st.integers(10, 60),
       batch=st.sampled_from([1.0, 3.0, 48.0, 4096.0, 65536.0, 1e6]),
       T=st.floats(0, 3, width=32),
       kind=st.sampled_from(["random", "cancel", "subnormal", "zeros"]),
       seed=st.integers(0, 2**32 - 1))
def test_float32_stage_is_rigorous_replayed_and_monotone(storage, n, z, c, batch, T, kind, seed):
    S = pr.format(storage)
    us8, etas8 = 2.0 ** -S.p / 8, float(S.smallest_subnormal) / 8
    rng = np.random.default_rng(seed)
    g, t = entries(rng, kind, n, batch)
    cu = (2.0 * min(float(z), ZCAP) + c) * 2.0 ** -24         # c u_A, exact in double
    two_inv, abs_err = 2.0 / batch, (4.0 * float(T) + 5.0) * 2.0 ** -149

    def kernel(module, cu_, lo=0, hi=n):
        return module.cancels_float32(g[lo:hi].copy(), t[lo:hi].copy(), cu_, two_inv, abs_err,
                                      us8, etas8)

    flag = kernel(K, cu)
    for module in variants("losses").values():
        assert kernel(module, cu) == flag
    twin = EmulatedLosses._cancels_f32(g.tolist(), t.tolist(), two_inv, abs_err, us8, etas8)
    assert twin(cu) == flag
    # monotone in c u: the cap's constant flags whatever this one flags
    cap = refine_cancel_cu(-ZCAP, ZCAP, n, 2.0 ** -24)
    if flag and cap >= cu:
        assert kernel(K, cap)
    # rigour, entry by entry
    N2, CU, AE = Fraction(2) / Fraction(batch), Fraction(cu), Fraction(abs_err)
    for j in range(n):
        if kernel(K, cu, j, j + 1):
            continue
        G, M = abs(Fraction(float(g[j]))), abs(Fraction(float(t[j])))
        E = CU * (G + N2 * M) + AE
        assert E <= Fraction(us8) * G or E <= Fraction(etas8), (j, float(g[j]), float(t[j]))


def test_the_float32_stage_flags_cancellation_and_clears_the_rest():
    """The stage is not vacuous: an entry cancelling to 2^-20 of its target flags, one that does
    not cancel is cleared (bfloat16 storage, c = 39, batch 65536: the benchmark's rows)."""
    us8, etas8 = 2.0 ** -11, 2.0 ** -136
    cu, two_inv, abs_err = 39 * 2.0 ** -24, 2.0 / 65536, 9 * 2.0 ** -149
    t = np.array([0.25], np.float32)
    for rel, want in ((2.0 ** -20, 1), (0.5, 0)):
        g = np.array([0.25 * rel / 65536], np.float32)
        assert K.cancels_float32(g, t, cu, two_inv, abs_err, us8, etas8) == want
