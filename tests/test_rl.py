"""precision.rl against its twins (precision.exact.rl), the facts of issue #14, and its peers."""
import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import precision as pr
from precision import errors, rl
from precision._kernels import load
from precision.exact import rl as xrl
from precision.formats import ARITHMETIC_FOR, PrecisionWarning

from .helpers import same_bits

FORMATS = [pr.float16, pr.bfloat16, pr.float32, pr.float64]
POLICIES = [(pr.format(s), pr.format(a)) for s in ARITHMETIC_FOR for a in ARITHMETIC_FOR[s]]
POLICY_IDS = [f"{s.short}_{a.short}" for s, a in POLICIES]
U53 = 2.0 ** -53


def _in(fmt, values):
    """float64 values rounded into fmt (an array of fmt's dtype), overflow to +-inf dropped."""
    with np.errstate(over="ignore"):
        arr = fmt.round(np.asarray(values, dtype=np.float64))
    return arr


def finite_in(fmt, values):
    arr = _in(fmt, values)
    wide = arr.astype(np.float64)
    return arr[np.isfinite(wide)]


# values spread over magnitudes, with tiny ones (cancellation in k3), subnormals and zeros
magnitudes = st.one_of(
    st.floats(-20, 20, allow_nan=False),
    st.floats(-1e-3, 1e-3, allow_nan=False),
    st.floats(-1e-30, 1e-30, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e-4, -1e-4, 1.0, -1.0, 6e-8, 1e-45, 5e-324]),
)
vectors = st.lists(magnitudes, min_size=1, max_size=300)


def exact_f64(v):
    return float(pr.float64.round(v))


# ----------------------------------------------------------------------------- k3 in double
@given(st.floats(-700, 700, allow_nan=False) | st.floats(-1e-20, 1e-20) |
       st.floats(-1.0001, 1.0001))
def test_k3_double_within_6u(x):
    """rl.h's proof: relative error < 6 * 2^-53 (normal results), 1 subnormal step otherwise."""
    got = load("rl").k3_double(x)
    exact = xrl.k3(x, dps=40)
    if exact == 0:
        assert got == 0
        return
    err = abs(mpmath.mpf(got) - exact)
    assert err <= 6 * U53 * abs(exact) or err <= 2.0 ** -1074


# ----------------------------------------------------------------------------- estimators
@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(values=vectors, estimator=st.sampled_from(["k1", "k2"]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_k1_k2_bit_exact_against_emulation(storage, arith, values, estimator, reduction):
    x = finite_in(storage, values)
    assume(x.size > 0)
    got = rl.approx_kl(x, estimator=estimator, reduction=reduction, accum=arith)
    want = xrl.emulated_approx_kl(x, estimator=estimator, reduction=reduction, accum=arith)
    assert np.all(same_bits(np.asarray(got), storage.round(np.asarray(want))))


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(values=vectors, method=st.sampled_from(["expm1", "naive"]))
def test_k3_against_emulation(storage, arith, values, method):
    """Elementwise within 1 ulp of the correctly rounded twin (exp_A, k3_A are evaluated in
    double and rounded once); where every term agrees, the mean is bit-identical."""
    x = finite_in(storage, values)
    assume(x.size > 0)
    terms = rl.approx_kl(x, method=method, reduction="none", accum=arith)
    twin_terms = xrl.emulated_approx_kl(x, method=method, reduction="none", accum=arith)
    ulps = np.abs(storage.ordinal(terms).astype(np.int64)
                  - storage.ordinal(storage.round(twin_terms)).astype(np.int64))
    if method == "expm1":
        assert ulps.max() <= 1
    else:
        # the naive form passes exp_A's error (up to 1 ulp of e^x, float64's fp_exp) through
        # R(e^x) - 1 unchanged: up to ulp_A(e^x) + 1 ulp of S of the result
        e = np.exp(x.astype(np.float64))
        slack = np.asarray(arith.ulp(e), dtype=np.float64) + np.asarray(
            storage.ulp(storage.round(twin_terms)), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(terms.astype(np.float64) - twin_terms)
        assert np.all((diff <= slack) | (ulps <= 1))
    if storage == arith and ulps.max() == 0:
        got = rl.approx_kl(x, method=method, accum=arith)
        want = xrl.emulated_approx_kl(x, method=method, accum=arith)
        assert same_bits(got, storage.round(want))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@given(values=vectors)
def test_k3_within_its_bound_of_exact(fmt, values):
    x = finite_in(fmt, values)
    assume(x.size > 0)
    got = rl.approx_kl(x, reduction="none")
    exact = xrl.approx_kl(x, estimator="k3", reduction="none")
    rounded = fmt.round(exact)
    finite = np.isfinite(rounded.astype(np.float64))
    assert np.all(same_bits(got[~finite], rounded[~finite]))       # overflow: +inf both
    # float64: rl.h's proven relative error < 6u, i.e. < 6 ulps; narrower: one more rounding
    bound = 6.0 if fmt == pr.float64 else 1.0
    assert np.abs(errors.ulp_error(got[finite], exact[finite], fmt)).max(initial=0) <= bound


@pytest.mark.parametrize("fmt,limit", [(pr.float16, 12.5), (pr.bfloat16, 89.0)],
                         ids=["float16", "bfloat16"])
def test_k3_16bit_every_input_correctly_rounded(fmt, limit):
    """Every finite 16-bit log-ratio (up to where k3 overflows to inf): k3 in 16-bit arithmetic
    is the correctly rounded exact value -- including the x*x/2 midpoints of tiny x (rl.h)."""
    x = fmt.all_finite_values()
    x = x[x.astype(np.float64) <= limit]
    got = rl.approx_kl(x, reduction="none")
    exact = xrl.approx_kl(x, estimator="k3", reduction="none", dps=25)
    assert np.all(same_bits(got, fmt.round(exact)))


def test_naive_k3_float32_error_is_the_exp_rounding():
    """Issue #14: naive k3 in float32 at log r = 1e-4 has a relative error of order 1, ours is
    within 1 ulp.  Derived, not quoted: naive = R(R(e^x) - 1 - x) with R(e^x) - 1 exact
    (Sterbenz) and one more rounding, so its relative error is |R(e^x) - e^x| / k3 within
    u (1 + that)."""
    u = pr.float32.u
    for x0 in (1e-3, 1e-4, 1e-5, -1e-4):
        x = np.float32([x0])
        exact = xrl.approx_kl(x, reduction="none")[0]
        naive = rl.approx_kl(x, method="naive", reduction="none")[0]
        ours = rl.approx_kl(x, reduction="none")[0]
        rel_naive = float(abs(mpmath.mpf(float(naive)) - exact) / exact)
        exp_err = float(abs(mpmath.mpf(float(pr.float32.round(pr.exact.exp(x)[0])))
                            - mpmath.exp(mpmath.mpf(float(x[0])))) / exact)
        assert abs(rel_naive - exp_err) <= 2 * u * (1 + exp_err)
        assert abs(errors.ulp_error(np.float32([ours]), np.array([exact], dtype=object),
                                    pr.float32)[0]) <= 1
    # at 1e-4 the exp rounding error (up to u) is comparable to k3 = 5e-9: order 1
    x = np.float32([1e-4])
    exact = xrl.approx_kl(x, reduction="none")[0]
    naive = rl.approx_kl(x, method="naive", reduction="none")[0]
    assert float(abs(mpmath.mpf(float(naive)) - exact) / exact) > 0.1


def test_schulman_reference_ratios():
    """q = N(0,1), p = N(0.1,1), x ~ q: log r = log p(x) - log q(x) = 0.1 x - 0.005 and
    KL(q||p) = 0.005; std/KL of k1, k2, k3 = 20 / 1.42 / 1.42 (reference, 2 decimals), k1 and
    k3 unbiased.  Monte Carlo with 2e6 samples: the std's relative standard error is below
    0.3 %, so 1 % (plus the reference's rounding) is > 3 standard errors."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal(2_000_000)
    log_r = 0.1 * x - 0.005
    kl = 0.005
    ratios = {}
    for est in ("k1", "k2", "k3"):
        terms = rl.approx_kl(log_r, estimator=est, reduction="none")
        ratios[est] = terms.std() / kl
        if est != "k2":
            se = terms.std() / math.sqrt(terms.size)
            assert abs(terms.mean() - kl) <= 4 * se
    assert abs(ratios["k1"] - 20) <= 0.01 * 20
    assert abs(ratios["k2"] - 1.42) <= 0.005 + 0.01 * 1.42
    assert abs(ratios["k3"] - 1.42) <= 0.005 + 0.01 * 1.42


# ----------------------------------------------------------------------------- Gaussians
@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(rows=st.integers(1, 6), dims=st.integers(1, 20),
       values=st.lists(st.floats(-20, 5, allow_nan=False), min_size=120, max_size=120),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_gaussian_entropy_log_std_bit_exact(storage, arith, rows, dims, values, reduction):
    ls = _in(storage, values[: rows * dims]).reshape(rows, dims)
    got = rl.gaussian_entropy(ls, reduction=reduction, accum=arith)
    want = xrl.emulated_gaussian_entropy(ls, reduction=reduction, accum=arith)
    assert np.all(same_bits(np.asarray(got), storage.round(np.asarray(want))))


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(values=st.lists(st.floats(1e-6, 1e4, allow_nan=False), min_size=1, max_size=64))
def test_gaussian_entropy_std_against_emulation(storage, arith, values):
    s = _in(storage, values)
    s = s[s.astype(np.float64) > 0]
    assume(s.size > 0)
    got = rl.gaussian_entropy(std=s, reduction="none", accum=arith)
    want = xrl.emulated_gaussian_entropy(std=s, reduction="none", accum=arith)
    # log_A is within 1 ulp of correctly rounded: one ulp of A in one term, then one addition
    diff = abs(float(got) - float(want))
    assert diff <= 2 * arith.u * (abs(float(want)) + s.size * (2 + np.abs(np.log(
        s.astype(np.float64))).max())) or same_bits(got, storage.round(want))


def test_entropy_zero_crossing_facts():
    """sigma* = 1/sqrt(2 pi e) = 0.2419707; 1/2 log(2 pi e) = 1.4189385; log sigma = -2 gives
    -0.5811 per dimension (the reference's values, from our exact twin)."""
    assert f"{rl.ENTROPY_ZERO_SIGMA:.7f}" == "0.2419707"
    assert f"{rl.HALF_LOG_2PI_E:.7f}" == "1.4189385"
    assert f"{float(xrl.gaussian_entropy(np.float64([-2.0]))):.4f}" == "-0.5811"
    h = xrl.gaussian_entropy(std=np.float64([rl.ENTROPY_ZERO_SIGMA]))
    # sigma* in float64 is within half an ulp of the true one; dH/dsigma = 1/sigma
    assert abs(h) <= pr.float64.ulp(rl.ENTROPY_ZERO_SIGMA) / rl.ENTROPY_ZERO_SIGMA


@pytest.mark.parametrize("fmt", [pr.float16, pr.bfloat16, pr.float32], ids=lambda f: f.name)
def test_entropy_sign_flips_at_sigma_star(fmt):
    """Over every value sigma of the format near sigma*, the kernel's entropy (std input) has
    the sign of the exact entropy except within 2 ulps of sigma*: c and log sigma each enter
    rounded to within 1/2 ulp of about 1.42, i.e. within sigma * 2^-p of sigma."""
    star = float(fmt.round(rl.ENTROPY_ZERO_SIGMA))
    grid = [star]
    lo = hi = np.asarray(star, dtype=fmt.dtype)
    for _ in range(40):
        lo = fmt.next_down(lo)
        hi = fmt.next_up(hi)
        grid += [float(lo), float(hi)]
    sig = fmt.round(np.array(sorted(grid)))
    got = rl.gaussian_entropy(std=sig.reshape(-1, 1), reduction="none").astype(np.float64)
    exact_sign = np.sign(np.log(sig.astype(np.float64)) + rl.HALF_LOG_2PI_E)
    steps = np.abs(fmt.ordinal(sig).astype(np.int64) - int(fmt.ordinal(np.asarray(star, fmt.dtype))))
    far = steps > 2
    assert np.all(np.sign(got[far]) == exact_sign[far])
    assert np.any(got < 0) and np.any(got > 0)


@pytest.mark.parametrize("storage", [pr.float16, pr.bfloat16, pr.float32], ids=lambda f: f.name)
@given(data=st.data())
def test_gaussian_kl_wide_accum_within_one_ulp(storage, data):
    """With accum=float64 every term is within ~20 u_64 (both terms >= 0, nothing cancels), so
    one rounding into S is within 1 ulp of the exact KL."""
    d = data.draw(st.integers(1, 8))
    vals = lambda lo, hi: data.draw(st.lists(st.floats(lo, hi, allow_nan=False),
                                             min_size=d, max_size=d))
    mp_, mq = _in(storage, vals(-3, 3)), _in(storage, vals(-3, 3))
    lp, lq = _in(storage, vals(-4, 2)), _in(storage, vals(-4, 2))
    if data.draw(st.booleans()):        # nearly equal distributions: the cancelling case
        mq, lq = mp_.copy(), lq
    got = rl.gaussian_kl(mp_, lp, mq, lq, accum="float64", reduction="sum")
    exact = xrl.gaussian_kl(mp_, lp, mq, lq, reduction="sum")
    if exact == 0:
        assert float(got) == 0
    elif not np.isfinite(float(storage.round(exact))):
        assert same_bits(got, storage.round(exact))       # overflows in S: inf
    else:
        assert abs(errors.ulp_error(np.asarray([got]), np.array([exact], dtype=object),
                                    storage)[0]) <= 1


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(data=st.data())
def test_gaussian_kl_against_emulation(storage, arith, data):
    n = data.draw(st.integers(1, 4))
    d = data.draw(st.integers(1, 6))
    draw = lambda lo, hi: _in(storage, data.draw(st.lists(
        st.floats(lo, hi, allow_nan=False), min_size=n * d, max_size=n * d))).reshape(n, d)
    mp_, mq, lp, lq = draw(-5, 5), draw(-5, 5), draw(-3, 2), draw(-3, 2)
    got = rl.gaussian_kl(mp_, lp, mq, lq, reduction="none", accum=arith)
    want = storage.round(xrl.emulated_gaussian_kl(mp_, lp, mq, lq, reduction="none",
                                                  accum=arith))
    # exp_A and k3_A within 1 ulp of correctly rounded: when the rows agree they are identical
    ulps = np.abs(storage.ordinal(got).astype(np.int64) - storage.ordinal(want).astype(np.int64))
    fin = np.isfinite(want.astype(np.float64))
    assert np.all(ulps[fin] <= 4 * d)


def test_squashed_entropy_mc_against_quadrature():
    """MC within 4 standard errors of the quadrature value, and H[tanh u] <= min(H[u], d log 2)."""
    mean = np.array([0.3, -1.5, 0.0])
    log_std = np.array([-0.5, 0.2, -2.0])
    est, se = rl.squashed_gaussian_entropy(mean, log_std, n_samples=200_000, seed=3)
    exact = float(xrl.squashed_gaussian_entropy(mean, log_std))
    assert abs(est - exact) <= 4 * se
    h_u = float(xrl.gaussian_entropy(log_std))
    assert exact <= min(h_u, 3 * math.log(2))
    # the same seed gives the same estimate
    assert rl.squashed_gaussian_entropy(mean, log_std, n_samples=1000, seed=1) == \
        rl.squashed_gaussian_entropy(mean, log_std, n_samples=1000, seed=1)


# ----------------------------------------------------------------------------- value function
@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(values=st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=1,
                       max_size=300),
       convention=st.sampled_from(rl.CONVENTIONS))
def test_explained_variance_bit_exact(storage, arith, values, convention):
    yp = _in(storage, [a for a, _ in values])
    yt = _in(storage, [b for _, b in values])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        got = rl.explained_variance(yp, yt, convention=convention, accum=arith)
        want = xrl.emulated_explained_variance(yp, yt, convention=convention, accum=arith)
    assert same_bits(got, storage.round(want))


def test_explained_variance_edge_cases():
    y = np.float64([2.0, 2.0, 2.0])
    p = np.float64([1.0, 2.0, 3.0])
    assert math.isnan(rl.explained_variance(p, y, convention="sb3"))
    assert math.isnan(rl.explained_variance(p, y, convention="cleanrl"))
    assert rl.explained_variance(p, y, convention="rllib") == -1.0
    assert rl.explained_variance(y, y, convention="rllib") == 1.0
    one = np.float32([1.0])
    for c in rl.CONVENTIONS:
        assert math.isnan(rl.explained_variance(one, one * 2, convention=c))
        assert math.isnan(xrl.explained_variance(one, one * 2, convention=c))
    # biased vs unbiased: the same data, different values (exact twins)
    y = np.float64([0.0, 1.0, 3.0])
    p = np.float64([0.5, 1.0, 2.0])
    sb3, rll = (xrl.explained_variance(p, y, convention=c) for c in ("sb3", "rllib"))
    assert sb3 != rll


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(values=st.lists(st.tuples(st.floats(-20, 20), st.floats(-20, 20)), min_size=1,
                       max_size=200),
       convention=st.sampled_from(rl.VALUE_LOSS_CONVENTIONS),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_value_loss_bit_exact(storage, arith, values, convention, reduction):
    v = _in(storage, [a for a, _ in values])
    t = _in(storage, [b for _, b in values])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        loss, grad = rl.value_loss(v, t, convention=convention, reduction=reduction,
                                   return_grad=True, accum=arith)
        wl, wg = xrl.emulated_value_loss(v, t, convention=convention, reduction=reduction,
                                         return_grad=True, accum=arith)
    assert np.all(same_bits(np.asarray(loss), storage.round(np.asarray(wl))))
    assert np.all(same_bits(grad, storage.round(wg)))


def test_rllib_value_gradient_zero_beyond_sqrt10():
    e = np.linspace(-6, 6, 4001)
    t = np.zeros_like(e)
    loss, grad = rl.value_loss(e, t, return_grad=True)
    exact_loss, exact_grad = xrl.value_loss(e, t, return_grad=True)
    assert np.all((grad == 0) == (e * e > 10) | (e == 0))
    assert np.all(np.abs(e[grad == 0][e[grad == 0] != 0]) > math.sqrt(10))
    assert np.allclose(grad, [float(g) for g in exact_grad], rtol=2 ** -52, atol=0)


# ----------------------------------------------------------------------------- bad input
def test_bad_input():
    f32 = np.float32
    with pytest.raises(ValueError, match="NaN"):
        rl.approx_kl(f32([0.1, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        rl.approx_kl(f32([]))
    with pytest.raises(ValueError, match="estimator"):
        rl.approx_kl(f32([0.1]), estimator="k4")
    with pytest.raises(ValueError, match="method"):
        rl.approx_kl(f32([0.1]), method="fast")
    with pytest.raises(ValueError, match="std must be > 0"):
        rl.gaussian_entropy(std=f32([0.5, 0.0]))
    with pytest.raises(ValueError, match="std must be > 0"):
        rl.gaussian_entropy(std=f32([-1.0]))
    with pytest.raises(ValueError, match="exactly one"):
        rl.gaussian_entropy(f32([0.0]), std=f32([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        rl.explained_variance(f32([1, 2]), f32([1, 2, 3]))
    with pytest.raises(TypeError, match="storage format"):
        rl.explained_variance(np.float64([1, 2]), f32([1, 2]))
    with pytest.raises(ValueError, match="convention"):
        rl.explained_variance(f32([1, 2]), f32([1, 2]), convention="tf")
    with pytest.raises(ValueError, match="broadcast"):
        rl.gaussian_kl(f32([0, 0]), f32([0, 0, 0]), f32([0, 0]), f32([0, 0]))
    with pytest.raises(ValueError, match="vf_clip_param"):
        rl.value_loss(f32([1]), f32([2]), vf_clip_param=-1.0)
    with pytest.raises(ValueError, match="infinite"):
        rl.value_loss(f32([np.inf]), f32([2]))
    x = f32([0.1, 0.2])
    out = np.empty(2, f32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rl.approx_kl(x, reduction="none", out=out)
    with pytest.raises(ValueError, match="overlaps"):
        rl.approx_kl(x, reduction="none", out=x)
    with pytest.raises(ValueError, match="n_samples"):
        rl.squashed_gaussian_entropy([0.0], [0.0], n_samples=1)


def test_scalars_warn_when_rounded():
    with pytest.warns(PrecisionWarning, match="eps"):
        rl.explained_variance(np.float16([1, 2, 4]), np.float16([1, 3, 3]), convention="rllib")


def test_thread_count_does_not_change_results():
    x = np.random.default_rng(0).normal(0, 1e-3, 100_000).astype(np.float32)
    one = rl.approx_kl(x, num_threads=1)
    two = rl.approx_kl(x, num_threads=2)
    assert same_bits(one, two)


# ----------------------------------------------------------------------------- peers
def test_explained_variance_matches_sb3():
    """SB3's explained_variance (numpy's pairwise sums, biased var): agrees with ours within
    the error bound of two two-pass variances, 2 (log2 n + 24) u relative each, i.e.
    |1 - ev| * 4 (log2 n + 24) u, plus 2u for the final subtraction.  NaN cases agree."""
    utils = pytest.importorskip("stable_baselines3.common.utils")
    rng = np.random.default_rng(5)
    for dtype, fmt in ((np.float32, pr.float32), (np.float64, pr.float64)):
        for n in (2, 7, 128, 1000, 4096):
            y = rng.normal(3, 2, n).astype(dtype)
            p = (y + rng.normal(0, 0.5, n)).astype(dtype)
            ours = float(rl.explained_variance(p, y))
            theirs = float(utils.explained_variance(p, y))
            bound = abs(1 - ours) * 4 * (math.log2(n) + 24) * fmt.u + 2 * fmt.u
            assert abs(ours - theirs) <= bound, (dtype, n, ours, theirs)
        y = np.full(5, 1.5, dtype=dtype)
        assert math.isnan(utils.explained_variance(y * 0, y)) and \
            math.isnan(rl.explained_variance(y * 0, y))


def test_gaussian_entropy_and_kl_match_torch():
    """torch.distributions.Normal entropy 0.5 + 0.5 log(2 pi) + log(scale) and
    kl_divergence(p, q) in float32/float64: within 8 u of the magnitudes involved (torch's
    own formulas cancel; ours are within 1-2 ulps of exact)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for dtype, fmt in ((np.float32, pr.float32), (np.float64, pr.float64)):
        mu_p, mu_q = rng.normal(0, 1, (2, 50, 3)).astype(dtype)
        ls_p, ls_q = rng.normal(-1, 0.8, (2, 50, 3)).astype(dtype)
        tp = torch.distributions.Normal(torch.from_numpy(mu_p), torch.from_numpy(ls_p).exp())
        tq = torch.distributions.Normal(torch.from_numpy(mu_q), torch.from_numpy(ls_q).exp())
        h_torch = tp.entropy().sum(-1).numpy()
        h_ours = rl.gaussian_entropy(ls_p, reduction="none")
        scale = 8 * fmt.u * (3 * rl.HALF_LOG_2PI_E + np.abs(ls_p).sum(-1) + 1)
        assert np.all(np.abs(h_ours.astype(np.float64) - h_torch) <= scale)
        kl_torch = torch.distributions.kl_divergence(tp, tq).sum(-1).numpy()
        kl_ours = rl.gaussian_kl(mu_p, ls_p, mu_q, ls_q, reduction="none")
        ratio = np.exp(2 * (ls_p - ls_q).astype(np.float64))
        mag = (np.abs(ls_p - ls_q) + ratio + (mu_p - mu_q) ** 2 / np.exp(2 * ls_q) + 1).sum(-1)
        assert np.all(np.abs(kl_ours.astype(np.float64) - kl_torch) <= 8 * fmt.u * mag)


def test_categorical_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    for dtype, fmt in ((np.float32, pr.float32), (np.float64, pr.float64)):
        xp, xq = rng.normal(0, 2, (2, 40, 6)).astype(dtype)
        cp = torch.distributions.Categorical(logits=torch.from_numpy(xp))
        cq = torch.distributions.Categorical(logits=torch.from_numpy(xq))
        h = rl.categorical_entropy(xp, reduction="none").astype(np.float64)
        assert np.allclose(h, cp.entropy().numpy(), rtol=16 * fmt.u, atol=16 * fmt.u)
        kl = rl.categorical_kl(xp, xq, reduction="none").astype(np.float64)
        assert np.allclose(kl, torch.distributions.kl_divergence(cp, cq).numpy(),
                           rtol=32 * fmt.u, atol=32 * fmt.u * 6)


@pytest.mark.parametrize("fmt", [pr.float32, pr.float64], ids=lambda f: f.name)
def test_categorical_against_exact(fmt):
    rng = np.random.default_rng(9)
    xp, xq = rng.normal(0, 2, (2, 5, 7)).astype(fmt.dtype)
    h = rl.categorical_entropy(xp, reduction="none", accum="float64")
    exact = xrl.categorical_entropy(xp, reduction="none")
    # p rounded to S: within u_S * H plus the loss kernel's 1 ulp
    assert np.all(np.abs(errors.ulp_error(h, exact, fmt)) <= 3)
    kl = rl.categorical_kl(xp, xq, reduction="none", accum="float64").astype(np.float64)
    kl_exact = np.array([float(v) for v in xrl.categorical_kl(xp, xq, reduction="none")])
    assert np.all(np.abs(kl - kl_exact) <= fmt.u * (8 + 4 * kl_exact))


def test_value_loss_gradient_matches_torch_rllib():
    """RLlib's loss, mean(clamp((v - t)^2, 0, 10)), through torch autograd in float32: the
    same mask, and gradients within 2 ulps (torch rounds 1/N and 2e separately)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    v = rng.normal(0, 3, 257).astype(np.float32)
    t = rng.normal(0, 3, 257).astype(np.float32)
    tv = torch.from_numpy(v.copy()).requires_grad_(True)
    loss_t = torch.clamp((tv - torch.from_numpy(t)) ** 2, 0, 10).mean()
    loss_t.backward()
    loss, grad = rl.value_loss(v, t, return_grad=True)
    g_t = tv.grad.numpy()
    assert np.all((grad == 0) == (g_t == 0))
    steps = np.abs(pr.float32.ordinal(grad).astype(np.int64)
                   - pr.float32.ordinal(g_t).astype(np.int64))
    assert steps.max() <= 2
    assert abs(float(loss) - loss_t.item()) <= 16 * pr.float32.u * float(loss)


def test_every_build_computes_the_same_bits():
    """The baseline and AVX2 builds of kernels/rl (no FMA contraction: identical roundings)."""
    from precision._kernels import variants

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0, 1e-3, 3000), rng.normal(0, 3, 3000)]).astype(np.float32)
    ls = rng.normal(-1, 1, (50, 4)).astype(np.float32)
    results = []
    for mod in variants("rl").values():
        out = []
        for est in (1, 2, 3):
            for naive in (False, True):
                terms = np.empty(x.size, np.float32)
                mod.logratio_terms_f32_f32(x, est, naive, terms, 2)
                out.append(terms.view(np.uint32).copy())
        terms = np.empty(ls.shape, np.float32)
        mod.gaussian_kl_terms_f32_f32(ls, ls[::-1].copy(), ls * 0, ls, terms, 2)
        out.append(terms.view(np.uint32).ravel().copy())
        # categorical KL: near-equal rows, wide spreads (subnormal p, the fallback), 16-bit A
        for xp, xq, name, view in (
                (ls, (ls + x[:200].reshape(50, 4)).astype(np.float32), "f32_f32", np.uint32),
                (ls * 40, ls[::-1] * 40, "f32_f32", np.uint32),
                (ls.astype(np.float16), (ls * 1e3).astype(np.float16), "f16_f16", np.uint16),
                (ls.astype(np.float16), (ls + 1e-2).astype(np.float16), "f16_f32", np.uint32)):
            work = [np.empty(xp.shape, np.float32) for _ in range(3)]    # A: float32 compute
            kl = np.empty(xp.shape[0], np.float32)
            kin = [v.view(np.uint16) if v.dtype == np.float16 else np.ascontiguousarray(v)
                   for v in (xp, xq)]
            getattr(mod, f"categorical_kl_rows_{name}")(*kin, *work, kl, 2)
            out.append(kl.view(np.uint32).copy())
        results.append(np.concatenate(out))
    for other in results[1:]:
        assert np.array_equal(results[0], other)


# ----------------------------------------------------------------------------- categorical KL
@st.composite
def logit_pairs(draw, near=None, spread=None):
    """(rows, C) float64 logit pairs: y = x + a small perturbation (the tiny-KL case of a healthy
    PPO run) or independent; magnitudes from subnormal to beyond float16's range."""
    rows = draw(st.integers(1, 4))
    c = draw(st.integers(1, 12))
    scale = spread if spread is not None else draw(st.sampled_from([1e-30, 1e-6, 1.0, 5.0, 30.0,
                                                                  3e4, 1e6]))
    elems = st.floats(-scale, scale, allow_nan=False, allow_infinity=False) | st.sampled_from(
        [0.0, -0.0, 6e-8, -6e-8, 1e-45])
    x = np.array(draw(st.lists(elems, min_size=rows * c, max_size=rows * c))).reshape(rows, c)
    if near if near is not None else draw(st.booleans()):
        eps = draw(st.sampled_from([1e-5, 1e-3, 1e-2, 0.1]))
        noise = np.array(draw(st.lists(st.floats(-1, 1), min_size=rows * c,
                                       max_size=rows * c))).reshape(rows, c)
        y = x + eps * noise
    else:
        y = np.array(draw(st.lists(elems, min_size=rows * c, max_size=rows * c))).reshape(rows, c)
    return x, y


def _kl_in(fmt, x, y):
    """The pair rounded into fmt, rows with a value beyond fmt's range replaced by 0."""
    xs, ys = _in(fmt, x), _in(fmt, y)
    bad = ~(np.isfinite(xs.astype(np.float64)) & np.isfinite(ys.astype(np.float64)))
    xs[bad], ys[bad] = 0, 0
    return xs, ys


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(pair=logit_pairs(), reduction=st.sampled_from(["none", "mean", "sum"]))
def test_categorical_kl_bit_identical_to_twin(storage, arith, pair, reduction):
    """+ - * / in A, exp/log/log1p/k3/phi rounded once as the kernel's own: the twin replays it
    op by op (main path and overflow fallback alike)."""
    x, y = _kl_in(storage, *pair)
    got = rl.categorical_kl(x, y, reduction=reduction, accum=arith)
    want = xrl.emulated_categorical_kl(x, y, reduction=reduction, accum=arith)
    assert np.all(same_bits(np.asarray(got), storage.round(np.asarray(want))))
    twin = pr.exact.registry.pairing("rl.categorical_kl").twin(arith)
    assert np.all(same_bits(np.asarray(got),
                            storage.round(np.asarray(twin(x, y, reduction=reduction)))))


def _exact_kl(x, y):
    return np.array([float(v) for v in xrl.categorical_kl(x, y, reduction="none", dps=30)])


def _difference_rounding_bound(x, y, arith):
    """The absolute error the rounding of y_i - x_i in A can cost (docstring; doubled): a change
    e_i <= u |y_i - x_i| of the logits themselves, sum |q - p| e + 1/2 sum p e^2 (0 where the
    differences are exact; not relative to KL: p and q may agree only to that level)."""
    from fractions import Fraction

    c = x.shape[-1]
    xw = x.astype(np.float64).reshape(-1, c)
    yw = y.astype(np.float64).reshape(-1, c)
    p = np.exp(xw - xw.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    # q - p = p (d - p.d) to first order, d = y - x taken exactly (float64 q - p would cancel)
    spread = np.empty_like(p)
    for r in range(p.shape[0]):
        d = [Fraction(float(b)) - Fraction(float(a)) for a, b in zip(xw[r], yw[r])]
        centre = sum(Fraction(float(pi)) * di for pi, di in zip(p[r], d))
        spread[r] = [abs(float(di - centre)) for di in d]
    e = 2 * arith.u * np.abs(yw - xw)
    return 2 * (p * spread * e).sum(-1) + (p * e * e).sum(-1)


@given(pair=logit_pairs(near=True, spread=8.0))
@example(pair=(np.zeros((2, 2)), np.array([[0.0, 0.0], [0.0, 6.31476428e-22]])))  # KL 5e-44 -> 0
def test_categorical_kl_bfloat16_tiny_kl_relative(pair):
    """bfloat16 logits, accum float32: the stated bound (max|x - m| + 2 log2 C + 10) u_f32,
    doubled, plus one rounding into bfloat16 (half an ulp of bfloat16: relative however tiny the
    KL, down to bfloat16's subnormals, where a KL of 5e-44 rounds to 0).  The former path
    (softmax rounded to bfloat16, then kl_divergence) had an absolute error ~ 2^-8: it fails this."""
    x, y = _kl_in(pr.bfloat16, *pair)
    exact = _exact_kl(x, y)
    got = rl.categorical_kl(x, y, reduction="none", accum="float32").astype(np.float64)
    got = got.reshape(-1)
    c = x.shape[-1]
    spread = (x.astype(np.float64).max(-1) - x.astype(np.float64).min(-1))
    rel = 2 * (spread + 2 * math.log2(c) + 10) * pr.float32.u
    half_ulp = np.asarray(pr.bfloat16.ulp(pr.bfloat16.round(exact).astype(np.float64)),
                          dtype=np.float64) / 2
    absolute = (4 * c * pr.float32.smallest_subnormal + half_ulp
                + _difference_rounding_bound(x, y, pr.float32))
    assert np.all(np.abs(got - exact) <= rel * exact + absolute)


def test_categorical_kl_tiny_kl_where_the_rounded_p_path_could_not():
    """A healthy PPO step in bfloat16: KL ~ 1e-4.  Rounding p to bfloat16 first (the former
    implementation) is wrong by far more than the KL; from both logits it is within an ulp."""
    rng = np.random.default_rng(12)
    x = pr.bfloat16.round(rng.normal(0, 1, (64, 6)))
    y = pr.bfloat16.round(x.astype(np.float64) + rng.normal(0, 1e-2, (64, 6)))
    exact = _exact_kl(x, y)
    assert 1e-6 < np.median(exact) < 1e-3
    new = rl.categorical_kl(x, y, reduction="none", accum="float32").astype(np.float64)
    assert np.all(np.abs(new - exact) <= 2 * pr.bfloat16.u * exact)
    from precision import losses
    p = losses.softmax(x, accum="float32")
    old = losses.kl_divergence(p, y, reduction="none", accum="float32").astype(np.float64)
    assert np.median(np.abs(old - exact) / exact) > 0.1


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@given(pair=logit_pairs(near=True, spread=6.0))
def test_categorical_kl_near_equal_rows_within_the_stated_bound(storage, arith, pair):
    """Relative (max|x - m| + 2 log2 C + 10) u_A (doubled: first order), one rounding into S
    (half an ulp of S), underflow of the terms in A (a few subnormals of A per class)."""
    x, y = _kl_in(storage, *pair)
    exact = _exact_kl(x, y)
    got = np.asarray(rl.categorical_kl(x, y, reduction="none", accum=arith),
                     dtype=np.float64).reshape(-1)
    c = x.shape[-1]
    xw = x.astype(np.float64)
    spread = xw.max(-1) - xw.min(-1)
    rel = 2 * (spread + 2 * math.log2(c) + 10) * arith.u
    absolute = (4 * c + 4) * arith.smallest_subnormal + np.asarray(
        storage.ulp(storage.round(exact).astype(np.float64)), dtype=np.float64) / 2
    absolute = absolute + _difference_rounding_bound(x, y, arith)
    assert np.all(np.abs(got - exact) <= rel * exact + absolute)


# rows that take each branch: subnormal p_i with a large d_i (q's mass from the logits), p_i
# that underflows to 0 in A, |s| >= 1, and differences that overflow float16 (the fallback)
BRANCH_ROWS = [([0.0, -100.0], [0.0, -20.0]), ([0.0, -20.0], [0.0, 0.0]),
               ([0.0, -12.0], [0.0, -2.0]), ([0.0, 1.0, -3.0], [4.0, -4.0, 0.5]),
               ([6e4, -6e4], [-6e4, 6e4]), ([0.0, -2e4], [-2e4, 0.0]), ([1.0], [-1.0])]


@pytest.mark.parametrize("storage,arith", POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("row", range(len(BRANCH_ROWS)))
def test_categorical_kl_branches_against_twin_and_exact(storage, arith, row):
    x, y = (_in(storage, [v]) for v in BRANCH_ROWS[row])
    if not (np.isfinite(x.astype(np.float64)).all() and np.isfinite(y.astype(np.float64)).all()):
        pytest.skip("beyond the storage format")
    got = rl.categorical_kl(x, y, reduction="none", accum=arith)
    want = xrl.emulated_categorical_kl(x, y, reduction="none", accum=arith)
    assert np.all(same_bits(np.asarray(got), storage.round(np.asarray(want))))
    exact = _exact_kl(x, y)[0]
    if arith.bits >= 32 and exact < storage.max:
        half_ulp_s = float(np.asarray(storage.ulp(np.float64([exact])))[0]) / 2
        assert abs(float(np.asarray(got).reshape(-1)[0]) - exact) <= 1e-3 * exact + half_ulp_s


def test_categorical_kl_edges():
    f32 = np.float32
    # C = 1 and identical rows: exactly 0
    assert rl.categorical_kl(f32([[3.0], [-7.0]]), f32([[-2.0], [5.0]]), reduction="sum") == 0
    x = np.random.default_rng(13).normal(0, 3, (5, 7)).astype(f32)
    assert np.all(rl.categorical_kl(x, x, reduction="none") == 0)
    # a shift of the logits (exact on a grid of 1/4): KL 0, here within u_A^2-sized residue of
    # c = R(sum p_i 2.5) != 2.5 (sum p_i is 1 only to within a few u)
    g = np.round(x * 4) / 4
    assert np.all(rl.categorical_kl(g, g + f32(2.5), reduction="none") <= 1e-12)
    # -inf logits at the kernel level (the API refuses them): p_i = 0 contributes 0 whatever
    # q_i is; q_i = 0 where p_i > 0 gives +inf
    mod = load("rl")

    def kernel(xp, xq):
        xp, xq = f32(xp).reshape(1, -1), f32(xq).reshape(1, -1)
        work = [np.empty_like(xp) for _ in range(3)]
        out = np.empty(1, f32)
        mod.categorical_kl_rows_f32_f32(xp, xq, *work, out, 1)
        return float(out[0])

    ref = kernel([0.5, 1.0], [1.5, -0.5])
    assert kernel([0.5, 1.0, -np.inf], [1.5, -0.5, -np.inf]) == ref
    assert kernel([0.5, 1.0, -np.inf], [1.5, -0.5, 40.0]) > ref
    assert kernel([0.5, 1.0, 2.0], [1.5, -0.5, -np.inf]) == math.inf
    assert math.isnan(kernel([0.5, np.nan], [1.0, 2.0]))
    assert math.isnan(kernel([0.5, 1.0], [np.nan, 2.0]))
    # float16 arithmetic: a logit difference beyond 65504 takes the fallback, +inf where the
    # per-class difference itself overflows; accum float32 gets the value
    big = np.float16([[6e4, -6e4]])
    assert rl.categorical_kl(big, big[:, ::-1].copy(), reduction="sum") == np.float16(np.inf)
    wide = rl.categorical_kl(big, big[:, ::-1].copy(), reduction="sum", accum="float32")
    assert wide == np.float16(np.inf)        # the KL, 1.2e5, is beyond float16 itself
    small = np.float16([[0.0, -2e4]])
    got = float(rl.categorical_kl(small, small[:, ::-1].copy(), reduction="sum"))
    assert abs(got - 2e4) <= 2 * float(pr.float16.ulp(2e4))


@given(st.floats(-0.999, 1e6, allow_nan=False) | st.floats(-1e-20, 1e-20) |
       st.floats(-0.3, 0.3))
def test_log1pmx_double_within_18u(s):
    """rl.h's proof: log1p(s) - s in double with relative error < 18 * 2^-53."""
    got = load("rl").log1pmx_double(s)
    exact = xrl._log1pmx_mpf(s, 40)
    if exact == 0:
        assert got == 0
        return
    if abs(exact) < pr.float64.tiny:
        assert abs(got - float(exact)) <= 5e-324
        return
    assert abs((mpmath.mpf(got) - exact) / exact) < 18 * U53


@pytest.mark.parametrize("fmt", [pr.float16, pr.bfloat16], ids=lambda f: f.name)
def test_log1pmx_16bit_every_input_within_one_ulp(fmt):
    """phi_A on every value of A in (-1, 1e4]: within 1 ulp of the exact log1p(s) - s."""
    s = fmt.all_finite_values().astype(np.float64)
    s = s[(s > -1) & (s <= 1e4)]
    got = np.empty_like(s)
    load("rl").transcendental("log1pmx", fmt.short, s, got)
    exact = np.array([xrl._log1pmx_mpf(v, 30) for v in s], dtype=object)
    assert np.abs(errors.ulp_error(fmt.round(got), exact, fmt)).max() <= 1


def test_categorical_kl_bad_input():
    f32 = np.float32
    x = f32([[0.1, 0.2]])
    with pytest.raises(ValueError, match="same shape"):
        rl.categorical_kl(x, f32([[0.1, 0.2, 0.3]]))
    with pytest.raises(TypeError):
        rl.categorical_kl(x, np.float64([[0.1, 0.2]]))
    with pytest.raises(TypeError):
        rl.categorical_kl(np.int32([[1, 2]]), np.int32([[1, 2]]))
    with pytest.raises(ValueError, match="NaN"):
        rl.categorical_kl(x, f32([[np.nan, 0.2]]))
    with pytest.raises(ValueError, match="infinite"):
        rl.categorical_kl(f32([[-np.inf, 0.2]]), x)
    with pytest.raises(ValueError, match="empty"):
        rl.categorical_kl(f32([[]]), f32([[]]))
    with pytest.raises(ValueError, match="reduction"):
        rl.categorical_kl(x, x, reduction="batchmean")
    with pytest.raises(ValueError):
        rl.categorical_kl(x, x, num_threads=0)
    with pytest.raises(ValueError):
        rl.categorical_kl(x, x, num_threads=1000)


def test_categorical_kl_thread_count_does_not_change_results():
    rng = np.random.default_rng(14)
    x = rng.normal(0, 2, (3000, 9)).astype(np.float32)
    y = (x + rng.normal(0, 1e-2, x.shape)).astype(np.float32)
    one = rl.categorical_kl(x, y, reduction="none", num_threads=1)
    two = rl.categorical_kl(x, y, reduction="none", num_threads=2)
    assert np.all(same_bits(one, two))
