"""The scalar primitives of kernels/fp.h, exhaustively where the input space allows.

What is proved here is what every kernel relies on: rounding into float16/bfloat16 inside float
registers, 16-bit loads and stores, one-rounding float64 -> 16 bits, and exp/log/log1p/expm1/sqrt
correctly rounded in the 16-bit formats on every one of their 2**16 inputs; and float32's own
log1p (kernels/log1p_f32.h) within its proved bound against MPFR, the same bits in every build.
"""
import gmpy2
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

import precision as pr
from precision._kernels import _primitives as prim
from precision._kernels import variants

from .helpers import same_bits

F16, BF16 = pr.float16, pr.bfloat16


def gmpy_round(values, fmt):
    """Reference: gmpy2 rounds each float64 value once into fmt (nearest-even, subnormals)."""
    ctx = fmt.context()
    with ctx:
        return np.array([float(gmpy2.mpfr(float(v))) for v in values], dtype=np.float64)


def near_ties(fmt):
    """All float32 midpoints between adjacent values of a 16-bit format, and the float32 values
    1 and 2 ulps either side of each: the inputs where a rounding routine goes wrong if it can."""
    vals = fmt.all_finite_values().astype(np.float64)
    vals = vals[vals >= 0]
    top = float(fmt.max) + float(fmt.ulp(fmt.max))     # the would-be next value: overflow tie
    upper = np.append(vals[1:], top)
    mids = ((vals + upper) / 2).astype(np.float32)      # exact in float32
    assert np.all(mids.astype(np.float64) == (vals + upper) / 2)
    out = [mids]
    for k in (1, 2):
        out.append(np.nextafter(mids, np.float32(np.inf)))
        out.append(np.nextafter(mids, np.float32(0)))
        for _ in range(k - 1):
            out[-1] = np.nextafter(out[-1], np.float32(0))
            out[-2] = np.nextafter(out[-2], np.float32(np.inf))
    allv = np.concatenate(out)
    return np.concatenate([allv, -allv])


@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_round_in_float_on_all_ties_and_near_ties_matches_gmpy2(fmt):
    x = near_ties(fmt)
    got = np.empty_like(x)
    prim.round_in_float(fmt.short, x, got)
    expect = gmpy_round(x, fmt)
    bad = got.astype(np.float64) != expect
    assert not bad.any(), f"{bad.sum()} wrong, e.g. {x[bad][:5]} -> {got[bad][:5]} not {expect[bad][:5]}"
    # ties really are there: half of the midpoints round down, half up (ties to even)
    mids = x[: len(x) // 10]
    assert 0 < np.count_nonzero(got[: len(mids)] < mids) < len(mids)


@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_store_of_rounded_float32_matches_gmpy2_on_ties(fmt):
    x = near_ties(fmt)
    bits = np.empty(x.shape, np.uint16)
    prim.f32_to_16(fmt.short, x, bits)
    expect = gmpy_round(x, fmt).astype(np.float32)
    assert np.array_equal(bits.view(fmt.dtype).astype(np.float32), expect)


def _check_f32_to_16(fmt, x):
    out = np.empty(x.shape, np.uint16)
    prim.f32_to_16(fmt.short, x, out)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(fmt.dtype)     # numpy / ml_dtypes: one rounding from float32
    ok = same_bits(out.view(fmt.dtype), ref)
    assert ok.all(), f"{np.count_nonzero(~ok)} mismatches, e.g. {x[~ok][:4]}"


@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_float32_to_16_structured_sweep(fmt):
    """Every sign and exponent, with ALL patterns of the bits that decide the rounding (the 17
    lowest: discarded bits, the kept last bit, and the bit above it) under 3 different
    high-mantissa patterns (none, alternating, all ones: carries ripple through them all):
    2 * 256 * 2**17 * 3 = 200M float32 values cover every rounding
    case of every binade, the subnormals and the overflow boundary."""
    low = np.arange(1 << 17, dtype=np.uint32)
    highs = np.array([0, 0x2A, 0x3F], dtype=np.uint32) << 17
    for sign in (0, 1):
        for exponent in range(256):
            base = np.uint32(sign << 31 | exponent << 23)
            x = (base | highs[:, None] | low[None, :]).reshape(-1).view(np.float32)
            _check_f32_to_16(fmt, x)


@pytest.mark.skipif(not __import__("os").environ.get("PRECISION_EXHAUSTIVE"),
                    reason="all 2**32 float32 patterns take ~7 minutes: set PRECISION_EXHAUSTIVE=1")
@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_float32_to_16_on_all_2_32_bit_patterns(fmt):
    """Every float32 bit pattern, against numpy's float16 cast (which agrees with F16C
    hardware) and ml_dtypes' bfloat16 cast (both single roundings from float32)."""
    chunk = 1 << 26
    for start in range(0, 1 << 32, chunk):
        _check_f32_to_16(fmt, np.arange(start, start + chunk, dtype=np.uint32).view(np.float32))


def crafted_f64_near_midpoints(fmt, rng):
    """float64 values a hair off the midpoints of fmt: where float64 -> float32 -> fmt
    double-rounds and a single rounding must not."""
    vals = fmt.all_finite_values().astype(np.float64)
    vals = vals[vals > 0]
    upper = np.append(vals[1:], float(fmt.max) + float(fmt.ulp(fmt.max)))
    mids = (vals + upper) / 2
    # offsets below float32's half-ulp at the midpoint, so a float32 stage lands on the tie
    rel = np.ldexp(1.0, -rng.integers(26, 52, size=mids.shape))
    sign = rng.choice([-1.0, 1.0], size=mids.shape)
    x = mids * (1 + sign * rel)
    x = np.concatenate([x, mids, np.nextafter(mids, np.inf), np.nextafter(mids, 0)])
    return np.concatenate([x, -x, [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e300]])


@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_float64_to_16_rounds_once(fmt):
    rng = np.random.default_rng(1)
    x = crafted_f64_near_midpoints(fmt, rng)
    bits = np.empty(x.shape, np.uint16)
    prim.f64_to_16(fmt.short, x, bits)
    expect = gmpy_round(x, fmt)
    got = bits.view(fmt.dtype).astype(np.float64)
    ok = (got == expect) | (np.isnan(got) & np.isnan(expect))
    assert ok.all(), f"{np.count_nonzero(~ok)} wrong: {x[~ok][:4]}"
    # and the trap is real: going through float32 first is wrong on some of these inputs
    with np.errstate(over="ignore"):
        via32 = x.astype(np.float32).astype(fmt.dtype).astype(np.float64)
    assert np.count_nonzero((via32 != expect) & ~np.isnan(expect)) > 100


def test_float64_to_float16_agrees_with_numpy_direct_cast():
    rng = np.random.default_rng(2)
    x = crafted_f64_near_midpoints(F16, rng)
    bits = np.empty(x.shape, np.uint16)
    prim.f64_to_16("f16", x, bits)
    with np.errstate(over="ignore"):
        assert same_bits(bits.view(np.float16), x.astype(np.float16)).all()


@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_load_and_store_every_16_bit_pattern(fmt):
    h = np.arange(1 << 16, dtype=np.uint16)
    wide = np.empty(h.shape, np.float32)
    prim.load16(fmt.short, h, wide)
    with np.errstate(invalid="ignore"):
        ref = h.view(fmt.dtype).astype(np.float32)
    assert same_bits(wide, ref).all()
    back = np.empty_like(h)
    prim.f32_to_16(fmt.short, wide, back)
    nan = np.isnan(ref)
    assert np.array_equal(back[~nan], h[~nan])            # every non-NaN survives bit for bit
    assert np.isnan(back[nan].view(fmt.dtype).astype(np.float32)).all()   # NaN stays NaN


FUNCS = {
    "exp": gmpy2.exp, "log": gmpy2.log, "log1p": gmpy2.log1p,
    "expm1": gmpy2.expm1, "sqrt": gmpy2.sqrt,
}


def correctly_rounded(name, x, fmt):
    fn = FUNCS[name]
    with fmt.context():
        return np.array([float(fn(gmpy2.mpfr(float(v)))) for v in x])


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("fmt", [F16, BF16], ids=lambda f: f.name)
def test_elementary_functions_correctly_rounded_on_all_16_bit_inputs(name, fmt):
    """exp/log/log1p/expm1/sqrt evaluated in double and rounded once are correctly rounded on
    every finite input (+-inf and NaN too): the 16-bit kernels are exact, not just close."""
    with np.errstate(invalid="ignore"):
        x = fmt.all_bit_patterns().astype(np.float64)   # includes inf, NaN, -0
    got = np.empty_like(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        prim.elementary(name, fmt.short, x, got)
    expect = correctly_rounded(name, x, fmt)
    ok = (got == expect) | (np.isnan(got) & np.isnan(expect))
    ok &= (np.signbit(got) == np.signbit(expect)) | np.isnan(expect)
    assert ok.all(), f"{np.count_nonzero(~ok)} wrong, e.g. {name}({x[~ok][:3]}) = {got[~ok][:3]} not {expect[~ok][:3]}"


def test_float32_exp_via_float_is_wrong_where_ours_is_right():
    """Why exp is evaluated in double: the three float16 inputs a float32 route gets wrong."""
    x = np.array([np.float16(v) for v in (0.0072975, 0.0226898)], dtype=np.float16)
    x = x.view(np.uint16)
    assert set(x.tolist()) == {0x1F79, 0x25CF}
    xs = x.view(np.float16).astype(np.float64)
    got = np.empty_like(xs)
    prim.elementary("exp", "f16", xs, got)
    assert np.array_equal(got, correctly_rounded("exp", xs, F16))
    # a float32 route: exp correctly rounded to float32 (the best a float32 exp can do), then to
    # float16 -- a double rounding that lands on the wrong float16 for exactly these inputs
    via_float = pr.float16.round(correctly_rounded("exp", xs, pr.float32)).astype(np.float64)
    assert (via_float != got).all()


def ulps_from_exact(got, x, fn, fmt):
    import mpmath
    out = []
    with mpmath.workdps(60):
        for g, v in zip(got, x):
            e = fn(mpmath.mpf(float(v)))
            ulp = fmt.ulp(float(e))
            out.append(float((mpmath.mpf(float(g)) - e) / mpmath.mpf(ulp)))
    return np.abs(np.array(out))


def test_double_exp_error_bound():
    """fp_exp (the vectorisable double exp under every kernel): |error| < 1 ulp of float64
    everywhere it was sampled, including the subnormal range, overflow and underflow edges."""
    import mpmath
    rng = np.random.default_rng(3)
    x = np.concatenate([
        rng.uniform(-745, 709.7, 3000), rng.uniform(-1, 1, 2000), rng.uniform(-30, 30, 2000),
        rng.uniform(-745.13, -708, 500),  # subnormal results
        [0.0, -0.0, 1e-300, -1e-300, 709.78, 709.7827128933840, -745.1332191019411, -745.2],
    ])
    got = np.empty_like(x)
    prim.exp_double(x, got)
    err = ulps_from_exact(got, x, mpmath.exp, pr.float64)
    assert err.max() < 1.0, err.max()
    assert np.median(err) < 0.5
    special = np.array([np.inf, -np.inf, np.nan, 710.0, -746.0, 1000.0, -1000.0])
    out = np.empty_like(special)
    prim.exp_double(special, out)
    assert out[0] == np.inf and out[1] == 0 and np.isnan(out[2])
    assert out[3] == np.inf and out[4] == 0 and out[5] == np.inf and out[6] == 0


def test_float32_exp_within_one_ulp_and_almost_always_correctly_rounded():
    rng = np.random.default_rng(4)
    x = rng.uniform(-103, 88.7, 20000).astype(np.float32).astype(np.float64)
    got = np.empty_like(x)
    prim.elementary("exp", "f32", x, got)
    expect = correctly_rounded("exp", x, pr.float32)
    finite = np.isfinite(expect) & (expect > 0)
    ords = pr.float32.ordinal(got[finite].astype(np.float32)) - pr.float32.ordinal(expect[finite].astype(np.float32))
    assert np.abs(ords).max() <= 1
    assert np.count_nonzero(ords) <= 2          # a miss needs exp within 2^-52 of a midpoint


# ------------------------------------------------------------- summation.h's strided sums
SUM_POLICIES = [("f16", "f16"), ("f16", "f32"), ("f16", "f64"), ("bf16", "bf16"),
                ("bf16", "f32"), ("bf16", "f64"), ("f32", "f32"), ("f32", "f64"), ("f64", "f64")]
SHORT_NAMES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64"}


def _summands(rng, fmt, n, kind):
    """n values of fmt: the inputs a summation order is sensitive to."""
    if kind == "normal":
        v = rng.standard_normal(n) * 2.0 ** rng.integers(-8, 8, n)
    elif kind == "cancelling":      # pairs x, -x at random places, plus small noise
        v = rng.standard_normal(n) * 1e3
        v[n // 2:] = -v[: n - n // 2]
        v = rng.permutation(v) + rng.standard_normal(n) * 1e-3
    elif kind == "subnormal":
        v = rng.integers(-50, 50, n) * float(fmt.smallest_subnormal)
    elif kind == "ties":            # halves on top of 2^(p-1): every addition a tie
        v = rng.integers(-8, 8, n) * 0.5 + 2.0 ** (fmt.p - 1)
    elif kind == "huge":            # overflow to inf (and inf - inf = NaN) in the narrow formats
        v = rng.choice([float(fmt.max), -float(fmt.max), float(fmt.max) / 3], n)
    else:
        pool = [0.0, -0.0, 1.0, -1.0, float(fmt.max), float(fmt.tiny),
                float(fmt.smallest_subnormal), np.inf, -np.inf, np.nan, 3.0]
        v = rng.choice(pool, n)
    with np.errstate(all="ignore"):
        return np.asarray(fmt.round(v.astype(np.float64))).astype(fmt.dtype)


@given(policy=st.sampled_from(SUM_POLICIES), order=st.sampled_from(["pairwise", "sequential", "kahan"]),
       n=st.sampled_from([0, 1, 2, 7, 8, 9, 100, 127, 128, 129, 256, 300, 385, 640, 1100]),
       stride=st.sampled_from([1, 2, 3, -1, -2]),
       kind=st.sampled_from(["normal", "cancelling", "subnormal", "ties", "huge", "specials"]),
       seed=st.integers(0, 2**32 - 1))
def test_strided_sums_are_bit_identical_to_the_emulated_twins(policy, order, n, stride, kind, seed):
    """summation.h's sum_<order>_<S>_<A> over a strided run equals precision.exact.emulate(A)'s
    sum in the same order (pairwise_sum / sequential_sum / kahan_sum), bit for bit: the one copy
    of the project's summation orders against its twin, leaves and tree levels included."""
    from precision.exact import emulate

    s, a = policy
    S, A = pr.format(SHORT_NAMES[s]), pr.format(SHORT_NAMES[a])
    values = _summands(np.random.default_rng(seed), S, n, kind)
    buf = np.full(max(n, 1) * abs(stride), S.dtype.type(7.0), dtype=S.dtype)   # gaps: not summed
    view = buf[::stride][:n]
    view[...] = values
    raw = view.view(np.uint16) if S.bits == 16 else view
    got = getattr(prim, f"strided_sum_{s}_{a}")(order, raw)
    want = emulate(A).sum(values.astype(np.float64), order=order)
    assert same_bits(np.float64(got), np.float64(want)), (got, want)


# ---------------------------------------------------- fp.h's float32 log1p (log1p_f32.h)
# The contract: within 0.5 + 2^-21 ulp (log1p_f32.h proves 0.5 + 2^-25), from a double within
# 2^-49 of log1p(x) relative (the proof's bound), special values exactly as libm's.
LOG1P_F32_ULPS = 0.5 + 2.0**-21
LOG1P_F32_DOUBLE_REL = 2.0**-49
EXACT_BITS = 120          # MPFR precision of the reference: far beyond both bounds


def log1p_f32_of(x32):
    """fp.h's log1p_f32 of float32 values, as float32."""
    with np.errstate(invalid="ignore", divide="ignore"):      # signalling NaN patterns
        x = np.asarray(x32, np.float32).astype(np.float64)
        out = np.empty_like(x)
        prim.elementary("log1p", "f32", x, out)
    return out.astype(np.float32)


def exact_log1p(v):
    with gmpy2.context(precision=EXACT_BITS):
        return gmpy2.log1p(gmpy2.mpfr(float(v)))


def float32_ulps_from_exact(got, v):
    """|got - log1p(v)| in float32 ulps at the exact value (MPFR, EXACT_BITS)."""
    e = exact_log1p(v)
    ulp_exp = max(gmpy2.get_exp(e) - 1, -126) - 23     # MPFR's exponent is IEEE's + 1
    with gmpy2.context(precision=EXACT_BITS):
        return float(abs(gmpy2.mpfr(float(got)) - e) * gmpy2.mpfr(2) ** -ulp_exp)


def assert_log1p_f32_within_bound(x32):
    """Every float32 x: the result equals MPFR's correctly rounded log1p, or (near a midpoint)
    is within LOG1P_F32_ULPS of the exact value; non-finite and zero results bit for bit (NaN:
    any NaN); |x| < 2^-25 gives x itself."""
    x32 = np.asarray(x32, np.float32)
    got = log1p_f32_of(x32)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = correctly_rounded("log1p", x32.astype(np.float64), pr.float32).astype(np.float32)
    same = same_bits(got, want)
    special = ~np.isfinite(want) | (want == 0)
    assert same[special].all(), (x32[special & ~same][:5], got[special & ~same][:5])
    tiny = np.abs(x32) < 2.0**-25
    assert same_bits(got[tiny], x32[tiny]).all()
    misses = np.flatnonzero(~same)
    errs = [float32_ulps_from_exact(got[i], x32[i]) for i in misses]
    assert max(errs, default=0.0) <= LOG1P_F32_ULPS, (x32[misses][np.argmax(errs)], max(errs))
    return len(misses)


def assert_log1p_f32_double_within_bound(x32):
    """The double under log1p_f32, before its rounding: relative error <= 2^-49 where log1p is
    finite and nonzero."""
    x32 = np.asarray(x32, np.float32)
    y = np.empty(len(x32))
    with np.errstate(invalid="ignore", divide="ignore"):
        prim.log1p_f32_double(x32, y)
    worst = 0.0
    with gmpy2.context(precision=EXACT_BITS):
        for v, yv in zip(x32.tolist(), y.tolist()):
            e = exact_log1p(v)
            if gmpy2.is_finite(e) and not gmpy2.is_zero(e):
                worst = max(worst, float(abs((gmpy2.mpfr(yv) - e) / e)))
    assert worst <= LOG1P_F32_DOUBLE_REL, (worst, np.log2(worst))
    return worst


def float32_window(center, half_width):
    """The 2 half_width consecutive float32 values around float32(center) (fewer at +-inf)."""
    b = int(np.array(center, np.float32).view(np.uint32))
    c = b if b < 2**31 else -(b - 2**31)                  # the position on the number line
    ords = np.arange(c - half_width, c + half_width, dtype=np.int64)
    ords = ords[np.abs(ords) <= 0x7F800000]
    bits = np.where(ords >= 0, ords, -ords + 2**31)
    return bits.astype(np.uint32).view(np.float32)


# the inputs where log1p_f32.h's algorithm changes regime: x = -1 (v = 0), x = 2^k M0 - 1 (k
# changes, M0 = sqrt(1/2); the truncation of the series is largest there), |x| = 2^-29 (the
# tiny path), 2^-25 (results stop rounding to x), 2^53 (1 + x stops being exact), the largest
# float, and 0, -0.5, 1 for good measure
_M0 = 0.7071067811865476
LOG1P_F32_EDGES = ([-1.0, -0.5, 0.0, 1.0, 2.0**53, 2.0**24, float(np.finfo(np.float32).max)]
                   + [2.0**k * _M0 - 1 for k in range(-3, 8)]
                   + [s * 2.0**e for s in (1, -1) for e in (-29, -25)])


def log1p_f32_edge_windows(half_width):
    with np.errstate(over="ignore"):
        return np.concatenate([float32_window(c, half_width) for c in LOG1P_F32_EDGES])


def test_float32_log1p_dense_sweep():
    """A strided sweep of all 2^32 float32 bit patterns (every 4093rd: NaNs, infinities,
    subnormals and every binade included) and 2^14 consecutive floats around each regime
    change of the algorithm, against MPFR."""
    strided = (np.arange(0, 2**32, 4093, dtype=np.uint64) + 17).astype(np.uint32).view(np.float32)
    windows = log1p_f32_edge_windows(2**13)
    misses = assert_log1p_f32_within_bound(np.concatenate([strided, windows]))
    assert misses <= 10      # a miss needs log1p(x) within 2^-25 ulp of a midpoint


def test_float32_log1p_double_within_its_proved_bound():
    """The double before the rounding, where the proof's terms are largest (the series'
    truncation at m = M0 and 2 M0, the cancellation k ln2 + log m next to them) and on a
    strided sweep of all finite float32 inputs."""
    windows = log1p_f32_edge_windows(2**11)
    strided = (np.arange(0, 2**32, 65521, dtype=np.uint64) + 5).astype(np.uint32).view(np.float32)
    worst = assert_log1p_f32_double_within_bound(np.concatenate([windows, strided]))
    assert worst > 2.0**-52   # the sweep does reach the truncation (the test would see a change)


def float32s_for_log1p():
    """Hypothesis float32 inputs: anywhere, near -1, near 0 (subnormals), powers of two and
    their neighbours, huge values."""
    def neighbours(v):
        return st.integers(-3, 3).map(lambda d: float(float32_window(v, 4)[4 + d]))  # finite v

    return st.one_of(
        st.floats(width=32),
        st.floats(-1.0, -0.5, width=32),
        st.floats(-2.0**-20, 2.0**-20, width=32),
        st.integers(-149, 127).flatmap(lambda e: neighbours(2.0**e) | neighbours(-(2.0**e))),
        st.floats(2.0**60, float(np.finfo(np.float32).max), width=32),
        st.sampled_from(LOG1P_F32_EDGES).flatmap(lambda c: st.floats(-1.0, 1.0).map(
            lambda t: float(np.float32(c) + np.float32(t * 2.0**-12 * max(abs(c), 2.0**-20))))),
    )


@given(xs=st.lists(float32s_for_log1p(), min_size=1, max_size=64))
def test_float32_log1p_within_bound_on_generated_inputs(xs):
    with np.errstate(over="ignore"):
        x32 = np.array(xs, np.float32)
    assert_log1p_f32_within_bound(x32)
    assert_log1p_f32_double_within_bound(x32[np.isfinite(x32) & (x32 > -1)])


def test_float32_log1p_special_values_are_libms():
    """log1p(-1) = -inf, x < -1 and NaN give NaN, +inf gives +inf, +-0 give +-0, tiny and
    subnormal x give x: the bits of libm's double log1p (numpy's calls it) rounded to float."""
    f32 = np.finfo(np.float32)
    x = np.array([-1.0, -0.0, 0.0, np.inf, -np.inf, np.nan, -np.nan, -1.0000001, -2.0, -1e30,
                  -float(f32.max), float(f32.max), 2.0**-149, -(2.0**-149), 2.0**-126, -(2.0**-126),
                  2.0**-126 * 0.75, 2.0**-30, -(2.0**-30), 2.0**-29, -(2.0**-29), 3e-9, -3e-9,
                  2.0**-25, -(2.0**-25), 1e-38, 2.0**53, 2.0**24 + 2.0], np.float32)
    got = log1p_f32_of(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        libm = np.log1p(x.astype(np.float64)).astype(np.float32)
    assert same_bits(got, libm).all(), (x[~same_bits(got, libm)], got[~same_bits(got, libm)])
    assert np.signbit(got[1]) and not np.signbit(got[2])
    assert got[0] == -np.inf and got[3] == np.inf and np.isnan(got[4:9]).all()


def test_float32_log1p_same_bits_in_every_build():
    """The loss kernels' builds (SSE2, AVX2, AVX-512: precision._kernels.variants) compute the
    same float32 log1p, in the vectorised loop, as the primitives module's scalar loop: on
    every 1021st bit pattern of all 2^32 and the edge windows."""
    x = np.concatenate([(np.arange(0, 2**32, 1021, dtype=np.uint64) + 3).astype(np.uint32)
                        .view(np.float32), log1p_f32_edge_windows(2**10)])
    want = log1p_f32_of(x)
    for suffix, module in variants("losses").items():
        got = np.empty_like(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            module.log1p_f32_loop(x, got)
        assert same_bits(got, want).all(), suffix
