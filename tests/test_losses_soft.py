"""The three-pass soft-target rows (kernels/losses_soft.h) against the row code.

In the AVX2 and AVX-512 builds, softmax_cross_entropy with soft targets in float32, float16,
bfloat16 or float64 storage and arithmetic computes each row in three passes; the baseline build
runs the row code,
which test_losses.py checks against the op-by-op emulation.  The promise is the same bits: every
output (row losses, the reduced loss, the gradient, the target check's codes) of every build is
compared bit for bit with the baseline's (a NaN's sign and payload aside: where two NaNs meet,
the one an x86 operation returns depends on the operand order the compiler picked, in the row
code's builds as well), over generated rows: lengths across the 16-value
chunks and 128-value leaves, the max anywhere (ties, +-0 maxima, the tail chunk), NaN and
infinite logits (those rows take the row code), targets with zeros, negative, NaN or infinite
values and sums off by about the tolerance (where the sum T of the three passes hands the
decision to the row code's double sum; float64: T is a double sum in another order), label smoothing, every gradient scaling (none, the exact 1/N, / N), with
and without the gradient, with and without the check, one and two threads.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precision as pr
from precision._kernels import variants
from tests.helpers import buffer_at, same_bits
from tests.test_losses import K

FORMATS = {"f32": pr.float32, "f16": pr.float16, "bf16": pr.bfloat16, "f64": pr.float64}
COMPUTE = {16: np.float32, 32: np.float32, 64: np.float64}     # the row losses' type
BUILDS = variants("losses")
WIDE_BUILDS = {suffix: module for suffix, module in BUILDS.items() if suffix}

pytestmark = pytest.mark.skipif(not WIDE_BUILDS, reason="this CPU runs no AVX2 build")


def assert_same(mine, theirs):
    """The same bits (any NaN equal to any NaN); the check's codes equal."""
    for u, v in zip(mine, theirs):
        if u.dtype == np.uint8:
            np.testing.assert_array_equal(u, v)
        else:
            assert same_bits(u, v).all(), (u, v)


def gradient_buffer(shape, S, offset):
    """An array of S filled with 7, starting `offset` bytes past a multiple of 64 (float64 rows
    that start at a multiple of 64 are written with streaming stores, the others are not)."""
    g = buffer_at(shape, S.dtype, offset)
    g[...] = S.round(7.0)
    return g


def run(module, x, t, *, smooth, reduction, batch, grad, validate, tolerance, threads, offset=0,
        accum=None):
    """One call of the kernel of x's format (float32, float16, bfloat16 or float64 storage and
    arithmetic),
    its gradient into a buffer `offset` bytes past a multiple of 64."""
    n = x.shape[0]
    S = {pr.float16.dtype: pr.float16, pr.bfloat16.dtype: pr.bfloat16,
         pr.float64.dtype: pr.float64}.get(x.dtype, pr.float32)
    sv = S.storage_view
    loss = np.empty(n if reduction == "none" else 1, S.dtype)
    row_loss = np.empty(n, COMPUTE[S.bits])
    g = gradient_buffer(x.shape, S, offset) if grad else None
    codes = np.full(n, 99, np.uint8) if validate else None
    c1, c2 = (0.875, S.round(0.125 / x.shape[1])) if smooth else (1.0, 0.0)
    A = accum or S
    if accum is not None:
        row_loss = np.empty(n, COMPUTE[A.bits])
    getattr(module, f"softmax_cross_entropy_{S.short}_{A.short}")(
        sv(x), sv(t), None, smooth, c1, float(c2), K.REDUCTIONS[reduction], batch, sv(loss),
        row_loss, None if g is None else sv(g), threads, codes, tolerance,
        0.125 if smooth else 0.0)
    out = [np.atleast_1d(loss), row_loss]
    if grad:
        out.append(g)
    if validate:
        out.append(codes)
    return out


def logits(rng, n, c, kind, S=pr.float32):
    if kind == "normal":
        x = rng.standard_normal((n, c)) * 3
    elif kind == "ties":            # the max repeated, +0 and -0 maxima
        x = np.round(rng.standard_normal((n, c)))
        x[::3] = -np.abs(x[::3])
        x[1::3, rng.integers(0, c)] = -0.0
    elif kind == "wide":            # exps down to the subnormals and to 0; 16-bit: x - a overflows
        if S is pr.bfloat16:
            x = rng.uniform(-3e38, 3e38, (n, c))
        else:
            x = {16: lambda: rng.uniform(-65504, 65504, (n, c)),
                 32: lambda: rng.uniform(-120, 5, (n, c)),
                 64: lambda: rng.uniform(-800, 5, (n, c))}[S.bits]()
    else:                           # the max in the last (tail) chunk
        x = rng.standard_normal((n, c))
        x[:, -1] = 10
    return S.round(x)


def targets(rng, n, c, kind, tolerance, S=pr.float32):
    t = rng.dirichlet(np.full(c, 0.3), size=n)
    if kind == "zeros":
        t[rng.random((n, c)) < 0.5] = 0
        t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-300)
    if kind == "boundary":          # sums 1 +- tolerance, give or take a few ulps of the sum
        ulp = 2.0**-6 if S is pr.bfloat16 else {16: 2.0**-9, 32: 2.0**-22, 64: 2.0**-51}[S.bits]
        for r in range(n):
            target = 1 + rng.choice([-1, 1]) * tolerance * (1 + rng.integers(-4, 5) * ulp)
            t[r] = t[r] * (target / S.round(t[r]).astype(np.float64).sum())
    t = S.round(t)
    if kind == "bad":               # one bad value in some rows
        rows = rng.integers(0, n, max(1, n // 3))
        cols = rng.integers(0, c, rows.size)
        t[rows, cols] = S.round(rng.choice([np.nan, np.inf, -np.inf, -1e-3, -0.0, 3.0], rows.size))
    return t


@settings(deadline=None)
@given(fmt=st.sampled_from(sorted(FORMATS)), seed=st.integers(0, 2**32 - 1),
       c=st.one_of(st.integers(1, 40), st.integers(100, 300), st.sampled_from([128, 256, 1000])),
       n=st.integers(1, 6),
       logit_kind=st.sampled_from(["normal", "ties", "wide", "tail_max"]),
       target_kind=st.sampled_from(["dirichlet", "zeros", "bad", "boundary"]),
       smooth=st.booleans(),
       scaling=st.sampled_from([("mean", None), ("mean", 4.0), ("sum", 1.0), ("none", 1.0)]),
       grad=st.booleans(), validate=st.booleans(), threads=st.sampled_from([1, 2]),
       special=st.booleans(), offset=st.sampled_from([0, 8, 32]))
def test_every_build_gives_the_row_codes_bits(fmt, seed, c, n, logit_kind, target_kind, smooth,
                                              scaling, grad, validate, threads, special, offset):
    S = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    x = logits(rng, n, c, logit_kind, S)
    if special:                     # a NaN or infinite logit: that row takes the row code
        x[rng.integers(0, n), rng.integers(0, c)] = S.round(rng.choice([np.nan, np.inf, -np.inf]))
    tolerance = 2.0**-7
    t = targets(rng, n, c, target_kind, tolerance, S)
    reduction, batch = scaling
    batch = float(n) if batch is None else batch        # N = n: a power of two or not
    kw = dict(smooth=smooth, reduction=reduction, batch=batch, grad=grad, validate=validate,
              tolerance=tolerance, threads=threads, offset=offset)
    with np.errstate(all="ignore"):
        want = run(BUILDS[""], x, t, **kw)
        for module in WIDE_BUILDS.values():
            assert_same(run(module, x, t, **kw), want)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_float_sum_decides_only_far_from_the_tolerance(fmt):
    """Rows whose sum sits at 1 +- tolerance to within a few ulps (float32, float64: where the
    three passes' sum and the row code's double one can fall on different sides) get the row code's verdict:
    both codes occur, and every build agrees with the baseline on each row."""
    S = FORMATS[fmt]
    rng = np.random.default_rng(5)
    n, c, tolerance = 400, 333, 2.0**-9
    x = logits(rng, n, c, "normal", S)
    t = targets(rng, n, c, "boundary", tolerance, S)
    kw = dict(smooth=False, reduction="none", batch=1.0, grad=True, validate=True,
              tolerance=tolerance, threads=1)
    want = run(BUILDS[""], x, t, **kw)[-1]
    assert {0, 3} <= set(want.tolist())
    for module in WIDE_BUILDS.values():
        np.testing.assert_array_equal(run(module, x, t, **kw)[-1], want)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_nan_and_infinite_targets_give_the_row_codes_bits(fmt):
    """Targets with NaN and infinities, checked or not: float16 and bfloat16 hand such rows to
    the row code (its check finds them), float32 and float64 keep them; every output equals the baseline's (a
    NaN where it has a NaN) and so does every code of the check."""
    S = FORMATS[fmt]
    rng = np.random.default_rng(9)
    n, c = 12, 200
    x = logits(rng, n, c, "normal", S)
    t = targets(rng, n, c, "dirichlet", 2.0**-7, S)
    specials = S.round(np.array([np.nan, -np.nan, np.inf, -np.inf]))
    for r in range(n):
        t[r, rng.integers(0, c, 1 + r % 3)] = specials[r % 4]
    for smooth, validate in [(False, False), (True, False), (False, True), (True, True)]:
        kw = dict(smooth=smooth, reduction="none", batch=1.0, grad=True, validate=validate,
                  tolerance=2.0**-7, threads=1)
        with np.errstate(all="ignore"):
            want = run(BUILDS[""], x, t, **kw)
            for module in WIDE_BUILDS.values():
                assert_same(run(module, x, t, **kw), want)


@pytest.mark.parametrize("offset", [0, 8, 64 + 24])
def test_float64_gradient_rows_streamed_or_not_give_the_row_codes_bits(offset):
    """float64 gradient rows that start at a multiple of 64 bytes are written with streaming
    stores (kernels/losses_soft.h), the others with normal ones: with the buffer aligned, 8 or
    88 bytes off, and rows of 1000 doubles (every row aligned as the buffer), 37 and 200 (rows
    aligned in turn), every build writes the baseline's bits, the last row's tail and g_k too."""
    rng = np.random.default_rng(31 + offset)
    for c in (1000, 37, 200):
        x = logits(rng, 9, c, "normal", pr.float64)
        x[3, -1] = 50                           # a row whose max (g_k) is in the tail
        t = targets(rng, 9, c, "dirichlet", 2.0**-7, pr.float64)
        kw = dict(smooth=False, reduction="mean", batch=9.0, grad=True, validate=True,
                  tolerance=2.0**-7, threads=2, offset=offset)
        want = run(BUILDS[""], x, t, **kw)
        for module in WIDE_BUILDS.values():
            assert_same(run(module, x, t, **kw), want)


def test_the_api_allocates_gradients_at_a_multiple_of_64_bytes():
    """softmax_cross_entropy's own gradient arrays start at a multiple of 64 bytes (so float64 rows
    are streamed) and are ordinary C-contiguous writable arrays of the logits' shape and dtype."""
    rng = np.random.default_rng(2)
    for dtype in (np.float64, np.float32):
        x = rng.standard_normal((33, 70)).astype(dtype)
        t = rng.dirichlet(np.ones(70), size=33).astype(dtype)
        _, g = pr.softmax_cross_entropy(x, t, return_grad=True)
        assert g.ctypes.data % 64 == 0
        assert g.shape == x.shape and g.dtype == dtype and g.flags.c_contiguous and g.flags.writeable


@settings(deadline=None)
@given(fmt=st.sampled_from(["f16", "bf16"]), seed=st.integers(0, 2**32 - 1),
       c=st.one_of(st.integers(1, 40), st.integers(100, 300), st.sampled_from([128, 1000])),
       n=st.integers(1, 6), target_kind=st.sampled_from(["dirichlet", "zeros", "bad", "teacher"]),
       smooth=st.booleans(), scaling=st.sampled_from([("mean", None), ("mean", 4.0), ("sum", 1.0)]),
       validate=st.booleans(), threads=st.sampled_from([1, 2]), special=st.booleans())
def test_float32_arithmetic_on_16_bit_storage_gives_the_row_codes_bits(
        fmt, seed, c, n, target_kind, smooth, scaling, validate, threads, special):
    """accum="float32" with 16-bit storage: the three passes write the row in float32 to a
    scratch, then the row code's refinement check runs on it and the flagged rows are recomputed
    in double or double-double before the rounding into S.  Every output equals the baseline's
    (the row code), also for "teacher" targets (a rounded softmax of the logits: the gradient
    cancels, so rows get refined)."""
    S = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    x = logits(rng, n, c, "normal", S)
    if special:
        x[rng.integers(0, n), rng.integers(0, c)] = S.round(rng.choice([np.nan, np.inf, -np.inf]))
    tolerance = 2.0**-5
    if target_kind == "teacher":
        with np.errstate(all="ignore"):
            z = np.asarray(x, np.float64) * 0.999
            p = np.exp(z - np.nanmax(np.where(np.isfinite(z), z, -np.inf), axis=1, keepdims=True))
            t = S.round(np.nan_to_num(p / np.nansum(p, axis=1, keepdims=True)))
    else:
        t = targets(rng, n, c, target_kind, tolerance, S)
    reduction, batch = scaling
    batch = float(n) if batch is None else batch
    kw = dict(smooth=smooth, reduction=reduction, batch=batch, grad=True, validate=validate,
              tolerance=tolerance, threads=threads, accum=pr.float32)
    with np.errstate(all="ignore"):
        want = run(BUILDS[""], x, t, **kw)
        for module in WIDE_BUILDS.values():
            assert_same(run(module, x, t, **kw), want)
