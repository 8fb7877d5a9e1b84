"""Issue #17 item 6: nearly tied logits with targets that cancel the first-order term.

The refinement's last level (double-double, kernels/losses_refine.h) used to compute only
g_j = T p_j - t'_j from terms accurate to about 2^-100 relative: when the logits are nearly but
not exactly tied (differences below ~2^-60, e.g. subnormal ones) and the targets cancel the
first-order term (T / n = t'_j: uniform targets, with or without label smoothing), the true
gradient is far below that rounding error, and in formats whose subnormals reach below it
(bfloat16, float32) the stored entry was the rounding error, millions of ulps off.  Level 2 now
also has the tie form g_j = [(T - m t'_j) + (T f_j - t'_j F)] / (m + F), f_i = expm1(z_i),
whose rational part is exact, and keeps for each entry the form with the smaller running-error
bound; its check certifies each entry within 1/8 ulp before the final rounding.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import precision as pr
from precision._kernels import load

K = load("losses")

CASES = [
    # (storage, accum, logits, label_smoothing): the example first
    ("bfloat16", "float64", [0.0, 0.0, 2.0 ** -133], 0.1),
    ("bfloat16", "float32", [0.0, 0.0, 2.0 ** -133], 0.1),
    ("float32", "float64", [0.0, 0.0, 2.0 ** -133], 0.0),
    ("float32", "float64", [0.0, 0.0, 2.0 ** -100], 0.1),
]


@pytest.mark.parametrize("storage,accum,logits,smoothing", CASES)
def test_nearly_tied_logits_with_cancelling_targets_are_within_one_ulp(storage, accum, logits,
                                                                       smoothing):
    fmt = pr.format(storage)
    x = fmt.round(np.array([logits]))
    t = fmt.round(np.full((1, 3), 1.0 / 3))
    _, grad = pr.softmax_cross_entropy(x, t, reduction="sum", return_grad=True, accum=accum,
                                       label_smoothing=smoothing)
    _, exact = pr.exact.softmax_cross_entropy(x.astype(np.float64), t.astype(np.float64),
                                              reduction="sum", return_grad=True,
                                              label_smoothing=smoothing)
    assert np.abs(pr.errors.ulp_error(grad, exact, fmt)).max() <= 1


@pytest.mark.parametrize("storage,accum,logits,smoothing", CASES)
def test_level_two_certifies_the_nearly_tied_rows(storage, accum, logits, smoothing):
    """The double-double level's own check passes on these rows (its bound is below 1/8 ulp of
    S for every entry), so the stored gradient is within 1 ulp by the check, not by luck."""
    fmt = pr.format(storage)
    x = np.asarray(fmt.round(np.array(logits))).astype(fmt.dtype)
    t = np.asarray(fmt.round(np.full(3, 1.0 / 3))).astype(fmt.dtype)
    raw = (lambda v: v.view(np.uint16)) if fmt.bits == 16 else (lambda v: v)
    g = np.zeros(3, fmt.dtype)
    status = getattr(K, f"refine_row_double_double_{fmt.short}")(raw(x), raw(t), 0, smoothing,
                                                                 1.0, raw(g))
    assert status == 0


@settings(deadline=None)
@given(storage=st.sampled_from(["bfloat16", "float32", "float16"]),
       smoothing=st.sampled_from([0.0, 0.1, 0.3]),
       c=st.integers(2, 12), spread_exp=st.integers(-140, -20), seed=st.integers(0, 2**32 - 1),
       uniform=st.booleans())
def test_level_two_rows_it_certifies_are_within_one_ulp(storage, smoothing, c, spread_exp, seed,
                                                        uniform):
    """Nearly tied logits (differences around 2^spread_exp) with uniform or random targets: every
    row level 2's check certifies is within 1 ulp of the exact gradient (mpmath), and the
    uniform-target rows -- the tie form's case -- are always certified."""
    fmt = pr.format(storage)
    rng = np.random.default_rng(seed)
    base = 0.0 if rng.random() < 0.5 else float(fmt.round(np.array([rng.uniform(-4, 4)]))[0])
    with np.errstate(all="ignore"):
        x = np.asarray(fmt.round(base + rng.integers(-3, 4, c) * 2.0 ** spread_exp)).astype(fmt.dtype)
        t = np.full(c, 1.0 / c) if uniform else rng.dirichlet(np.ones(c))
        t = np.asarray(fmt.round(t)).astype(fmt.dtype)
    raw = (lambda v: v.view(np.uint16)) if fmt.bits == 16 else (lambda v: v)
    g = np.zeros(c, fmt.dtype)
    status = getattr(K, f"refine_row_double_double_{fmt.short}")(raw(x), raw(t), 0, smoothing,
                                                                 1.0, raw(g))
    if uniform and len(set(x.tolist())) <= 2:
        assert status == 0
    if status == 0:
        _, exact = pr.exact.softmax_cross_entropy(x[None].astype(np.float64),
                                                  t[None].astype(np.float64), reduction="sum",
                                                  return_grad=True, label_smoothing=smoothing,
                                                  dps=300)
        assert np.abs(pr.errors.ulp_error(g[None], exact, fmt)).max() <= 1
    if uniform and status != 0:
        # a row the tie form does not settle: its logit differences must nearly tie themselves
        assert len(set(x.tolist())) > 2


def test_double_double_expm1_against_mpmath():
    """The refinement's expm1 (losses_refine.h): relative error below 2^-96 (the bound level 2's
    check uses) on z <= 0, from subnormal z to -745, and exactly 0 at z = 0."""
    import mpmath

    rng = np.random.default_rng(11)
    hi = np.concatenate([-rng.uniform(0, 745, 200), -rng.uniform(0, 1, 300),
                         -np.exp(-rng.uniform(0, 700, 200)), [-0.5, -0.25, -2.0 ** -8, -5e-324]])
    lo = hi * 2.0 ** -60 * rng.uniform(-1, 1, hi.size)
    lo = np.where(np.abs(lo) <= np.spacing(np.abs(hi)) / 2, lo, 0.0)
    out_hi, out_lo = np.empty_like(hi), np.empty_like(hi)
    K.expm1_double_double(hi, lo, out_hi, out_lo)
    with mpmath.workprec(300):
        for h, l, oh, ol in zip(hi, lo, out_hi, out_lo):
            exact = mpmath.expm1(mpmath.mpf(h) + mpmath.mpf(l))
            err = abs(mpmath.mpf(oh) + mpmath.mpf(ol) - exact)
            assert err <= abs(exact) * mpmath.mpf(2) ** -96, (h, l)
    zero_hi, zero_lo = np.empty(1), np.empty(1)
    K.expm1_double_double(np.zeros(1), np.zeros(1), zero_hi, zero_lo)
    assert zero_hi[0] == 0 and zero_lo[0] == 0
