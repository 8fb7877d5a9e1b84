"""precision.batchnorm: the layer, its gradients and the running statistics are bit-identical to
their op-by-op replays (precision.exact.batchnorm.emulated_*) in every policy; close to the exact
values where theory says; the running-buffer facts of training-statistics.md hold exactly."""
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

import precision as pr
from precision import batchnorm as bn
from precision import stats
from precision._kernels import variants
from precision.exact import batchnorm as ebn
from precision.exact import stats as es
from tests.helpers import same_bits
from tests.test_stats import IDS, POLICIES, special_array

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")
SHAPES = [((6, 3), 1), ((4, 3, 2, 5), 1), ((140, 2), 1), ((3, 2, 4), -1), ((2, 3, 1, 1), 1)]


def _same(a, b):
    assert np.all(same_bits(np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b)))), (a, b)


@st.composite
def layer_cases(draw):
    s, a = draw(st.sampled_from(POLICIES))
    fmt = pr.format(s)
    shape, axis = draw(st.sampled_from(SHAPES))
    c = shape[axis]
    x = special_array(draw, fmt, shape)
    dy = special_array(draw, fmt, shape)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    w = np.asarray(fmt.round(rng.standard_normal(c)))
    b = np.asarray(fmt.round(rng.standard_normal(c)))
    return x, dy, w, b, axis, (None if a == s else a)


@given(layer_cases(), st.booleans(), st.sampled_from(stats.METHODS))
def test_forward_and_backward_bit_identical_to_emulation(case, affine, method):
    x, dy, w, b, axis, accum = case
    W, B = (w, b) if affine else (None, None)
    y, m, s = bn.batch_norm(x, W, B, channel_axis=axis, method=method, accum=accum,
                            return_saved=True)
    ey, em, esd = ebn.emulated_batch_norm(x, W, B, channel_axis=axis, method=method,
                                          accum=accum)
    _same(y, ey)
    _same(m.astype(np.float64), em)
    _same(s.astype(np.float64), esd)
    for training in (True, False):
        got = bn.batch_norm_backward(dy, x, W, mean=m, invstd=s, training=training,
                                     channel_axis=axis, accum=accum)
        exp = ebn.emulated_batch_norm_backward(dy, x, W, mean=m, invstd=s, training=training,
                                               channel_axis=axis, accum=accum)
        for g, e in zip(got, exp):
            assert (g is None) == (e is None)
            if g is not None:
                _same(g, e)


@given(st.sampled_from(POLICIES), st.sampled_from(bn.CONVENTIONS), st.booleans(),
       st.integers(0, 2**32 - 1), st.integers(2, 9))
def test_running_update_bit_identical_to_emulation(policy, convention, cumulative, seed, count):
    s, a = policy
    if cumulative and convention not in ("torch", "cudnn"):
        cumulative = False
    momentum = None if cumulative else {"torch": 0.1, "keras": 0.99, "flax": 0.9,
                                        "cudnn": 0.05}[convention]
    rs = bn.RunningStats(4, convention=convention, momentum=momentum, state_format=s, accum=a)
    rng = np.random.default_rng(seed)
    fmt = pr.format(a)       # batch statistics as computed in A
    for _ in range(3):
        bm = np.asarray(fmt.round(rng.standard_normal(4) * 3))
        bv = np.asarray(fmt.round(rng.standard_normal(4) * 2))     # negatives: flax's clamp
        before = rs.mean.copy(), rs.var.copy(), rs.num_batches_tracked
        rs.update(bm, bv, count)
        em, ev = ebn.emulated_update(before[0], before[1], bm, bv, count, convention=convention,
                                     momentum=momentum, num_batches_tracked=before[2],
                                     state_format=s, accum=a)
        _same(rs.mean, em)
        _same(rs.var, ev)
    assert rs.num_batches_tracked == 3


@pytest.mark.parametrize("convention", ["torch", "cudnn"])
def test_cumulative_average_is_ioffe_szegedy_algorithm_2(convention):
    """momentum=None over K equal batches = Alg. 2 (mean of means, m/(m-1) mean of variances);
    float64 buffers stay within 2 K u max|x| of it (training-statistics.md A, check 2)."""
    rng = np.random.default_rng(2)
    m, k = 8, 50
    batches = [rng.standard_normal((m, 3)) * 2 + 1 for _ in range(k)]
    rs = bn.RunningStats(3, convention=convention, momentum=None, state_format="float64")
    means, variances = [], []
    for xb in batches:
        mb, vb = stats.moments(xb, 0)
        rs.update(mb, vb, m)
        means.append(mb)
        variances.append(vb)
    em, ev = bn.inference_stats(np.array(means), np.array(variances), m)
    bound = 2 * k * pr.float64.u * max(np.abs(np.array(batches)).max(), 1)
    assert np.all(np.abs(rs.mean - em) <= bound)
    assert np.all(np.abs(rs.var - ev) <= bound * 10)
    xm, xv = ebn.running_stats(np.array(means), np.array(variances), m, convention=convention,
                               momentum=None)
    assert [float(v) for v in xm] == pytest.approx(list(em), rel=1e-15)


@pytest.mark.parametrize("store, alpha, value, updates", [
    ("bfloat16", 0.1, 0.984375, 37), ("bfloat16", 0.01, 0.8046875, 146),
    ("float16", 0.1, 0.998046875, 57), ("float16", 0.01, 0.9755859375, 358)])
def test_low_precision_running_mean_freezes_where_the_reference_says(store, alpha, value,
                                                                     updates):
    """training-statistics.md A, EMA stall table (float32 arithmetic, stored in the format,
    from 0 toward 1.0, alpha the weight of the new value)."""
    rs = bn.RunningStats(1, momentum=alpha, state_format=store, accum="float32")
    history = []
    for _ in range(updates + 50):
        rs.update(np.ones(1, np.float32), np.ones(1, np.float32), 4)
        history.append(float(rs.mean[0]))
    assert history[updates - 1] == value
    assert history[updates - 2] != value
    assert set(history[updates - 1:]) == {value}


def test_torch_and_keras_running_variances_differ_by_bessel_at_batch_2():
    torch_rs = bn.RunningStats(2, convention="torch", momentum=None, state_format="float64")
    keras_rs = bn.RunningStats(2, convention="keras", momentum=0.0, state_format="float64")
    x = np.array([[1.0, -3.0], [4.0, 2.0]])
    for rs in (torch_rs, keras_rs):
        bn.batch_norm(x, running=rs)
    assert np.all(torch_rs.var == 2 * keras_rs.var)


def test_batch_of_two_normalises_to_plus_minus_one():
    x = np.array([[3.0, -1.0], [5.0, 7.0]])
    y = bn.batch_norm(x, eps=0.0)
    assert np.all(np.abs(y) == 1.0)
    y_eps = bn.batch_norm(x, eps=1e-5)
    a_minus_b = np.abs(x[0] - x[1])
    expected = a_minus_b / np.sqrt(a_minus_b ** 2 + 4e-5)      # (a - b) / sqrt((a - b)^2 + 4 eps)
    assert np.allclose(np.abs(y_eps[0]), expected, rtol=1e-14)


@pytest.mark.parametrize("s", ["float32", "float64"])
def test_wide_arithmetic_is_close_to_exact(s):
    """A = float64 for float32 storage (and float64 itself): forward within 2 ulps of the
    exact layer, gradients within a few ulps unless they cancel (checked relative to the
    largest term)."""
    fmt = pr.format(s)
    rng = np.random.default_rng(9)
    x = np.asarray(fmt.round(rng.standard_normal((5, 3, 2, 2)) * 3 + 1))
    dy = np.asarray(fmt.round(rng.standard_normal(x.shape)))
    w = np.asarray(fmt.round(rng.standard_normal(3)))
    b = np.asarray(fmt.round(rng.standard_normal(3)))
    eps = float(fmt.round(1e-5))
    accum = "float64"
    y, m, sd = bn.batch_norm(x, w, b, eps=eps, accum=accum, return_saved=True)
    ey = ebn.batch_norm(x, w, b, eps=eps)
    ref = np.array([float(v) for v in ey.reshape(-1)]).reshape(x.shape)
    scale = np.abs(ref) + np.abs(np.repeat(b, 4)[None].reshape(1, 3, 2, 2))
    assert np.all(np.abs(y - ref) <= 4 * fmt.u * scale + 2 * fmt.ulp(ref))
    dx, dw, db = bn.batch_norm_backward(dy, x, w, mean=m, invstd=sd, accum=accum)
    edx, edw, edb = ebn.batch_norm_backward(dy, x, w, eps=eps)
    rdx = np.array([float(v) for v in edx.reshape(-1)]).reshape(x.shape)
    big = np.abs(dy).max() * np.abs(w).max() * float(np.max(sd)) * 4
    assert np.all(np.abs(dx - rdx) <= 64 * fmt.u * big + fmt.ulp(rdx))
    assert np.all(np.abs(db - np.array([float(v) for v in edb])) <= 2 * fmt.ulp(db) + 1e-300)


def test_population_and_inference_stats_are_exact():
    rng = np.random.default_rng(6)
    data = rng.standard_normal((64, 3)).astype(np.float32)
    m, v = bn.population_stats(data, 0)
    em, ev = es.moments(data, 0)
    assert list(m) == [float(pr.float64.round(e)) for e in em]
    assert list(v) == [float(pr.float64.round(e)) for e in ev]
    means = np.array([[1.0, 2.0], [3.0, 4.0]])
    variances = np.array([[1.0, 1.0], [3.0, 2.0]])
    im, iv = bn.inference_stats(means, variances, 4)
    assert im.tolist() == [2.0, 3.0]
    assert iv.tolist() == [float(Fraction(4, 3) * 2), float(Fraction(4, 3) * Fraction(3, 2))]


@pytest.mark.parametrize("s,a", POLICIES, ids=IDS)
def test_threads_and_builds_do_not_change_bits(s, a):
    fmt = pr.format(s)
    rng = np.random.default_rng(8)
    x = np.asarray(fmt.round(rng.standard_normal((40, 600)) + 1))
    x4 = x.reshape(40, 6, 10, 10)
    dy = np.asarray(fmt.round(rng.standard_normal(x.shape)))
    for xx, d in ((x, dy), (x4, dy.reshape(x4.shape))):
        ref = None
        for nt in (1, 2, 5):
            y, m, sd = bn.batch_norm(xx, accum=a, return_saved=True, num_threads=nt)
            dx = bn.batch_norm_backward(d, xx, mean=m, invstd=sd, accum=a, num_threads=nt)[0]
            if ref is None:
                ref = (y, dx)
            else:
                _same(y, ref[0])
                _same(dx, ref[1])
    A = pr.format(a)
    cd = stats.compute_dtype(A)
    layout = stats.Layout(x4, (0, 2, 3))
    outs = {}
    for suffix, mod in variants("stats").items():
        out = np.empty(x4.shape, dtype=fmt.dtype)
        vec = np.linspace(0.5, 1.5, 6).astype(cd)
        getattr(mod, f"bn_forward_{fmt.short}_{A.short}")(
            stats.kernel_view(layout.flat), layout.A, layout.K, layout.B, vec, vec, vec, vec,
            True, stats.kernel_view(out.reshape(-1)), 2)
        outs[suffix] = out
    for out in outs.values():
        _same(out, outs[""])


# --------------------------------------------------------------------------- bad input
X = np.ones((4, 3), np.float32)


@pytest.mark.parametrize("call, error", [
    (lambda: bn.batch_norm(np.ones(3, np.float32)), ValueError),
    (lambda: bn.batch_norm(X, np.ones(3, np.float64), np.ones(3, np.float64)), TypeError),
    (lambda: bn.batch_norm(X, np.ones(2, np.float32), np.ones(2, np.float32)), ValueError),
    (lambda: bn.batch_norm(X, np.ones(3, np.float32)), ValueError),
    (lambda: bn.batch_norm(X, training=False), ValueError),
    (lambda: bn.batch_norm(X, running=bn.RunningStats(4)), ValueError),
    (lambda: bn.batch_norm(X, running="stats"), TypeError),
    (lambda: bn.batch_norm(np.ones((1, 3), np.float32), running=bn.RunningStats(3)), ValueError),
    (lambda: bn.batch_norm(X, eps=-1.0), ValueError),
    (lambda: bn.batch_norm(X, eps=float("nan")), ValueError),
    (lambda: bn.batch_norm(X, channel_axis=2), ValueError),
    (lambda: bn.batch_norm(X, num_threads=0), ValueError),
    (lambda: bn.batch_norm(X, method="fast"), ValueError),
    (lambda: bn.batch_norm(X.astype(np.int32)), TypeError),
    (lambda: bn.batch_norm_backward(X, X.astype(np.float64), mean=np.zeros(3),
                                    invstd=np.ones(3)), TypeError),
    (lambda: bn.batch_norm_backward(X, X, mean=np.zeros(2), invstd=np.ones(3)), ValueError),
    (lambda: bn.batch_norm_backward(X[:2], X, mean=np.zeros(3), invstd=np.ones(3)), ValueError),
    (lambda: bn.RunningStats(0), ValueError),
    (lambda: bn.RunningStats(3, convention="mxnet"), ValueError),
    (lambda: bn.RunningStats(3, convention="keras", momentum=None), ValueError),
    (lambda: bn.RunningStats(3, momentum=1.5), ValueError),
    (lambda: bn.RunningStats(3, state_format="float32", accum="bfloat16"), ValueError),
    (lambda: bn.RunningStats(3).update(np.zeros(3), np.ones(3), 1), ValueError),
    (lambda: bn.RunningStats(3).update(np.zeros(2), np.ones(3), 4), ValueError),
    (lambda: bn.RunningStats(3).update(np.zeros(3), np.ones(3), 4.0), TypeError),
    (lambda: bn.inference_stats(np.zeros((2, 3)), np.zeros((2, 3)), 1), ValueError),
    (lambda: bn.inference_stats(np.zeros((2, 3)), np.zeros((3, 3)), 4), ValueError),
])
def test_bad_input_is_rejected(call, error):
    with pytest.raises(error):
        call()


def test_a_rejected_call_leaves_the_running_buffers_and_out_untouched():
    rs = bn.RunningStats(3)
    out = np.full(X.shape, 7.0, np.float32)
    with pytest.raises(ValueError):
        bn.batch_norm(X, running=rs, eps=-1.0, out=out)
    assert np.all(out == 7.0) and np.all(rs.mean == 0) and rs.num_batches_tracked == 0
    with pytest.raises(ValueError, match="overlaps"):
        bn.batch_norm(X, out=X)


def test_eps_that_vanishes_in_the_arithmetic_warns():
    with pytest.warns(pr.PrecisionWarning, match="eps"):
        bn.batch_norm(np.ones((4, 2), np.float16), eps=1e-8)
