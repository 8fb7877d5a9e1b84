"""The row-block path of softmax_cross_entropy (kernels/losses_block.h) against the row path.

For short rows (C <= the module's threshold) softmax_cross_entropy computes blocks of
LOSSES_BLOCK_ROWS rows at once, the row as the vector lane.  It must give the same bits as
the row code (which test_losses.py checks against the op-by-op emulation) on every input:
here the threshold is switched between the largest value (every short row in blocks) and 0
(the row code only) and every output compared bit for bit, over generated inputs in all nine
policies: soft and hard targets, label smoothing, reductions, with and without the gradient,
batch scalings (N = 1, a power of two, other N), N not a multiple of the block (the tail takes
the row code), strided and reversed rows, user buffers (targets validated before) and private
ones (validated in the kernel, also for bad targets: the same error), special logits (such a
block falls back to the row code), 1 and 2 threads, and every build against the others.
One test also compares the block path with the emulation directly.
"""
import contextlib
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precision as pr
from precision import losses
from precision._kernels import variants
from tests.losses_reference import (
    LOGIT_KINDS,
    SPECIAL_LOGIT_KINDS,
    TARGET_KINDS,
    exceeds_range,
    make_logits,
    make_targets,
)
from tests.test_losses import (FMT, K, POLICIES, POLICY_IDS, assert_refined_rows_within_one_ulp,
                               emulation)

ALL_SHORT_ROWS = 128          # LOSSES_BLOCK_MAX_C: the setter clamps to it
BLOCK_ROWS = 16               # LOSSES_BLOCK_ROWS


@contextlib.contextmanager
def block_threshold(c, module=K):
    """Every short row (C <= c) in blocks; c = 0: the row code only."""
    old = module.set_block_max_classes(c)
    try:
        yield
    finally:
        module.set_block_max_classes(old)


def raw_bits(a):
    """The bit patterns (NaN payloads included) of an array or scalar of a float format."""
    a = np.atleast_1d(np.asarray(a))
    return a.view(f"u{a.dtype.itemsize}").copy()


def both_paths(call):
    """call() with every short row in blocks and with the row code only: (blocked, rows)."""
    with block_threshold(ALL_SHORT_ROWS):
        blocked = call()
    with block_threshold(0):
        rows = call()
    return blocked, rows


def assert_same(blocked, rows):
    if isinstance(blocked, tuple):
        for b, r in zip(blocked, rows):
            assert_same(b, r)
        return
    np.testing.assert_array_equal(raw_bits(blocked), raw_bits(rows))


def quiet(fn):
    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pr.PrecisionWarning)
            with np.errstate(all="ignore"):
                return fn()
    return call


def test_thresholds_and_setter():
    assert set(K.BLOCK_MAX_CLASSES) == set(K.POLICY_NAMES)
    assert all(0 <= c <= ALL_SHORT_ROWS for c in K.BLOCK_MAX_CLASSES.values())
    assert K.set_block_max_classes(None) is None           # the defaults are in force
    with block_threshold(10**9):
        assert K.set_block_max_classes(None) == ALL_SHORT_ROWS   # clamped to one leaf
    with block_threshold(-5):
        assert K.set_block_max_classes(None) == 0
    assert K.set_block_max_classes(None) is None


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
def test_default_thresholds_give_the_row_path_bits(s, a):
    """The defaults as shipped, at C on both sides of the policy's threshold."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(5)
    top = K.BLOCK_MAX_CLASSES[f"{s}_{a}"]
    for c in {1, top, min(top + 1, ALL_SHORT_ROWS + 1)}:
        x = make_logits(rng, S, 2 * BLOCK_ROWS + 1, c, "normal")
        t = make_targets(rng, S, x.astype(np.float64), "dirichlet")
        def default():
            return losses.softmax_cross_entropy(x, t, return_grad=True, accum=A)
        with block_threshold(0):
            rows = quiet(default)()
        assert_same(quiet(default)(), rows)


@settings(deadline=None)
@given(policy=st.sampled_from(POLICIES),
       n=st.integers(1, 3 * BLOCK_ROWS + 5),
       c=st.integers(1, 40),
       logit_kind=st.sampled_from(LOGIT_KINDS + SPECIAL_LOGIT_KINDS),
       target_kind=st.sampled_from(TARGET_KINDS + ("labels",)),
       smoothing=st.sampled_from([0.0, 0.1, 0.3]),
       reduction=st.sampled_from(["mean", "sum", "none"]),
       grad=st.booleans(),
       layout=st.sampled_from(["contiguous", "every_other_row", "reversed", "user_buffers"]),
       threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_block_path_gives_the_row_path_bits(policy, n, c, logit_kind, target_kind, smoothing,
                                            reduction, grad, layout, threads, seed):
    s, a = policy
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(seed)
    rows_made = 2 * n if layout == "every_other_row" else n
    x = make_logits(rng, S, rows_made, c, logit_kind)
    if logit_kind == "specials":   # also blocks with no special value at all
        x[rng.random(rows_made) < 0.5] = S.round(rng.normal(size=c))
    if target_kind == "labels":
        targets = rng.integers(0, c, rows_made)
    else:
        with np.errstate(all="ignore"):
            targets = make_targets(rng, S, x.astype(np.float64), target_kind)
    if layout == "every_other_row":
        x, targets = x[::2], targets[::2]
    elif layout == "reversed":
        x, targets = x[::-1], targets[::-1]
    out = grad_out = None
    if layout == "user_buffers":   # soft targets are then checked before the kernel runs
        out = np.empty(n if reduction == "none" else (), S.dtype)
        grad_out = np.empty(x.shape, S.dtype) if grad else None

    def call():
        result = losses.softmax_cross_entropy(
            x, targets, reduction=reduction, return_grad=grad, label_smoothing=smoothing,
            accum=A, num_threads=threads, out=out, grad_out=grad_out)
        if out is None:
            return result
        return (out.copy(), grad_out.copy()) if grad else out.copy()

    assert_same(*both_paths(quiet(call)))


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("n", [1, 16, 64, 1024])          # batch scaling: 1, powers of 2
def test_batch_scalings(s, a, n):
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(n)
    x = make_logits(rng, S, n + 3, 10, "normal")         # and n + 3: neither 1 nor 2^k
    t = make_targets(rng, S, x.astype(np.float64), "dirichlet")
    y = rng.integers(0, 10, n + 3)
    for rows in (n, n + 3):
        for targets in (t[:rows], y[:rows]):
            for smoothing in (0.0, 0.1):
                def call():
                    return losses.softmax_cross_entropy(
                        x[:rows], targets, return_grad=True, accum=A, label_smoothing=smoothing)
                assert_same(*both_paths(quiet(call)))


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
def test_bad_soft_targets_give_the_same_error(s, a):
    """Targets validated inside the kernel (no user buffers): a bad row in a block is found
    and reported as the row code reports it (the first bad row, its reason)."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(7)
    x = make_logits(rng, S, 40, 6, "normal")
    good = make_targets(rng, S, x.astype(np.float64), "dirichlet")
    for row, bad in [(5, np.nan), (17, -0.25), (33, 2.0), (20, np.inf)]:
        t = good.copy()
        t[row, 3] = S.round(bad)
        t[35, 1] = S.round(-1.0)        # a later bad row: the first one is reported
        messages = []
        for c in (ALL_SHORT_ROWS, 0):
            with block_threshold(c), pytest.raises(ValueError) as err:
                losses.softmax_cross_entropy(x, t, return_grad=True, accum=A)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
        assert f"row {row}" in messages[0]


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("c,stride", [(10, 1), (1, 1), (7, 1), (8, 2), (17, 1), (33, -1)])
def test_every_build_gives_identical_bits_on_short_rows(s, a, c, stride):
    """Every build this CPU runs (SSE2, AVX2, AVX-512), block path on, against each other and
    each against its own row path; widths around the float32 tiles' 8-class transposes (their
    tails, one and several tiles) and rows every other one or reversed."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(11)
    n = 53
    x = make_logits(rng, S, 2 * n, c, "normal")[::stride][:n]
    x[40, c // 2] = S.round(np.inf)                      # one block falls back
    t = make_targets(rng, S, x.astype(np.float64), "sparse")
    labels = (np.arange(n) % c).astype(np.int64)
    sv = S.storage_view
    cdt = np.float64 if a == "f64" else np.float32
    fn = f"softmax_cross_entropy_{s}_{a}"
    results = {True: [], False: []}
    for module in variants("losses").values():
        for threshold in (ALL_SHORT_ROWS, 0):
            with block_threshold(threshold, module):
                for soft in (True, False):
                    loss = np.empty(n, S.dtype)
                    grad = np.empty(x.shape, S.dtype)
                    codes = np.zeros(n, np.uint8)
                    getattr(module, fn)(
                        sv(x), sv(t) if soft else None,
                        None if soft else labels,
                        True, 0.875, 0.0078125, K.REDUCTIONS["none"], 53.0, sv(loss),
                        np.empty(n, cdt), sv(grad), 2, codes, 1e-2)
                    results[soft].append((raw_bits(loss), raw_bits(grad), codes.copy()))
    for runs in results.values():
        for other in runs[1:]:
            for u, v in zip(runs[0], other):
                np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("labels", [False, True], ids=["soft", "hard"])
def test_block_path_against_the_emulation(s, a, labels):
    """Two blocks and a tail of 3 rows, every row through the op-by-op emulation."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(3)
    n, c = 2 * BLOCK_ROWS + 3, 7
    x = make_logits(rng, S, n, c, "normal")
    targets = (rng.integers(0, c, n) if labels
               else make_targets(rng, S, x.astype(np.float64), "dirichlet"))
    assert not exceeds_range(x, None, None, A, "none")
    em = emulation(a)
    with block_threshold(ALL_SHORT_ROWS), warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        loss, grad = losses.softmax_cross_entropy(x, targets, reduction="none", return_grad=True,
                                                  accum=A, label_smoothing=0.1)
        want_loss, want_grad = em.softmax_cross_entropy(x, targets, reduction="none",
                                                        label_smoothing=0.1, return_grad=True)
    np.testing.assert_array_equal(raw_bits(loss), raw_bits(want_loss))
    # rows the refinement recomputes (wider arithmetic) differ from the unrefined emulation by
    # design: the same rows as the emulation's check, each within 1 ulp of exact
    refined = np.array(em.refined_rows)
    kept = ~refined
    np.testing.assert_array_equal(raw_bits(grad[kept]), raw_bits(want_grad[kept]))
    if refined.any():
        assert_refined_rows_within_one_ulp(x, targets, "none", 0.1, grad, refined, S)


@pytest.mark.parametrize("s,a", [("f16", "f32"), ("bf16", "f32"), ("f32", "f64")],
                         ids=lambda v: str(v))
def test_blocks_refine_the_rows_the_row_code_refines(s, a):
    """Arithmetic one format wider, targets = the model's own softmax (every g_j cancels): the
    blocks run the row code's refinement check lane by lane and refine the same rows (the
    emulation says some are), so both paths give the same bits.  (float16/bfloat16 with float64
    arithmetic have 42+ bits to spare: nothing to refine here.)  Reduction "sum": divided by
    N = 48 the float16 gradient lies in float16's subnormal range, where float32's error is far
    below the half subnormal step the tight check asks for, and nothing would be refined."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(21)
    n, c = 3 * BLOCK_ROWS, 7
    x = make_logits(rng, S, n, c, "small")
    t = make_targets(rng, S, x.astype(np.float64), "softmax")
    em = emulation(a)
    outputs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        em.softmax_cross_entropy(x, t, reduction="sum", label_smoothing=0.1, return_grad=True)
        for threshold in (ALL_SHORT_ROWS, 0):
            with block_threshold(threshold):
                outputs.append(losses.softmax_cross_entropy(
                    x, t, reduction="sum", return_grad=True, accum=A, label_smoothing=0.1))
    assert any(em.refined_rows)
    for blocks, rows in zip(*outputs):
        np.testing.assert_array_equal(raw_bits(blocks), raw_bits(rows))


@settings(deadline=None)
@given(policy=st.sampled_from(POLICIES),
       n=st.integers(1, 3 * BLOCK_ROWS + 5),
       c=st.integers(1, 40),
       logit_kind=st.sampled_from(LOGIT_KINDS + SPECIAL_LOGIT_KINDS),
       fn=st.sampled_from(["softmax", "log_softmax", "logsumexp"]),
       layout=st.sampled_from(["contiguous", "every_other_row", "reversed", "user_buffer"]),
       threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_softmax_block_path_gives_the_row_path_bits(policy, n, c, logit_kind, fn, layout,
                                                    threads, seed):
    """softmax, log_softmax and logsumexp take the same row blocks (losses_softmax_block_*):
    the same bits as their row code, special logits (the block falls back), strided and
    reversed rows, a user's out= buffer, 1 and 2 threads."""
    s, a = policy
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(seed)
    rows_made = 2 * n if layout == "every_other_row" else n
    x = make_logits(rng, S, rows_made, c, logit_kind)
    if logit_kind == "specials":   # also blocks with no special value at all
        x[rng.random(rows_made) < 0.5] = S.round(rng.normal(size=c))
    if layout == "every_other_row":
        x = x[::2]
    elif layout == "reversed":
        x = x[::-1]
    out = None
    if layout == "user_buffer":
        out = np.empty(x.shape[:-1] if fn == "logsumexp" else x.shape, S.dtype)

    def call():
        result = getattr(losses, fn)(x, accum=A, num_threads=threads, out=out)
        return result if out is None else out.copy()

    assert_same(*both_paths(quiet(call)))


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_block_path_against_the_emulation(s, a, fn):
    """Two blocks and a tail of 3 rows of softmax / log_softmax / logsumexp, every row through
    the op-by-op emulation."""
    S, A = FMT[s], FMT[a]
    rng = np.random.default_rng(3)
    x = make_logits(rng, S, 2 * BLOCK_ROWS + 3, 9, "normal")
    with block_threshold(ALL_SHORT_ROWS):
        got = quiet(lambda: getattr(losses, fn)(x, accum=A))()
    em = emulation(a)
    want = quiet(lambda: getattr(em, fn)(x))()
    assert_same(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("s,a", POLICIES, ids=POLICY_IDS)
def test_every_build_gives_identical_softmax_bits_on_short_rows(s, a):
    """softmax, log_softmax and logsumexp: every build this CPU runs (SSE2, AVX2, AVX-512), block
    path on and off, the same bits."""
    S = FMT[s]
    rng = np.random.default_rng(12)
    n, c = 53, 10
    x = make_logits(rng, S, n, c, "normal")
    x[40, 2] = S.round(np.inf)                           # one block falls back
    sv = S.storage_view
    results = []
    for module in variants("losses").values():
        for threshold in (ALL_SHORT_ROWS, 0):
            with block_threshold(threshold, module):
                outs = []
                for log in (False, True):
                    out = np.empty(x.shape, S.dtype)
                    getattr(module, f"softmax_{s}_{a}")(sv(x), sv(out), log, 2)
                    outs.append(raw_bits(out))
                lse = np.empty(n, S.dtype)
                getattr(module, f"logsumexp_{s}_{a}")(sv(x), sv(lse), 2)
                outs.append(raw_bits(lse))
                results.append(outs)
    for other in results[1:]:
        for u, v in zip(results[0], other):
            np.testing.assert_array_equal(u, v)


@settings(deadline=None)
@given(s=st.sampled_from(["f16", "bf16"]),
       c=st.one_of(st.integers(2, 40), st.integers(100, 200)),
       scale=st.sampled_from([0.03, 0.3, 2.0, 8.0]),
       depth=st.integers(3, 24),
       smoothing=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**32 - 1))
def test_refinement_stages_agree_in_blocks_rows_and_emulation(s, c, scale, depth, smoothing,
                                                              reduction, seed):
    """float32 arithmetic with 16-bit storage: a row is refined iff the first stage with Z at
    its cap, the one with the row's own Z and the tight stage all flag it; the blocks evaluate
    that conjunction in another order than the row code.  Targets = the model's own softmax
    perturbed by a relative 2^-depth (so the cancellation in T p_j - t_j spans every stage's
    threshold): the blocks and the row code give the same bits, the rows the emulation keeps are
    its bits, the rows it refines are within 1 ulp of exact."""
    S = FMT[s]
    rng = np.random.default_rng(seed)
    n = 2 * BLOCK_ROWS + 1
    x = S.round(rng.standard_normal((n, c)) * scale)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = S.round(p * (1 + rng.uniform(-1, 1, (n, c)) * 2.0 ** -depth))
    em = emulation("f32")

    def call():
        return losses.softmax_cross_entropy(x, t, reduction=reduction, return_grad=True,
                                            label_smoothing=smoothing, accum="float32",
                                            target_tolerance=0.5)
    blocked, rows = both_paths(quiet(call))
    assert_same(blocked, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        want_loss, want_grad = em.softmax_cross_entropy(x, t, reduction=reduction,
                                                        label_smoothing=smoothing,
                                                        return_grad=True)
    loss, grad = rows
    np.testing.assert_array_equal(raw_bits(loss), raw_bits(want_loss))
    refined = np.array(em.refined_rows)
    np.testing.assert_array_equal(raw_bits(grad[~refined]), raw_bits(want_grad[~refined]))
    if refined.any():
        _, exact = pr.exact.softmax_cross_entropy(x, t, reduction=reduction, return_grad=True,
                                                  label_smoothing=smoothing)
        assert np.abs(pr.errors.ulp_error(grad[refined], exact[refined], S)).max() <= 1
