"""precision.stats: every reduction is bit-identical to its op-by-op replay
(precision.exact.stats.emulated_*), in every policy, order, method and layout; independent of
the thread count and of the build; and close to the exact value where theory says so."""
import warnings
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import precision as pr
from precision import stats
from precision._kernels import variants
from precision.exact import stats as es
from tests.helpers import same_bits

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")

POLICIES = [("float16", "float16"), ("float16", "float32"), ("float16", "float64"),
            ("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("bfloat16", "float64"),
            ("float32", "float32"), ("float32", "float64"), ("float64", "float64")]
IDS = [f"{s}-{a}" for s, a in POLICIES]
# (shape, axis): the batch-norm layouts (both kernel paths), a middle axis, a non-consecutive
# kept set (the transposed copy), a full reduction, leaves that straddle segments
LAYOUTS = [((37, 9), 0), ((5, 3), 0), ((3, 4, 5, 6), (0, 2, 3)), ((2, 3, 7), 1),
           ((3, 5, 4), (0, 2)), ((300,), None), ((2, 3), None), ((131, 2, 3), (0, 2))]


def _same(a, b):
    assert np.all(same_bits(np.atleast_1d(a), np.atleast_1d(b))), (a, b)


def special_array(draw, fmt, shape):
    """Values of fmt with extremes, subnormals, zeros of both signs, ties and cancellation."""
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "offset", "wide", "special", "subnormal", "ints"]))
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    if kind == "normal":
        v = rng.standard_normal(size)
    elif kind == "offset":      # sigma/|mu| small: one-pass cancels
        v = 1000.0 + rng.standard_normal(size) * 1e-2
    elif kind == "wide":
        v = rng.standard_normal(size) * 2.0 ** rng.integers(-30, 30, size)
    elif kind == "subnormal":
        v = rng.integers(-40, 40, size) * fmt.smallest_subnormal
    elif kind == "ints":        # exact halves: ties in every rounding
        v = rng.integers(-8, 8, size) * 0.5 + 2.0 ** (fmt.p - 1)
    else:
        pool = np.array([0.0, -0.0, 1.0, -1.0, fmt.max, -fmt.max, fmt.tiny,
                         fmt.smallest_subnormal, np.inf, -np.inf, np.nan, 3.0, 0.5])
        v = rng.choice(pool, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(fmt.round(v.astype(np.float64))).reshape(shape)


@st.composite
def cases(draw):
    s, a = draw(st.sampled_from(POLICIES))
    shape, axis = draw(st.sampled_from(LAYOUTS))
    x = special_array(draw, pr.format(s), shape)
    return x, axis, (None if a == s else a)


@given(cases(), st.sampled_from(stats.ORDERS))
def test_sum_and_mean_bit_identical_to_emulation(case, order):
    x, axis, accum = case
    _same(stats.sum(x, axis, order=order, accum=accum),
          es.emulated_sum(x, axis, order=order, accum=accum))
    _same(stats.mean(x, axis, order=order, accum=accum),
          es.emulated_mean(x, axis, order=order, accum=accum))


@given(cases(), st.sampled_from(stats.METHODS), st.sampled_from([None, "sequential", "kahan"]),
       st.sampled_from([0, 1]))
def test_moments_bit_identical_to_emulation(case, method, order, ddof):
    x, axis, accum = case
    if method == "welford":
        order = None
    n = es.sequences(x, axis)[0].shape[1]
    if ddof >= n:
        ddof = 0
    m, v = stats.moments(x, axis, method=method, order=order, accum=accum, ddof=ddof)
    em, ev, em2 = es.emulated_moments(x, axis, method=method, order=order, accum=accum, ddof=ddof)
    _same(m, em)
    _same(v, ev)
    _same(stats.var(x, axis, method=method, order=order, accum=accum, ddof=ddof), ev)
    count, pm, pm2 = stats.moment_parts(x, axis, method=method, order=order, accum=accum)
    assert count == n
    _same(pm2, es.emulated_moments(x, axis, method=method, order=order, accum=accum)[2])


@pytest.mark.parametrize("s,a", POLICIES, ids=IDS)
@pytest.mark.parametrize("order", stats.ORDERS)
def test_long_sequences_use_the_tree(s, a, order):
    """Many leaves (an odd count, so the last one moves up a level) in both kernel paths."""
    fmt = pr.format(s)
    rng = np.random.default_rng(7)
    x = np.asarray(fmt.round(rng.standard_normal((128 * 11 + 5, 8)) * 4 + 3))
    for xx, axis in ((x, 0), (x.T.copy(), 1), (x.reshape(-1, 2, 4), (0, 2))):
        _same(stats.sum(xx, axis, order=order, accum=a),
              es.emulated_sum(xx, axis, order=order, accum=a))
        _same(stats.var(xx, axis, order=order, accum=a),
              es.emulated_moments(xx, axis, order=order, accum=a)[1])


@given(st.sampled_from(POLICIES), st.lists(st.integers(1, 40), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_merge_moments_bit_identical_and_exact_pooling(policy, sizes, seed):
    s, a = policy
    fmt = pr.format(s)
    rng = np.random.default_rng(seed)
    shards = [np.asarray(fmt.round(rng.standard_normal((n, 3)) * 2 + 1)) for n in sizes]
    parts = [stats.moment_parts(sh, 0, accum=a) for sh in shards]
    n, m, m2 = stats.merge_moments(parts, accum=a)
    en, em, em2 = es.emulated_merge_moments(parts, accum=a)
    assert n == en == sum(sizes)
    _same(m, em)
    _same(m2, em2)
    # the exact pooling of exact parts is the exact moments of the union (Chan's identity)
    exact_parts = []
    for sh in shards:
        mean, var = es.moments(sh, 0)
        exact_parts.append((sh.shape[0], mean, var * sh.shape[0]))
    _, pm, pm2 = es.merge_moments(exact_parts)
    union = np.concatenate(shards)
    um, uv = es.moments(union, 0)
    assert list(pm) == list(um)
    assert list(pm2) == [v * union.shape[0] for v in uv]


@pytest.mark.parametrize("s,a", POLICIES, ids=IDS)
def test_thread_count_does_not_change_bits(s, a):
    fmt = pr.format(s)
    rng = np.random.default_rng(3)
    x = np.asarray(fmt.round(rng.standard_normal((700, 1100)) + 2))   # 3 column blocks
    y = x.reshape(70, 10, 11, 100)
    for xx, axis in ((x, 0), (y, (0, 2, 3))):
        for method in stats.METHODS:
            ref = stats.moments(xx, axis, method=method, accum=a, num_threads=1)
            for nt in (2, 3, 7):
                got = stats.moments(xx, axis, method=method, accum=a, num_threads=nt)
                _same(got[0], ref[0])
                _same(got[1], ref[1])


@pytest.mark.parametrize("s,a", POLICIES, ids=IDS)
def test_builds_compute_the_same_bits(s, a):
    builds = variants("stats")
    fmt = pr.format(s)
    rng = np.random.default_rng(4)
    x = np.asarray(fmt.round(rng.standard_normal((300, 40)) * 3 + 1))
    x.reshape(-1)[::37] = fmt.round(np.float64(fmt.smallest_subnormal))
    layout = stats.Layout(x, 0)
    A = pr.format(a)
    ref = None
    for suffix, mod in builds.items():
        got = []
        for kind in ("x", "sq", "dev2"):
            for order in stats.ORDERS:
                out = np.empty(40, dtype=stats.compute_dtype(A))
                centre = np.full(40, 0.5, dtype=stats.compute_dtype(A))
                fn = getattr(mod, f"reduce_{fmt.short}_{A.short}")
                xv = stats.kernel_view(layout.flat)
                fn(xv, xv, layout.A, layout.K, layout.B, mod.TERMS[kind], mod.ORDERS[order],
                   centre, out, 2)
                got.append(out)
        if ref is None:
            ref = got
        else:
            for r, g in zip(ref, got):
                _same(r, g)


# --------------------------------------------------------------------------- facts
def test_sequential_float16_mean_stagnates_pairwise_does_not():
    """DESIGN.md 3.4: a sequential float16 mean of 4096 values of about 8.77 comes out 8.0."""
    x = np.full(4096, 8.77, dtype=np.float16)
    assert float(stats.mean(x, order="sequential")) == 8.0
    exact = float(pr.float16.round(es.mean(x)))
    # pairwise: 16 additions per lane, 3 to combine lanes, 5 tree levels, then the division:
    # |error| <= 25 u |mean| (Higham 2002, 4.2)
    assert abs(float(stats.mean(x)) - exact) <= 25 * pr.float16.u * exact
    assert float(stats.mean(x, order="kahan")) == exact


def test_bfloat16_sum_of_ones_stalls_at_256_sequentially():
    ones = np.ones(4096, dtype=ml_dtypes.bfloat16)
    assert float(stats.sum(ones, order="sequential")) == 256.0
    assert float(stats.sum(ones)) == 4096.0


def test_float16_sum_of_squares_overflows_in_one_pass():
    x = np.full((4096, 2), 4.0, dtype=np.float16)
    v = stats.var(x, 0, method="one-pass")
    assert np.all(v.astype(np.float64) == np.inf)      # Q = inf, inf / n - 16 = inf
    assert np.all(stats.var(x, 0, method="one-pass", accum="float32") == 0)
    assert np.all(stats.var(x, 0) == 0)


@pytest.mark.parametrize("s", ["float16", "bfloat16", "float32", "float64"])
def test_wide_accumulation_is_within_one_ulp_of_exact(s):
    """With A = float64 the mean and the two-pass variance of well-conditioned data are the
    exact values rounded twice (to A, then S): within 1 ulp of S."""
    fmt = pr.format(s)
    rng = np.random.default_rng(11)
    x = np.asarray(fmt.round(rng.standard_normal((200, 4)) + 0.5))
    em, ev = es.moments(x, 0, ddof=1)
    m, v = stats.moments(x, 0, ddof=1, accum="float64")
    for got, exact in ((m, em), (v, ev)):
        ref = np.array([float(e) for e in exact])
        err = np.abs(got.astype(np.float64) - ref) / fmt.ulp(ref)
        assert np.all(err <= 1.0), err


def test_one_pass_goes_negative_where_two_pass_does_not():
    """sigma/mu = 1e-4 in float32 (training-statistics.md A): E[x^2] - E[x]^2 cancels."""
    rng = np.random.default_rng(5)
    x = (1.0 + 1e-4 * rng.standard_normal((1024, 200))).astype(np.float32)
    one = stats.var(x, 0, method="one-pass", order="sequential")
    two = stats.var(x, 0)
    assert np.any(one < 0)
    assert np.all(two > 0)


def test_n_not_exact_in_the_arithmetic_warns():
    x = np.ones(257, dtype=ml_dtypes.bfloat16)
    with pytest.warns(pr.PrecisionWarning, match="count 257"):
        stats.mean(x)


def test_results_shapes_keepdims_and_out():
    x = np.ones((4, 3, 2, 5), dtype=np.float32)
    assert stats.mean(x, (0, 2, 3)).shape == (3,)
    assert stats.mean(x, (0, 2, 3), keepdims=True).shape == (1, 3, 1, 1)
    assert np.ndim(stats.sum(x)) == 0
    out = np.empty(3, np.float32)
    assert stats.var(x, (0, 2, 3), out=out) is out
    assert np.all(out == 0)
    assert stats.sum(np.ones((0, 3), np.float32), 0).tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, error", [
    (lambda: stats.sum(np.ones(3, dtype=bool)), TypeError),
    (lambda: stats.sum(np.ones(3, dtype=np.int32)), TypeError),
    (lambda: stats.sum(np.ones((2, 3), np.float32), axis=2), ValueError),
    (lambda: stats.sum(np.ones((2, 3), np.float32), axis=(0, 0)), ValueError),
    (lambda: stats.sum(np.ones((2, 3), np.float32), axis=1.0), TypeError),
    (lambda: stats.sum(np.ones(3, np.float32), order="tree"), ValueError),
    (lambda: stats.var(np.ones(3, np.float32), method="naive"), ValueError),
    (lambda: stats.var(np.ones(3, np.float32), method="welford", order="pairwise"), ValueError),
    (lambda: stats.var(np.ones(3, np.float32), ddof=3), ValueError),
    (lambda: stats.var(np.ones(3, np.float32), ddof=-1), ValueError),
    (lambda: stats.var(np.ones(3, np.float32), ddof="1"), TypeError),
    (lambda: stats.mean(np.ones((0, 3), np.float32), 0), ValueError),
    (lambda: stats.sum(np.ones(3, np.float32), num_threads=0), ValueError),
    (lambda: stats.sum(np.ones(3, np.float32), num_threads=257), ValueError),
    (lambda: stats.sum(np.ones(3, np.float32), num_threads=True), TypeError),
    (lambda: stats.sum(np.ones(3, np.float32), accum="float16"), ValueError),
    (lambda: stats.sum(np.ones((2, 3), np.float32), 0, out=np.empty(3, np.float64)), TypeError),
    (lambda: stats.sum(np.ones((2, 3), np.float32), 0, out=np.empty(2, np.float32)), ValueError),
    (lambda: stats.merge_moments([]), ValueError),
    (lambda: stats.merge_moments([(0, np.float32(1), np.float32(0))]), ValueError),
    (lambda: stats.merge_moments([(1, np.float32(1), np.float32(0)),
                                  (1, np.float64(1), np.float64(0))]), TypeError),
    (lambda: stats.merge_moments([(1, np.ones(2, np.float32), np.ones(2, np.float32)),
                                  (1, np.ones(3, np.float32), np.ones(3, np.float32))]),
     ValueError),
])
def test_bad_input_is_rejected(call, error):
    with pytest.raises(error):
        call()


def test_read_only_or_overlapping_out_is_rejected_before_writing():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.zeros(3, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        stats.sum(x, 0, out=out)
    with pytest.raises(ValueError, match="overlaps"):
        stats.sum(x, 0, out=x[0])
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]
