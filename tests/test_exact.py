"""precision.exact (mpmath references): identities, independent high-precision formulas,
numerical derivatives, the cancellation guard, special values and input checks."""
import math

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import precision as pr
from precision import exact
from tests.test_formats import far_rounding, far_values

BF16 = ml_dtypes.bfloat16
mpf = mpmath.mpf


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def high_precision_references():
    """References written in these tests compute at 100 digits (the code under test sets its
    own precision; test_global_precision_is_irrelevant checks that it does)."""
    with mpmath.workdps(100):
        yield


def logits_arrays(max_rows=4, max_cols=12, dtype=np.float32, lo=-60.0, hi=60.0):
    return hnp.arrays(
        dtype, st.tuples(st.integers(1, max_rows), st.integers(1, max_cols)),
        elements=st.floats(lo, hi, width=32 if dtype == np.float32 else 64),
    )


def naive_lse(row, dps):
    """log Σ exp(x) written directly, at a (much) higher precision than the code under test."""
    with mpmath.workdps(dps):
        return mpmath.log(mpmath.fsum(mpmath.exp(mpf(float(v))) for v in row))


def rel_close(a, b, digits):
    """|a − b| <= 10^-digits · |b| (exact zero only equals zero)."""
    with mpmath.workdps(digits + 30):
        if b == 0:
            return a == 0
        return abs(mpf(a) - mpf(b)) <= mpf(10) ** -digits * abs(mpf(b))


def soft_targets(shape_strategy):
    """(N, C) float64 probability rows (normalised in float64, so Σ t is not exactly 1)."""
    return shape_strategy.flatmap(lambda shape: hnp.arrays(
        np.float64, shape, elements=st.floats(0, 1))).filter(
        lambda t: np.all(t.sum(axis=1) > 0)).map(lambda t: t / t.sum(axis=1, keepdims=True))


# ------------------------------------------------------------------------------ logsumexp / softmax
@given(logits_arrays())
def test_logsumexp_matches_naive_formula_at_higher_precision(x):
    lse = exact.logsumexp(x)
    assert lse.shape == (x.shape[0],)
    for row, value in zip(x, lse):
        assert rel_close(value, naive_lse(row, 120), 38)


@given(logits_arrays())
def test_softmax_sums_to_one_and_log_softmax_is_x_minus_lse(x):
    p = exact.softmax(x)
    lp = exact.log_softmax(x)
    lse = exact.logsumexp(x)
    assert p.shape == x.shape and lp.shape == x.shape and p.dtype == object
    with mpmath.workdps(80):
        for i in range(x.shape[0]):
            assert abs(mpmath.fsum(p[i]) - 1) < mpf(10) ** -45
            for j in range(x.shape[1]):
                # closed forms from the same exact lse, each to 45 digits
                assert rel_close(lp[i, j], mpf(float(x[i, j])) - lse[i], 45) or \
                    abs(lp[i, j] - (mpf(float(x[i, j])) - lse[i])) < mpf(10) ** -45
                assert rel_close(p[i, j], mpmath.exp(lp[i, j]), 45)


@given(logits_arrays(max_rows=3, max_cols=6, dtype=np.float64, lo=-800, hi=800))
def test_float64_roundings_do_not_depend_on_dps(x):
    # dps=40 is enough to round correctly to float64: a far higher dps gives the same floats
    for fn in (exact.softmax, exact.log_softmax, exact.logsumexp):
        assert np.array_equal(exact.to_float64(fn(x)), exact.to_float64(fn(x, dps=90)))


def test_log_softmax_of_a_dominant_logit_keeps_its_tiny_value():
    # lse(1000, 900) = 1000 + log1p(e^-100): at 40 digits a naive x - lse would give 0
    lp = exact.log_softmax(np.array([1000.0, 900.0]))
    with mpmath.workdps(100):
        expected = -mpmath.log1p(mpmath.exp(-100))
    assert rel_close(lp[0], expected, 38)
    assert float(lp[0]) != 0.0


def test_results_on_a_midpoint_plus_a_tiny_correction_round_the_right_way():
    # d = x1 - m is exactly a midpoint of the format and L = log1p(e^d) is far below any working
    # precision: only the sign of the correction decides the rounding (ties-to-even is wrong)
    x16 = np.array([100.0, -1000.5], dtype=np.float16)       # d = -1100.5: between -1100, -1101
    assert pr.float16.round(exact.log_softmax(x16))[1] == -1101.0
    x64 = np.array([1.0, -2.0 ** 53])                         # d = -(2^53 + 1)
    assert exact.to_float64(exact.log_softmax(x64))[1] == -(2.0 ** 53 + 2)
    # the loss -d + L (hard target 1) and its mean over identical rows
    rows = np.tile(x64, (3, 1))
    losses = exact.softmax_cross_entropy(rows, np.array([1, 1, 1]), reduction="none")
    assert list(exact.to_float64(losses)) == [2.0 ** 53 + 2] * 3
    assert exact.to_float64(exact.softmax_cross_entropy(rows, np.array([1, 1, 1]))) == 2.0 ** 53 + 2
    assert exact.to_float64(exact.softmax_cross_entropy(rows, np.array([1, 1, 1]), reduction="sum")) \
        == 3 * 2.0 ** 53 + 4   # 3 (2^53 + 1) + tiny: a midpoint between +2 and +4 (ulp 4), then up
    # the gradient -t_j + T p_j with a target that is a float16 midpoint
    t = np.array([[1.0 - (0.5 + 2.0 ** -12), 0.5 + 2.0 ** -12]])  # t_1 between 0.5 and 0.5 + 2^-11
    _, g = exact.softmax_cross_entropy(np.array([[0.0, -200.0]]), t, reduction="sum", return_grad=True)
    assert pr.float16.round(g)[0, 1] == -0.5   # -t_1 + e^-200: towards zero from the midpoint


def test_logsumexp_near_zero_is_accurate_relatively():
    # m + log1p(r) cancels: x = (a, a) with a = float64(-ln 2) gives lse = a + ln 2 ~ 2.3e-17
    a = -math.log(2)
    lse = exact.logsumexp(np.array([a, a]))
    with mpmath.workdps(100):
        expected = mpf(a) + mpmath.log(2)
    assert abs(expected) < 1e-16
    assert rel_close(lse, expected, 38)


def test_axis_and_shapes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    lse1 = exact.logsumexp(x, axis=1)
    assert lse1.shape == (2, 4)
    assert rel_close(lse1[1, 2], naive_lse(x[1, :, 2], 80), 38)
    p = exact.softmax(x, axis=0)
    assert p.shape == x.shape
    assert rel_close(p[1, 2, 3], mpmath.exp(mpf(float(x[1, 2, 3])) - exact.logsumexp(x[:, 2, 3])), 38)
    assert isinstance(exact.logsumexp(np.array([1.0, 2.0])), mpf)


def test_every_format_is_taken_exactly():
    # a bfloat16 / float16 / float32 array gives the same result as its exact float64 values
    x = np.array([[0.1, -3.3, 7.7]], dtype=np.float32)
    for dtype in (np.float16, BF16, np.float32):
        xd = x.astype(dtype)
        assert list(exact.log_softmax(xd)[0]) == list(exact.log_softmax(xd.astype(np.float64))[0])
    # object arrays of mpf are taken as they are
    obj = np.array([[mpf(1) / 3, mpf(2)]], dtype=object)
    with mpmath.workdps(80):
        expected = mpmath.log(mpmath.exp(mpf(1) / 3) + mpmath.exp(2))
    assert rel_close(exact.logsumexp(obj)[0], expected, 15)  # 1/3 itself has mpmath's default 15 digits


def test_results_round_with_the_format_objects():
    x = np.array([[0.5, 1.5, -2.0]], dtype=np.float16)
    p = exact.softmax(x)
    r16 = pr.float16.round(p)
    assert r16.dtype == np.float16
    assert np.array_equal(r16, exact.to_float64(p).astype(np.float16))  # f64 -> f16 is one rounding


@given(far=far_values())
def test_to_float64_rounds_values_of_any_magnitude(far):
    value, sign, _, top = far
    want = far_rounding(sign, top)
    got = exact.to_float64(np.array([value, value], dtype=object))
    assert np.array_equal(got, [want, want]) and np.all(np.signbit(got) == (sign < 0))
    assert exact.to_float64(value) == want


def test_softmax_of_logits_at_the_float64_extremes_rounds_in_every_format():
    """exp(x_i - m) for x at +-max is about 2^(-5e308): an mpf exponent beyond a C long."""
    big = np.finfo(np.float64).max
    x = np.array([[big, -big, 0.0], [-big, big, 5.0], [big, big, -big]])
    p = exact.softmax(x)
    lsm = exact.log_softmax(x)
    want_p = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]
    want_lsm = [[0.0, -math.inf, -big], [-math.inf, 0.0, -big], [-math.log(2), -math.log(2), -math.inf]]
    assert np.array_equal(exact.to_float64(p), want_p)
    assert np.array_equal(exact.to_float64(lsm), want_lsm)
    for fmt in pr.FORMATS:
        assert np.array_equal(fmt.round(p).astype(np.float64), want_p)
        assert np.array_equal(fmt.round(lsm), fmt.round(np.array(want_lsm)))
        assert pr.errors.compare(fmt.round(p), p, fmt).all_exact
        assert np.all(pr.errors.ulp_error(fmt.round(p), p, fmt) == 0.0)


# ------------------------------------------------------------------------------ special values
def test_special_values():
    nan, inf = math.nan, math.inf
    x = np.array([
        [1.0, nan, 2.0],
        [1.0, inf, 2.0],
        [-inf, -inf, -inf],
        [-inf, 0.0, 0.0],
    ])
    lse = exact.logsumexp(x)
    assert mpmath.isnan(lse[0]) and lse[1] == mpmath.inf and lse[2] == -mpmath.inf
    assert rel_close(lse[3], mpmath.log(2), 38)
    p, lp = exact.softmax(x), exact.log_softmax(x)
    assert all(mpmath.isnan(v) for v in p[0]) and all(mpmath.isnan(v) for v in lp[0])
    # +inf row: x - lse is -inf for finite x and NaN for the infinite one
    assert p[1, 0] == 0 and mpmath.isnan(p[1, 1]) and lp[1, 0] == -mpmath.inf and mpmath.isnan(lp[1, 1])
    assert all(mpmath.isnan(v) for v in p[2])
    assert p[3, 0] == 0 and p[3, 1] == mpf(1) / 2 and lp[3, 0] == -mpmath.inf
    # cross-entropy: a zero target leaves its term out, whatever the logit
    loss = exact.softmax_cross_entropy(x[3:], np.array([[0.0, 0.5, 0.5]]))
    assert rel_close(loss, mpmath.log(2), 38)
    loss = exact.softmax_cross_entropy(x[3:], np.array([0]), reduction="none")
    assert loss[0] == mpmath.inf
    loss, grad = exact.softmax_cross_entropy(x[3:], np.array([0]), return_grad=True)
    assert list(grad[0]) == [-1, mpf(1) / 2, mpf(1) / 2]
    assert mpmath.isnan(exact.softmax_cross_entropy(x[:1], np.array([0])))
    assert exact.entropy(np.array([0.0, 1.0])) == 0
    assert mpmath.isnan(exact.entropy(np.array([-0.5, 1.5])))
    assert mpmath.isnan(exact.kl_divergence(np.array([-0.5, 1.5]), np.array([0.0, 0.0])))
    assert exact.kl_divergence(np.array([1.0, 0.0]), np.array([0.0, -inf])) == 0
    assert exact.kl_divergence(np.array([0.5, 0.5]), np.array([0.0, -inf])) == mpmath.inf


# ------------------------------------------------------------------------------ cross-entropy
def naive_ce_and_grad(x, t, dps=150):
    """loss and gradient per row from the textbook formulas at high precision."""
    with mpmath.workdps(dps):
        xs = [mpf(float(v)) for v in x]
        ts = [mpf(float(v)) for v in t]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
        p = [mpmath.exp(v - lse) for v in xs]
        loss = -mpmath.fsum(ti * (xi - lse) for ti, xi in zip(ts, xs) if ti)
        total = mpmath.fsum(ts)
        grad = [total * pj - tj for pj, tj in zip(p, ts)]
    return loss, grad


@given(logits_arrays(max_rows=3, max_cols=8, lo=-30, hi=30), st.data())
def test_cross_entropy_and_gradient_match_textbook_formulas(x, data):
    n, c = x.shape
    hard = data.draw(st.booleans())
    if hard:
        targets = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
        soft = np.eye(c)[targets]
    else:
        targets = data.draw(soft_targets(st.just((n, c))))
        soft = targets
    losses, grad = exact.softmax_cross_entropy(x, targets, reduction="none", return_grad=True)
    for i in range(n):
        loss_ref, grad_ref = naive_ce_and_grad(x[i], soft[i])
        assert rel_close(losses[i], loss_ref, 38) or abs(losses[i] - loss_ref) < mpf(10) ** -60
        for j in range(c):
            assert rel_close(grad[i, j], grad_ref[j], 38) or abs(grad[i, j] - grad_ref[j]) < mpf(10) ** -100


def test_gradient_matches_a_numerical_derivative():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5)) * 4
    t = rng.dirichlet(np.ones(5), 3)
    loss, grad = exact.softmax_cross_entropy(x, t, reduction="mean", return_grad=True)
    h = mpf(10) ** -25

    def loss_at(i, j, delta):
        with mpmath.workdps(120):
            rows = []
            for r in range(3):
                xs = [mpf(float(v)) for v in x[r]]
                if r == i:
                    xs[j] += delta
                lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
                rows.append(-mpmath.fsum(mpf(float(tv)) * (xv - lse) for tv, xv in zip(t[r], xs)))
            return mpmath.fsum(rows) / 3

    for i in range(3):
        for j in range(5):
            with mpmath.workdps(120):
                numeric = (loss_at(i, j, h) - loss_at(i, j, -h)) / (2 * h)
            assert rel_close(grad[i, j], numeric, 35)  # central difference: error ~ h^2


def test_gradient_of_a_confident_correct_prediction_is_not_zero():
    # p0 = 1/(1 + e^-100): at 40 digits p0 - 1 would be 0; the true gradient is -e^-100/(1+e^-100)
    loss, grad = exact.softmax_cross_entropy(np.array([[100.0, 0.0]]), np.array([0]), return_grad=True)
    with mpmath.workdps(100):
        expected = mpmath.exp(-100) / (1 + mpmath.exp(-100))
    assert rel_close(loss, mpmath.log1p(mpmath.exp(-100)), 38)
    assert rel_close(grad[0, 1], expected, 38) and rel_close(grad[0, 0], -expected, 38)


def test_gradient_near_convergence_is_accurate():
    # targets = softmax(x) rounded to float64: the gradient is ~1e-17 of its terms
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6)) * 3
    t = exact.to_float64(exact.softmax(x))
    _, grad = exact.softmax_cross_entropy(x, t, reduction="sum", return_grad=True)
    for i in range(2):
        _, grad_ref = naive_ce_and_grad(x[i], t[i], dps=250)
        for j in range(6):
            assert abs(grad_ref[j]) < 1e-15
            assert rel_close(grad[i, j], grad_ref[j], 38)


def test_gradient_at_exact_convergence_is_exactly_zero():
    x = np.zeros((1, 4))
    _, grad = exact.softmax_cross_entropy(x, np.full((1, 4), 0.25), return_grad=True)
    assert all(g == 0 for g in grad[0])


def test_soft_target_sum_is_used_exactly():
    # targets summing to 0.75: the gradient is 0.75 p - t, the loss Σ t (lse - x)
    x = np.array([[0.0, 0.0]])
    t = np.array([[0.5, 0.25]])
    loss, grad = exact.softmax_cross_entropy(x, t, reduction="sum", return_grad=True)
    assert rel_close(loss, mpf(0.75) * mpmath.log(2), 38)
    assert grad[0, 0] == mpf(0.75) / 2 - mpf(0.5) and grad[0, 1] == mpf(0.75) / 2 - mpf(0.25)


def test_reductions_and_hard_equals_soft_one_hot():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7)).astype(np.float32) * 5
    k = rng.integers(0, 7, 5)
    none, g_none = exact.softmax_cross_entropy(x, k, reduction="none", return_grad=True)
    total, g_sum = exact.softmax_cross_entropy(x, k, reduction="sum", return_grad=True)
    mean, g_mean = exact.softmax_cross_entropy(x, k, return_grad=True)
    assert none.shape == (5,) and g_none.shape == (5, 7)
    assert rel_close(total, mpmath.fsum(none), 45) and rel_close(mean, total / 5, 45)
    for i in range(5):
        for j in range(7):
            assert g_none[i, j] == g_sum[i, j] and rel_close(g_mean[i, j], g_sum[i, j] / 5, 45)
    soft = exact.softmax_cross_entropy(x, np.eye(7)[k], reduction="none")
    assert all(rel_close(a, b, 45) for a, b in zip(none, soft))


@given(st.floats(0, 1), st.integers(2, 6))
def test_label_smoothing_is_pytorchs(eps, c):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, c))
    k = np.array([0, c - 1])
    smoothed = exact.softmax_cross_entropy(x, k, label_smoothing=eps, reduction="none")
    with mpmath.workdps(100):
        e = mpf(eps)
        for i in range(2):
            t = [(1 - e) * (1 if j == k[i] else 0) + e / c for j in range(c)]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(mpf(v)) for v in x[i]))
            expected = mpmath.fsum(tj * (lse - mpf(v)) for tj, v in zip(t, x[i]))
            assert rel_close(smoothed[i], expected, 38)


# ------------------------------------------------------------------------------ KL and entropy
@given(logits_arrays(max_rows=3, max_cols=8, lo=-20, hi=20), st.data())
def test_cross_entropy_is_entropy_plus_kl(x, data):
    t = data.draw(soft_targets(st.just(x.shape)))
    ce = exact.softmax_cross_entropy(x, t, reduction="none")
    h = exact.entropy(t, reduction="none")
    kl = exact.kl_divergence(t, x, reduction="none")
    for i in range(x.shape[0]):
        with mpmath.workdps(80):
            scale = abs(ce[i]) + abs(h[i]) + abs(kl[i])
            assert abs(ce[i] - h[i] - kl[i]) <= mpf(10) ** -38 * scale


@given(logits_arrays(max_rows=3, max_cols=8, lo=-20, hi=20), st.data())
def test_kl_obeys_the_log_sum_inequality(x, data):
    # Σ t log(t/p) >= T log(T / Σp) = T log T (Gibbs' inequality when T = Σt = 1)
    t = data.draw(soft_targets(st.just(x.shape)))
    kl = exact.kl_divergence(t, x, reduction="none")
    with mpmath.workdps(80):
        for i in range(x.shape[0]):
            total = mpmath.fsum(mpf(float(v)) for v in t[i])
            assert kl[i] >= total * mpmath.log(total) - mpf(10) ** -45


def test_kl_of_identical_distributions_is_zero():
    for c in (2, 4, 8):
        kl = exact.kl_divergence(np.full((1, c), 1.0 / c), np.zeros((1, c)))
        assert abs(kl) < mpf(10) ** -45
    # and of a one-hot target against logits that put all mass on it
    assert exact.kl_divergence(np.array([0.0, 1.0]), np.array([-np.inf, 3.0])) == 0


def test_kl_of_nearly_equal_distributions_is_accurate():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(8)
    t = exact.to_float64(exact.softmax(x))
    kl = exact.kl_divergence(t, x)
    with mpmath.workdps(300):
        xs = [mpf(v) for v in x]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
        expected = mpmath.fsum(mpf(ti) * (mpmath.log(mpf(ti)) - (xi - lse)) for ti, xi in zip(t, xs))
    assert abs(expected) < 1e-15
    assert rel_close(kl, expected, 38)


@given(soft_targets(st.tuples(st.integers(1, 4), st.integers(1, 10))))
def test_entropy_bounds_and_formula(p):
    h = exact.entropy(p, reduction="none")
    with mpmath.workdps(80):
        for i in range(p.shape[0]):
            expected = -mpmath.fsum(mpf(v) * mpmath.log(mpf(v)) for v in p[i] if v)
            assert rel_close(h[i], expected, 45) or abs(h[i] - expected) < mpf(10) ** -60
            total = mpmath.fsum(mpf(v) for v in p[i])
            # 0 <= H <= T log(C / T) for weights summing to T (~1)
            assert h[i] >= 0 and h[i] <= total * mpmath.log(p.shape[1] / total) + mpf(10) ** -45
    assert rel_close(exact.entropy(p, reduction="sum"), mpmath.fsum(h), 45)


def test_reductions_that_cancel_across_rows_are_accurate():
    # H([2]) = -2 ln 2 cancels H([1/2, 1/2]) + H([1/2, 1/2 + 2^-40]) = 2 ln 2 + O(2^-40)
    p = np.array([[2.0, 0.0], [0.5, 0.5], [0.5, 0.5 + 2.0 ** -40]])
    total = exact.entropy(p, reduction="sum")
    expected = mpmath.fsum(-mpf(v) * mpmath.log(mpf(v)) for v in p.ravel() if v)
    assert abs(expected) < 1e-10
    assert rel_close(total, expected, 38)
    assert rel_close(exact.entropy(p), expected / 3, 38)
    exactly_zero = exact.entropy(p[[0, 1, 1]], reduction="sum")
    assert abs(exactly_zero) < mpf(10) ** -45
    # KL rows of opposite signs (targets not summing to 1) cancelling each other
    # (rows: -ln2/2, -ln2/2, ln(1 + e^1e-30) = ln 2 + 5e-31: 30 digits cancel)
    t = np.array([[0.25, 0.25], [0.25, 0.25], [1.0, 0.0]])
    x = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1e-30]])
    kl_rows = exact.kl_divergence(t, x, reduction="none")
    kl = exact.kl_divergence(t, x, reduction="sum")
    with mpmath.workdps(200):
        ref = []
        for ti, xi in zip(t, x):
            xs = [mpf(v) for v in xi]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
            ref.append(mpmath.fsum(mpf(a) * (mpmath.log(mpf(a)) - (b - lse)) for a, b in zip(ti, xs) if a))
        expected = mpmath.fsum(ref)
    assert abs(expected) < 1e-29 * mpmath.fsum(abs(r) for r in ref)
    assert all(rel_close(a, b, 38) for a, b in zip(kl_rows, ref))
    assert rel_close(kl, expected, 38)


def test_entropy_reductions_and_shapes():
    p = np.full((2, 3, 4), 0.25)
    assert exact.entropy(p, reduction="none").shape == (2, 3)
    assert rel_close(exact.entropy(p), mpmath.log(4), 45)
    assert rel_close(exact.entropy(p, reduction="sum"), 6 * mpmath.log(4), 45)
    assert isinstance(exact.entropy(p[0, 0], reduction="none"), mpf)
    assert mpmath.isnan(exact.entropy(np.zeros((0, 3))))  # the mean of no rows


# ------------------------------------------------------------------------------ elementwise
ELEMENTWISE = ["exp", "log", "log1p", "expm1", "sqrt"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_rounds_like_mpfr_on_float16_values(name):
    # mpmath here, MPFR (gmpy2) in the emulator: two independent correctly rounded evaluations
    rng = np.random.default_rng(7)
    x = rng.choice(pr.float16.all_finite_values(), 3000, replace=False)
    x = np.concatenate([x, np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan], dtype=np.float16)])
    got = pr.float16.round(getattr(exact, name)(x))
    em = exact.emulate("float16")
    expected = np.array([getattr(em, name)(v) for v in x.astype(np.float64).tolist()])
    same = (got.astype(np.float64) == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), x[~same][:5]


@pytest.mark.parametrize("name", ELEMENTWISE)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_elementwise_rounds_like_mpfr_in_float64(name, x):
    got = exact.to_float64(getattr(exact, name)(np.float64(x)))
    expected = getattr(exact.emulate("float64"), name)(x)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def test_elementwise_shapes_and_specials():
    out = exact.exp(np.zeros((2, 3), dtype=BF16))
    assert out.shape == (2, 3) and all(v == 1 for v in out.ravel())
    assert isinstance(exact.sqrt(np.float32(4.0)), mpf) and exact.sqrt(np.float32(4.0)) == 2
    assert mpmath.isnan(exact.log(-1.0)) and exact.log(0.0) == -mpmath.inf
    assert mpmath.isnan(exact.sqrt(-2.0)) and exact.log1p(-1.0) == -mpmath.inf


# ------------------------------------------------------------------------------ input checks
def test_bad_inputs():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="reduction"):
        exact.softmax_cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="class indices"):
        exact.softmax_cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="class indices"):
        exact.softmax_cross_entropy(x, np.array([-1, 0]))
    with pytest.raises(TypeError, match="integer dtype"):
        exact.softmax_cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        exact.softmax_cross_entropy(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="entries"):
        exact.softmax_cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        exact.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        exact.softmax_cross_entropy(x, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="dps"):
        exact.softmax(x, dps=0)
    with pytest.raises(ValueError, match="dps"):
        exact.softmax(x, dps=2.5)
    with pytest.raises(TypeError, match="dtype"):
        exact.softmax(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="dimension"):
        exact.logsumexp(np.float64(1.0))
    with pytest.raises(ValueError, match="same shape"):
        exact.kl_divergence(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError):
        exact.softmax(np.array([[1.0, object()]], dtype=object))


def test_global_precision_is_irrelevant():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5)) * 10
    t = rng.dirichlet(np.ones(5), 3)

    def everything():
        return [exact.logsumexp(x), exact.softmax(x), exact.log_softmax(x),
                *exact.softmax_cross_entropy(x, t, return_grad=True),
                exact.kl_divergence(t, x), exact.entropy(t, reduction="none")]

    reference = everything()
    for dps in (5, 300):
        with mpmath.workdps(dps):
            again = everything()
        for a, b in zip(reference, again):
            assert np.array_equal(exact.to_float64(a), exact.to_float64(b))
            assert all(u == v for u, v in zip(np.ravel(a), np.ravel(b)))


def test_speed_of_a_typical_hypothesis_sized_call():
    import time

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((8, 50)) * 5).astype(np.float32)
    t = rng.dirichlet(np.ones(50), 8)
    start = time.perf_counter()
    exact.softmax_cross_entropy(x, t, return_grad=True)
    assert time.perf_counter() - start < 1.0  # measured ~0.02 s
