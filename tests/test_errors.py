"""precision.errors: ulp, relative and bits-of-error metrics, from first principles."""
import math
import re
from fractions import Fraction

import gmpy2
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import precision as pr
from tests.test_formats import far_exponents, far_values
from precision.errors import Comparison, bits_error, compare, relative_error, ulp_error

BF16 = ml_dtypes.bfloat16
FORMATS = [pr.float16, pr.bfloat16, pr.float32, pr.float64]
FMT_IDS = [f.name for f in FORMATS]


def ulp_from_definition(y: Fraction, fmt) -> Fraction:
    """The spacing of fmt at |y|: 2^(e-p+1) for 2^e <= |y| < 2^(e+1), at least 2^(emin-p+1)."""
    a = abs(y)
    if a == 0:
        return Fraction(2) ** (fmt.emin - fmt.p + 1)
    e = 0
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return Fraction(2) ** (max(e, fmt.emin) - fmt.p + 1)


def values_of(fmt):
    """Hypothesis strategy: finite values of fmt, as numpy scalars of fmt.dtype."""
    if fmt.bits == 16:
        patterns = st.integers(0, 0xFFFF).map(lambda b: np.uint16(b).view(fmt.dtype))
        return patterns.filter(lambda v: np.isfinite(np.float32(v)))
    width = fmt.bits
    return st.floats(width=width, allow_nan=False, allow_infinity=False).map(fmt.dtype.type)


def to_float(q: Fraction) -> float:
    """q rounded to float64, inf beyond its range (float(Fraction) raises there)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def f64(v):
    return float(np.float64(np.float32(v))) if np.dtype(type(v)) == np.dtype(BF16) else float(v)


# ------------------------------------------------------------------------------ ulp_error
@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
def test_hand_made_ulp_errors(fmt):
    one = fmt.dtype.type(1.0)
    up = fmt.next_up(one)
    down = fmt.next_down(one)
    assert ulp_error(up, 1.0, fmt) == 1.0
    assert ulp_error(down, 1.0, fmt) == -0.5      # the spacing at 1 is 2^(1-p), below 1 half that
    assert ulp_error(one, f64(down), fmt) == 1.0   # ... measured at the exact value just below 1
    assert ulp_error(one, 1.0, fmt) == 0.0
    # subnormal spacing: one smallest subnormal from 0 is one ulp
    s = fmt.smallest_subnormal
    assert ulp_error(fmt.dtype.type(s), 0.0, fmt) == 1.0
    assert ulp_error(fmt.dtype.type(3 * s), s, fmt) == 2.0
    # the largest value against the exact value half an ulp above it: overflow would be inf
    top = Fraction(fmt.max) + ulp_from_definition(Fraction(fmt.max), fmt) / 2
    assert ulp_error(fmt.dtype.type(fmt.max), top, fmt) == -0.5
    assert ulp_error(fmt.dtype.type(np.inf), top, fmt) == math.inf


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
@given(data=st.data())
def test_next_up_is_one_ulp_and_midpoints_are_half(fmt, data):
    x = data.draw(values_of(fmt))
    assume(abs(f64(x)) < fmt.max)
    up = fmt.next_up(x)
    assume(f64(up) > 0)       # from a negative value up to -0 or across: a different binade rule
    xf, uf = Fraction(f64(x)), Fraction(f64(up))
    if xf >= 0:
        # the exact value x (>= 0): next_up is one ulp away; the midpoint is half an ulp from both
        assert ulp_error(up, f64(x), fmt) == 1.0
        mid = (xf + uf) / 2
        assert ulp_error(x, mid, fmt) == -0.5
        assert ulp_error(up, mid, fmt) == 0.5


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
@given(y=st.floats(allow_nan=False, allow_infinity=False))
def test_ulp_error_equals_its_definition(fmt, y):
    with np.errstate(over="ignore"):
        c = fmt.round(y)
    assume(np.isfinite(f64(c)))
    expected = (Fraction(f64(c)) - Fraction(y)) / ulp_from_definition(Fraction(y), fmt)
    got = ulp_error(c, y, fmt)
    assert got == float(expected)          # exactly rounded to float64
    assert abs(got) <= 0.5                  # a correctly rounded value is within half an ulp
    # the same through the exact-object path (mpf) and for the rational path (Fraction)
    assert ulp_error(np.array([c]), np.array([mpmath.mpf(y)], dtype=object), fmt)[0] == got
    assert ulp_error(c, Fraction(y), fmt) == got


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
@given(y=st.fractions(max_denominator=10**12).filter(lambda q: 0 < abs(q) < 10**30))
def test_ulp_error_of_rationals_uses_the_exact_binade(fmt, y):
    with np.errstate(over="ignore"):
        c = fmt.round(y)
    assume(np.isfinite(f64(c)))
    expected = (Fraction(f64(c)) - y) / ulp_from_definition(y, fmt)
    assert ulp_error(c, y, fmt) == float(expected)


def test_ulp_error_at_a_binade_boundary_uses_the_exact_value():
    # exact just below 2 (whose float64 rounding is 2): spacing 2^-10 in float16, not 2^-9
    y = Fraction(2) - Fraction(1, 2**80)
    expected = float((Fraction(2) - y) / Fraction(1, 2**10))
    assert expected == 2.0 ** -70
    assert ulp_error(np.float16(2.0), y, pr.float16) == expected
    with mpmath.workprec(100):
        y_mpf = mpmath.mpf(2) - mpmath.mpf(2) ** -80
    assert ulp_error(np.float16(2.0), y_mpf, "f16") == expected


def test_ulp_error_saturates_and_handles_huge_differences():
    fmt = pr.float64
    big = np.float64(fmt.max)
    # |c - y| = 2 max overflows float64; 2 max / 2^971 = 2^54 - 2
    assert ulp_error(big, -fmt.max, fmt) == 2.0 ** 54 - 2
    assert relative_error(big, -fmt.max) == 2.0
    assert ulp_error(np.float64(1.0), 2.0 ** -1074, fmt) == math.inf  # 2^1074 ulps: beyond float64


# ------------------------------------------------------------------------------ relative_error
def test_relative_error_hand_made():
    assert relative_error(np.float32(1.5), 1.0) == 0.5
    assert relative_error(np.float16(0.0), 0.0) == 0.0
    assert relative_error(np.float16(-0.0), 0.0) == 0.0
    assert relative_error(np.float16(1e-3), 0.0) == math.inf
    assert relative_error(np.float64(1.0), Fraction(1, 3)) == 2.0
    assert relative_error(np.float64(0.1), Fraction(1, 10)) == float(abs(Fraction(0.1) - Fraction(1, 10)) / Fraction(1, 10))
    out = relative_error(np.array([1.0, 2.0, 4.0], dtype=np.float32), np.array([1.0, 1.0, -4.0]))
    assert out.tolist() == [0.0, 1.0, 2.0]


@given(c=st.floats(width=32, allow_nan=False, allow_infinity=False),
       y=st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != 0))
def test_relative_error_is_correctly_rounded(c, y):
    expected = to_float(abs(Fraction(c) - Fraction(y)) / abs(Fraction(y)))
    assert relative_error(np.float32(c), y) == expected
    assert relative_error(np.float32(c), mpmath.mpf(y)) == expected
    third = Fraction(y) / 3  # not a binary number: the exact rational path
    assert relative_error(np.float32(c), third) == to_float(abs(Fraction(c) - third) / abs(third))


def test_relative_error_when_the_difference_is_inexact_in_float64():
    # 1 - (2^53 + 2) = -(2^53 + 1) is not a float64; its rounding would give 0.9999999999999998
    assert relative_error(np.float32(1.0), 2.0 ** 53 + 2) == float(Fraction(2**53 + 1, 2**53 + 2))


# ------------------------------------------------------------------------------ bits_error
@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
def test_bits_error_counts_steps(fmt):
    one = fmt.dtype.type(1.0)
    assert bits_error(one, 1.0, fmt) == 0.0
    x = one
    for steps in range(1, 9):
        x = fmt.next_up(x)
        assert bits_error(x, 1.0, fmt) == math.log2(1 + steps)
    assert bits_error(fmt.next_down(one), 1.0, fmt) == 1.0
    # the exact value need not be representable: distance from its correct rounding
    just_above = Fraction(1) + Fraction(2) ** (1 - fmt.p) / 3
    assert bits_error(one, just_above, fmt) == 0.0
    assert bits_error(fmt.next_up(one), just_above, fmt) == 1.0
    # across zero: -smallest to +smallest is 2 steps (-0 and +0 are one position)
    s = fmt.dtype.type(fmt.smallest_subnormal)
    assert bits_error(-s, fmt.smallest_subnormal, fmt) == math.log2(3)
    assert bits_error(fmt.dtype.type(-0.0), 0.0, fmt) == 0.0
    assert bits_error(fmt.dtype.type(0.0), -0.0, fmt) == 0.0
    # overflow: inf is one step beyond max
    assert bits_error(fmt.dtype.type(np.inf), fmt.max, fmt) == 1.0
    assert bits_error(fmt.dtype.type(fmt.max), mpmath.inf, fmt) == 1.0


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
def test_bits_error_extremes(fmt):
    magnitude = {16: 0x7C00 if fmt.p == 11 else 0x7F80, 32: 0x7F800000, 64: 0x7FF0000000000000}[fmt.bits]
    assert bits_error(fmt.dtype.type(-np.inf), np.inf, fmt) == math.log2(1 + 2 * magnitude)
    assert bits_error(fmt.dtype.type(np.nan), 1.0, fmt) == fmt.bits
    assert bits_error(fmt.dtype.type(1.0), np.nan, fmt) == fmt.bits
    assert bits_error(fmt.dtype.type(np.nan), np.nan, fmt) == 0.0
    assert bits_error(fmt.dtype.type(-np.inf), np.inf, fmt) <= fmt.bits


@given(a=st.integers(0, 0xFFFF), b=st.integers(0, 0xFFFF))
def test_bits_error_float16_is_the_distance_on_the_sorted_value_list(a, b):
    fmt = pr.float16
    c, e = np.uint16(a).view(np.float16), np.uint16(b).view(np.float16)
    assume(not np.isnan(c) and not np.isnan(e))
    ordered = np.concatenate([[-np.inf], fmt.all_finite_values().astype(np.float64), [np.inf]])
    steps = abs(np.searchsorted(ordered, float(c)) - np.searchsorted(ordered, float(e)))
    assert bits_error(c, float(e), fmt) == math.log2(1 + steps)


def test_bits_error_rejects_values_outside_the_format():
    with pytest.raises(ValueError, match="not a float16 value"):
        bits_error(np.array([1.0 + 2.0 ** -20]), np.array([1.0]), pr.float16)
    with pytest.raises(ValueError, match="not a bfloat16 value"):
        compare(np.array([1.0 + 2.0 ** -10], dtype=np.float32), np.array([1.0]), "bf16")


# ------------------------------------------------------------------------------ special values
SPECIAL_CASES = [
    # computed, exact, ulp, relative, bits (None: format-dependent, checked separately)
    (np.nan, np.nan, 0.0, 0.0, 0.0),
    (np.nan, 1.0, np.nan, np.nan, "bits"),
    (1.0, np.nan, np.nan, np.nan, "bits"),
    (np.inf, np.inf, 0.0, 0.0, 0.0),
    (-np.inf, -np.inf, 0.0, 0.0, 0.0),
    (np.inf, 2.0, np.inf, np.inf, None),
    (-np.inf, 2.0, -np.inf, np.inf, None),
    (2.0, np.inf, -np.inf, np.inf, None),
    (2.0, -np.inf, np.inf, np.inf, None),
    (np.inf, -np.inf, np.inf, np.inf, None),
    (-0.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, -0.0, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
@pytest.mark.parametrize("exact_kind", ["float", "mpf"])
def test_special_values_table(fmt, exact_kind):
    c = np.array([case[0] for case in SPECIAL_CASES]).astype(np.float32).astype(fmt.dtype)
    y = np.array([case[1] for case in SPECIAL_CASES])
    if exact_kind == "mpf":
        y = np.array([mpmath.mpf(v) for v in y], dtype=object)
    u, r, b = ulp_error(c, y, fmt), relative_error(c, y), bits_error(c, y, fmt)
    for i, (_, _, ulp_expected, rel_expected, bits_expected) in enumerate(SPECIAL_CASES):
        assert np.array_equal(u[i], ulp_expected, equal_nan=True), (i, u[i])
        assert np.array_equal(r[i], rel_expected, equal_nan=True), (i, r[i])
        if bits_expected == "bits":
            assert b[i] == fmt.bits
        elif bits_expected is not None:
            assert b[i] == bits_expected
    assert not np.signbit(u[-2]) and not np.signbit(u[-1])  # no -0 error


def test_exact_beyond_float64_range_is_still_finite():
    # an mpf of 2^1100 rounds to inf in every format; the computed inf is then exact in bits,
    # but its ulp error against the finite exact value is +inf, and max is -inf ulps... away
    huge = mpmath.mpf(2) ** 1100
    assert bits_error(np.float64(np.inf), huge, pr.float64) == 0.0
    assert ulp_error(np.float64(np.inf), huge, pr.float64) == math.inf
    assert ulp_error(np.float64(pr.float64.max), huge, pr.float64) == \
        float((Fraction(pr.float64.max) - Fraction(2) ** 1100) / Fraction(2) ** (1100 - 52))


def test_exact_values_far_outside_every_format():
    # mpmath happily makes exp(1e19); the metrics must not build 10^19-bit integers for it
    huge = mpmath.mpf((5, 10**19))          # 1.25 * 2^(10^19 + 2)
    tiny = mpmath.mpf((-5, -10**19))
    assert ulp_error(np.float16(1.0), huge, "f16") == -1.25 * 2**10   # -y / ulp(y); 1 is negligible
    assert ulp_error(np.float16(1.0), tiny, "f16") == 2.0 ** 24       # 1 / smallest subnormal
    assert ulp_error(np.float16(np.inf), huge, "f16") == math.inf
    assert relative_error(np.float16(1.0), huge) == 1.0
    assert relative_error(np.float16(1.0), tiny) == math.inf
    assert bits_error(np.float16(np.inf), huge, "f16") == 0.0
    assert bits_error(np.float16(-0.0), tiny, "f16") == 0.0
    big_mpfr = gmpy2.mpfr(2) ** (2**28)
    assert bits_error(np.float32(np.inf), big_mpfr, "f32") == 0.0
    assert ulp_error(np.float32(np.inf), big_mpfr, "f32") == math.inf


# ------------------------------------------------------------------------------ compare
def test_compare_counts_and_statistics():
    fmt = pr.float16
    # 100 values at 1 + k ulps of the exact 1.0: |ulp errors| 0..99
    computed = (1.0 + np.arange(100) * 2.0 ** -10).astype(np.float16)
    report = compare(computed, np.ones(100), fmt)
    assert isinstance(report, Comparison)
    assert report.n == 100 and report.exact_matches == 1
    assert report.max_abs_ulp == 99 and report.median_abs_ulp == 49.5 and report.p99_abs_ulp == 98
    assert report.max_bits == math.log2(100)
    assert report.mean_bits == pytest.approx(np.mean(np.log2(1 + np.arange(100))), rel=1e-15)
    assert report.nan_mismatches == 0 and report.inf_mismatches == 0
    assert not report.all_exact


def test_compare_special_values():
    fmt = pr.float16
    computed = np.array([np.nan, np.nan, 1.0, np.inf, 65504.0, np.inf, -0.0, 2.0], dtype=np.float16)
    exact_values = np.array([mpmath.nan, mpmath.mpf(1), mpmath.nan, mpmath.mpf(70000),
                             mpmath.mpf(70000), mpmath.mpf(3), mpmath.mpf(0), mpmath.mpf(2)],
                            dtype=object)
    report = compare(computed, exact_values, fmt)
    # matches: NaN/NaN, inf/70000 (rounds to inf), -0/0, 2/2
    assert report.exact_matches == 4
    assert report.nan_mismatches == 2
    assert report.inf_mismatches == 2                     # 65504 vs inf, inf vs 3
    # ulp statistics only over the finite comparisons (-0/0 and 2/2 here)
    assert report.max_abs_ulp == 0.0 and report.max_bits == 16
    overflow = compare(np.array([np.inf, 1.0], dtype=np.float16),
                       np.array([mpmath.mpf(70000), Fraction(4097, 4096)], dtype=object), fmt)
    assert overflow.exact_matches == 2 and overflow.inf_mismatches == 0
    assert overflow.max_abs_ulp == 0.25
    d = report.as_dict()
    assert d["n"] == 8 and d["format"] == "float16" and set(d) >= {
        "exact_matches", "max_abs_ulp", "median_abs_ulp", "p99_abs_ulp", "max_bits", "mean_bits",
        "nan_mismatches", "inf_mismatches"}


def test_compare_all_exact_and_printing():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500)
    exact_values = np.exp(x.astype(np.float32).astype(np.float64))
    report = compare(pr.float32.round(exact_values), exact_values, "float32")
    assert report.all_exact and report.max_abs_ulp <= 0.5 and report.max_bits == 0
    text = str(report)
    lines = text.splitlines()
    assert lines[0] == "comparison in float32"
    assert "exact matches" in text and "500 of 500 (100 %)" in text
    for name in ["max |ulp error|", "median |ulp error|", "p99 |ulp error|", "max bits of error",
                 "mean bits of error", "NaN mismatches", "inf mismatches"]:
        assert name in text
    # aligned: every value starts in the same column
    value_starts = {re.match(r"  \S.*?\s{2,}(\S)", line).start(1) for line in lines[1:]}
    assert len(value_starts) == 1, text


def test_compare_empty():
    report = compare(np.array([], dtype=np.float16), np.array([]), "f16")
    assert report.n == 0 and report.exact_matches == 0 and math.isnan(report.max_abs_ulp)
    assert "0 of 0" in str(report)


def test_numpy_exp_float32_against_exact():
    # the README's example: numpy's float32 exp is within a few ulps
    x = np.linspace(-10, 10, 301, dtype=np.float32)
    with mpmath.workdps(40):
        exact_values = np.array([mpmath.exp(mpmath.mpf(float(v))) for v in x], dtype=object)
    report = compare(np.exp(x), exact_values, pr.float32)
    assert report.max_abs_ulp < 4 and report.nan_mismatches == 0


# ------------------------------------------------------------------------------ inputs
def test_inputs_and_shapes():
    assert isinstance(ulp_error(np.float16(1.0), 1.0, "f16"), float)
    out = ulp_error(np.ones((2, 3), dtype=BF16), np.ones((2, 3)), pr.bfloat16)
    assert out.shape == (2, 3) and out.dtype == np.float64
    assert ulp_error(np.float16(1.0), gmpy2.mpfr(1), "f16") == 0.0
    assert ulp_error(np.float16(1.0), 1, "f16") == 0.0
    assert ulp_error(np.float16(2.0), gmpy2.mpq(3, 2), "f16") == 512.0
    with pytest.raises(ValueError, match="same shape"):
        ulp_error(np.ones(3, dtype=np.float16), np.ones(4), "f16")
    with pytest.raises(TypeError):
        ulp_error(np.array(["a"]), np.ones(1), "f16")
    with pytest.raises(TypeError):
        ulp_error(np.ones(1), np.array([object()], dtype=object), "f16")
    with pytest.raises(ValueError, match="unknown format"):
        ulp_error(np.ones(1), np.ones(1), "f8")


# ----------------------------------------------------------------- exact values of any magnitude
# beyond these the exact value's share of each metric is below half a float64 ulp: for tiny y,
# y / 2^-1074 < 2^-1075 and c / y > 2^1024 (c != 0); for huge y, c / ulp(y) is negligible
METRIC_FAR_EXPONENTS = far_exponents.filter(lambda top: abs(top) >= 2200)


@pytest.mark.parametrize("fmt", FORMATS, ids=FMT_IDS)
@given(data=st.data())
def test_metrics_of_exact_values_far_outside_every_format(fmt, data):
    """Exact y = s m 2^(E - bits(m)), far beyond fmt (and beyond a C long), every exact type.

    Huge y: ulp(y) = 2^(E - p), so (c - y) / ulp(y) = -s m 2^(p - bits(m)) + c 2^(p - E), the last
    term far below half a float64 ulp of the first (m has at most 53 bits: the first is exact).
    Tiny y: ulp(y) is the smallest subnormal 2^(emin - p + 1), so the error is c 2^(p - 1 - emin)
    (y is far below half a float64 ulp of it), and 0 for c = 0.
    """
    value, sign, man, top = data.draw(far_values(53, METRIC_FAR_EXPONENTS))
    c = f64(data.draw(values_of(fmt)))
    rounded = math.copysign(math.inf if top > 0 else 0.0, sign)
    if top > 0:
        want_ulp = -sign * math.ldexp(man, fmt.p - man.bit_length())
        want_rel = 1.0
    else:
        with np.errstate(over="ignore"):
            want_ulp = float(np.ldexp(c, fmt.p - 1 - fmt.emin)) + 0.0
        want_rel = 1.0 if c == 0 else math.inf
    computed = np.asarray(c).astype(fmt.dtype)
    assert ulp_error(computed, value, fmt) == want_ulp
    assert relative_error(computed, value) == want_rel
    # the distance to the correct rounding, +-inf or +-0, as for that value given as a float
    assert bits_error(computed, value, fmt) == bits_error(computed, rounded, fmt)
    report = compare(np.array([c, rounded]).astype(fmt.dtype),
                     np.array([value, value], dtype=object), fmt)
    assert report.exact_matches == 1 + (c == rounded)


@given(far=far_values(max_mantissa_bits=300))
def test_ulp_error_of_zero_against_a_huge_long_mantissa_is_rounded_once(far):
    """c = 0: the error is exactly -y / ulp(y) = -s m 2^(p - bits(m)), rounded once to float64
    (Python's int division is correctly rounded)."""
    value, sign, man, top = far
    assume(top > 0)
    for fmt in FORMATS:
        want = -sign * (man << fmt.p) / (1 << man.bit_length())
        assert ulp_error(np.zeros((), fmt.dtype), value, fmt) == want


def test_metrics_beyond_a_c_long_hand_made():
    tiny = mpmath.mpf("1e-1000000")
    beyond_c_long = mpmath.mpf(mpmath.libmp.from_man_exp(-3, -(2**70)))
    for fmt in FORMATS:
        zero = np.zeros(2, fmt.dtype)
        exact = np.array([tiny, beyond_c_long], dtype=object)
        assert np.array_equal(ulp_error(zero, exact, fmt), [0.0, 0.0])
        assert np.array_equal(relative_error(zero, exact), [1.0, 1.0])
        assert np.array_equal(bits_error(zero, exact, fmt), [0.0, 0.0])
        assert compare(zero, exact, fmt).all_exact
    # exp(-1e308), as the exact softmax of float64 logits at +-max has it, against 2^-1074
    assert ulp_error(np.float64(2.0 ** -1074), mpmath.exp(-mpmath.mpf(1e308)), "f64") == 1.0
    assert ulp_error(np.float16(1.0), Fraction(1, 2**5000), "f16") == 2.0 ** 24
