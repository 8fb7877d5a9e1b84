"""precision.formats: constants, correct rounding of float and exact values, neighbours, errors."""
import math
import pickle
import warnings
from fractions import Fraction

import gmpy2
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st

import precision as pr
from precision.formats import PrecisionWarning, round_scalar

ALL = pr.FORMATS
NARROW = (pr.float16, pr.bfloat16)


def fraction_round(q: Fraction, fmt) -> float:
    """Independent oracle: round an exact rational to fmt by integer arithmetic alone."""
    if q == 0:
        return 0.0
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()   # 2**e <= a < 2**(e+2)
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    e = max(e, fmt.emin)                                       # subnormals share emin's step
    step = Fraction(2) ** (e - fmt.p + 1)
    n, rem = divmod(a, step)
    n = int(n)
    if rem > step / 2 or (rem == step / 2 and n % 2 == 1):
        n += 1
    value = n * step
    if value > Fraction(fmt.max):
        return sign * float("inf")
    return sign * float(value)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_constants_agree_with_numpy_and_ml_dtypes(fmt):
    info = ml_dtypes.finfo(fmt.dtype) if fmt is pr.bfloat16 else np.finfo(fmt.dtype)
    assert fmt.max == float(info.max)
    assert fmt.tiny == float(info.smallest_normal)
    assert fmt.smallest_subnormal == float(info.smallest_subnormal)
    assert fmt.eps == float(info.eps) == 2 * fmt.u
    assert fmt.p == info.nmant + 1
    assert fmt.bits == 8 * fmt.dtype.itemsize


def test_the_design_table():
    assert [f.p for f in ALL] == [11, 8, 24, 53]
    assert pr.float16.max == 65504 and pr.float16.tiny == 2.0**-14
    assert pr.float16.smallest_subnormal == 2.0**-24
    assert pr.bfloat16.smallest_subnormal == 2.0**-133 and pr.bfloat16.tiny == 2.0**-126


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(num=st.integers(-(10**40), 10**40), den=st.integers(1, 10**40))
def test_round_exact_rationals_matches_integer_oracle(fmt, num, den):
    q = Fraction(num, den)
    assert float(fmt.round(q)) == fraction_round(q, fmt)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(k=st.integers(0, 1 << 16), scale=st.integers(-1100, 140))
def test_round_midpoints_ties_to_even(fmt, k, scale):
    """Exact midpoints between neighbours, built as rationals, at every scale incl. subnormal."""
    q = Fraction(2 * k + 1, 2) * Fraction(2) ** scale
    assert float(fmt.round(q)) == fraction_round(q, fmt)
    assert float(fmt.round(-q)) == -fraction_round(q, fmt)


@pytest.mark.parametrize("fmt", NARROW, ids=lambda f: f.name)
@given(x=st.floats(allow_nan=False, allow_infinity=True))
def test_round_float64_is_one_correct_rounding(fmt, x):
    got = float(fmt.round(np.float64(x)))
    if np.isinf(x):
        assert got == x
    else:
        assert got == fraction_round(Fraction(x), fmt)


def test_bfloat16_round_is_one_rounding_where_a_float32_route_rounds_twice():
    """1 + 2**-8 + 2**-30 lies just above the midpoint of 1 and its bfloat16 successor, so it
    rounds up; through float32 it first becomes the exact midpoint, which ties to even: down.
    (ml_dtypes <= 0.6 casts float64 -> bfloat16 that way and gives 1.0; 0.7 rounds once. This
    project promises one rounding whatever ml_dtypes does.)"""
    x = np.array([1 + 2.0**-8 + 2.0**-30])
    assert float(pr.bfloat16.round(x)[0]) == 1 + 2.0**-7
    assert float(pr.bfloat16.round(x.astype(np.float32))[0]) == 1.0     # the double rounding


@given(st.integers(0, 2**16 - 2), st.integers(1, 2**20), st.sampled_from([-1, 1]))
def test_bfloat16_round_of_float64_near_midpoints(bits, offset, sign):
    """float64 values a few float64 ulps either side of a bfloat16 midpoint (where a route through
    float32 rounds twice) round by their exact value."""
    pair = np.array([bits, bits + 1], np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)
    if not np.isfinite(pair).all():
        return
    midpoint = (pair[0] + pair[1]) / 2                      # exact in float64
    x = np.array([midpoint + sign * offset * np.spacing(midpoint)])
    assert float(pr.bfloat16.round(x)[0]) == float(fraction_round(Fraction(float(x[0])), pr.bfloat16))


def test_round_mpmath_and_gmpy2_values():
    third = mpmath.mpf(1) / 3
    with mpmath.workdps(50):
        third50 = mpmath.mpf(1) / 3
    assert float(pr.float64.round(third50)) == 1 / 3
    assert float(pr.float32.round(third)) == float(np.float32(1 / 3))
    assert float(pr.float16.round(gmpy2.mpfr("0.1"))) == float(np.float16(0.1))
    assert float(pr.bfloat16.round(mpmath.mpf("1e-45"))) == fraction_round(Fraction(1, 10**45), pr.bfloat16)
    assert np.isnan(float(pr.float16.round(mpmath.nan)))
    assert float(pr.float16.round(mpmath.inf)) == np.inf


def test_round_object_arrays_keep_shape_and_dtype():
    arr = np.array([[Fraction(1, 3), 2], [mpmath.mpf(-0.5), 10**6]], dtype=object)
    out = pr.float16.round(arr)
    assert out.shape == (2, 2) and out.dtype == np.float16
    assert out[1, 1] == np.inf
    s = pr.bfloat16.round(1.0)
    assert isinstance(s, ml_dtypes.bfloat16) or s.dtype == pr.bfloat16.dtype


@pytest.mark.parametrize("fmt", NARROW, ids=lambda f: f.name)
def test_next_up_down_and_ulp_walk_every_finite_value(fmt):
    vals = fmt.all_finite_values()
    up = fmt.next_up(vals[:-1])
    assert np.array_equal(up.astype(np.float64), vals[1:].astype(np.float64))
    down = fmt.next_down(vals[1:])
    assert np.array_equal(down.astype(np.float64), vals[:-1].astype(np.float64))
    assert fmt.next_up(np.array(fmt.max, dtype=fmt.dtype)).astype(float) == np.inf
    pos = vals[(vals.astype(np.float64) >= 0)][:-1].astype(np.float64)
    gaps = fmt.next_up(pos.astype(fmt.dtype)).astype(np.float64) - pos
    assert np.array_equal(fmt.ulp(pos), gaps)


@pytest.mark.parametrize("fmt", (pr.float32, pr.float64), ids=lambda f: f.name)
@given(x=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_ulp_and_neighbours_agree_with_nextafter(fmt, x):
    v = np.array(abs(x), dtype=fmt.dtype)
    nxt = np.nextafter(v, fmt.dtype.type(np.inf))
    assert fmt.next_up(v) == nxt
    if np.isfinite(nxt):
        assert fmt.ulp(float(v)) == float(nxt) - float(v)


def test_format_lookup_and_errors():
    assert pr.format("bf16") is pr.bfloat16 is pr.format(ml_dtypes.bfloat16)
    assert pr.format(np.float32) is pr.float32 is pr.format("single") is pr.format(np.dtype("f4"))
    assert pr.format(pr.float16) is pr.float16
    with pytest.raises(ValueError, match="unknown format 'float8'"):
        pr.format("float8")
    with pytest.raises(ValueError, match="int32"):
        pr.format(np.int32)
    with pytest.raises(TypeError, match="format is named"):
        pr.format(3.5)
    with pytest.raises(TypeError, match="int64"):
        pr.formats.of(np.arange(3))
    with pytest.raises(TypeError, match="numbers"):
        pr.float16.round("abc")
    with pytest.raises(TypeError, match="complex"):
        pr.float16.round(mpmath.mpc(1, 2))
    with pytest.raises(TypeError):
        pr.float16.next_up(np.float32(1))
    with pytest.raises(ValueError, match="enumerate"):
        pr.float32.all_finite_values()


def test_formats_pickle_to_themselves():
    for f in ALL:
        assert pickle.loads(pickle.dumps(f)) is f


def test_round_scalar_warns_when_a_hyperparameter_changes_meaning():
    with pytest.warns(PrecisionWarning, match=r"eps=1e-08 rounds to 0 in float16"):
        assert round_scalar(1e-8, "float16", "eps") == 0.0
    with pytest.warns(PrecisionWarning, match="overflows"):
        round_scalar(1e5, pr.float16, "scale")
    with pytest.warns(PrecisionWarning, match=r"eps=1e-07 becomes"):
        round_scalar(1e-7, pr.float16, "eps")            # 1.19e-7: 19 % away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert round_scalar(0.1, pr.float16, "lr") == float(np.float16(0.1))   # 0.02 % away
        assert round_scalar(1e-8, pr.float32, "eps") == float(np.float32(1e-8))
        assert round_scalar(0, pr.float16, "wd") == 0.0
    assert issubclass(PrecisionWarning, UserWarning)
    with pytest.raises(TypeError, match="lr must be a real number"):
        round_scalar("0.1", pr.float16, "lr")


def test_build_flags_keep_the_arithmetic_contract():
    """-ffp-contract=off must be there; no fast-math flag may ever be (DESIGN.md section 3)."""
    from pathlib import Path
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    args = setup[setup.index("COMPILE_ARGS = ["): setup.index("]", setup.index("COMPILE_ARGS = ["))]
    assert '"-ffp-contract=off"' in args
    for forbidden in ("-ffast-math", "-Ofast", "-funsafe-math-optimizations", "-fassociative-math"):
        assert forbidden not in args


def test_rounding_overflow_is_silent_and_correct():
    """Overflow to inf is the correct rounding, not an error: no RuntimeWarning escapes."""
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("error")
        assert pr.float32.round(np.array([1e39]))[0] == np.inf
        assert pr.float16.round(np.array([-7e4]))[0] == -np.inf
        assert pr.bfloat16.round(np.array([1e300]))[0] == np.inf


# ------------------------------------------------------------------ exact values of any magnitude
EXACT_KINDS = ("mpf", "mpfr", "Fraction", "mpq", "int", "mpz")
# |E| up to this many bits still makes a Fraction or int cheaply
RATIONAL_EXPONENT_LIMIT = 20000
MPFR_EXPONENT_LIMIT = (1 << 29) - 1


def exact_binary(kind, man, exp):
    """man * 2^exp (man a nonzero int) as the exact type named ``kind``, built independently of
    precision (mpmath's and gmpy2's own constructors)."""
    if kind == "mpf":
        return mpmath.mp.make_mpf(mpmath.libmp.from_man_exp(man, exp))  # exact, not rounded
    if kind == "mpfr":
        with gmpy2.context(precision=max(2, abs(man).bit_length()), emin=-(1 << 30), emax=1 << 30):
            return gmpy2.mul_2exp(gmpy2.mpfr(man), exp)
    q = Fraction(man * 2**max(exp, 0), 2**max(-exp, 0))
    if kind == "Fraction":
        return q
    if kind == "mpq":
        return gmpy2.mpq(q.numerator, q.denominator)
    assert q.denominator == 1
    return int(q) if kind == "int" else gmpy2.mpz(int(q))


def kinds_for(top, man_bits):
    """The exact types that can hold a value in [2^(top-1), 2^top) with a man_bits mantissa."""
    kinds = ["mpf"]
    if abs(top) <= MPFR_EXPONENT_LIMIT:
        kinds.append("mpfr")
    if abs(top) <= RATIONAL_EXPONENT_LIMIT:
        kinds += ["Fraction", "mpq"]
        if top >= man_bits:
            kinds += ["int", "mpz"]
    return kinds


# magnitudes 2^(E-1) <= |v| < 2^E beyond every format on both sides, with E beyond MPFR's
# exponent range and beyond a C long (2^63) among them
far_exponents = st.one_of(
    st.integers(1100, RATIONAL_EXPONENT_LIMIT), st.integers(-RATIONAL_EXPONENT_LIMIT, -1100),
    st.integers(MPFR_EXPONENT_LIMIT - 4, MPFR_EXPONENT_LIMIT),
    st.integers(2**62, 2**80), st.integers(-(2**80), -(2**62)),
    st.sampled_from([2**63, -(2**63), 2**70, -(2**70), 2**64 + 1, -(2**64) - 1, 4097, -4097]),
)


@st.composite
def far_values(draw, max_mantissa_bits=200, exponents=far_exponents):
    """(value, sign, mantissa, E): value = sign * mantissa * 2^(E - bits(mantissa)) of any exact
    type that can hold it, so 2^(E-1) <= |value| < 2^E."""
    sign = draw(st.sampled_from([1, -1]))
    man = draw(st.integers(1, 2**max_mantissa_bits - 1))
    top = draw(exponents)
    kind = draw(st.sampled_from(kinds_for(top, man.bit_length())))
    return exact_binary(kind, sign * man, top - man.bit_length()), sign, man, top


def far_rounding(sign, top):
    """The mathematical rule beyond a format's range: |v| >= 2^(emax+1) rounds to +-inf,
    |v| < 2^(emin-p) (half the smallest subnormal) to +-0, the sign kept (far_exponents are
    beyond both for every format)."""
    return math.copysign(math.inf if top > 0 else 0.0, sign)


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(far=far_values())
def test_round_values_far_outside_the_format_to_inf_or_zero(fmt, far):
    value, sign, _, top = far
    expected = far_rounding(sign, top)
    got = fmt.round(value)
    assert got.dtype == fmt.dtype
    assert float(got) == expected and np.signbit(got) == (sign < 0)
    arr = fmt.round(np.array([value, 1, value], dtype=object))
    assert arr.dtype == fmt.dtype and arr.shape == (3,)
    assert same_value(arr, [expected, 1.0, expected])


def same_value(arr, floats):
    """Equal values with equal signs (so -0 differs from +0)."""
    wide = np.asarray(arr).astype(np.float64)
    want = np.array(floats, dtype=np.float64)
    return bool(np.all((wide == want) & (np.signbit(wide) == np.signbit(want))))


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(data=st.data())
def test_round_near_the_underflow_and_overflow_thresholds_matches_integer_oracle(fmt, data):
    """Long mantissas around half the smallest subnormal and around max + half an ulp."""
    lo = fmt.emin - fmt.p + 1                       # 2^lo is the smallest subnormal
    exponents = st.one_of(st.integers(lo - 3, lo + 2), st.integers(fmt.emax - 1, fmt.emax + 3))
    value, sign, man, top = data.draw(far_values(exponents=exponents))
    q = sign * Fraction(man) * Fraction(2) ** (top - man.bit_length())
    expected = fraction_round(q, fmt)
    got = fmt.round(value)
    assert float(got) == expected and np.signbit(got) == (sign < 0), (q, got, expected)


def test_round_far_values_hand_made():
    c_long_tiny = mpmath.mpf(mpmath.libmp.from_man_exp(1, -(2**70)))
    c_long_huge = mpmath.mpf(mpmath.libmp.from_man_exp(-3, 2**70))
    for fmt in ALL:
        assert same_value(fmt.round(mpmath.mpf("1e-1000000")), [0.0])
        assert same_value(fmt.round(-mpmath.mpf("1e1000000")), [-math.inf])
        assert same_value(fmt.round(c_long_tiny), [0.0])
        assert same_value(fmt.round(-c_long_tiny), [-0.0])
        assert same_value(fmt.round(c_long_huge), [-math.inf])
        assert same_value(fmt.round(Fraction(1, 2**5000)), [0.0])
        assert same_value(fmt.round(Fraction(-1, 3 * 2**5000)), [-0.0])
        assert same_value(fmt.round(-(2**5000)), [-math.inf])
        # exp(-1e308), as the exact softmax of float64 logits at +-max produces it
        assert same_value(fmt.round(mpmath.exp(-mpmath.mpf(1e308))), [0.0])
        assert same_value(fmt.round(np.array([mpmath.exp(mpmath.mpf(1e308)), c_long_tiny,
                                              gmpy2.mpfr(2) ** -(2**28)], dtype=object)),
                          [math.inf, 0.0, 0.0])


def test_exact_gmpy_keeps_values_within_the_limit_and_moves_the_rest():
    from precision.formats import EXACT_EXPONENT_LIMIT, exact_gmpy
    inside = mpmath.mpf(mpmath.libmp.from_man_exp(5, EXACT_EXPONENT_LIMIT - 3))  # 5 * 2^4093
    assert gmpy2.mpq(exact_gmpy(inside)) == 5 * 2**(EXACT_EXPONENT_LIMIT - 3)
    beyond = mpmath.mpf(mpmath.libmp.from_man_exp(-5, 2**70))
    assert exact_gmpy(beyond) == -5 * gmpy2.mpfr(2) ** (EXACT_EXPONENT_LIMIT - 3)  # mantissa kept
    with pytest.raises(OverflowError, match="exponent range"):
        exact_gmpy(beyond, clamp=False)
    assert exact_gmpy(Fraction(1, 3)) == gmpy2.mpq(1, 3)
    assert exact_gmpy(np.int64(-7)) == -7 and exact_gmpy(2.5) == 2.5
    with pytest.raises(TypeError, match="boolean"):
        exact_gmpy(True)
    with pytest.raises(TypeError, match="complex"):
        exact_gmpy(1j)


# ------------------------------------------------------------------ storage -> arithmetic formats
def test_arithmetic_table_is_the_kernels_policies():
    """precision cannot import kernels/ (a build-time folder): the two tables must agree."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "policies.py"
    spec = importlib.util.spec_from_file_location("kernel_policies", path)
    policies = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policies)
    assert pr.formats.ARITHMETIC_FOR == policies.ARITH_FOR
    assert set(pr.formats.ARITHMETIC_FOR) == {f.short for f in ALL}


@pytest.mark.parametrize("storage", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize("accum", ALL, ids=lambda f: f.name)
def test_arithmetic_format_is_the_storage_format_or_wider(storage, accum):
    from precision.formats import arithmetic_format
    assert arithmetic_format(None, storage) is storage
    # wider: at least the precision and the exponent range of the storage format
    wider = accum.p >= storage.p and accum.emax >= storage.emax and accum.emin <= storage.emin
    if wider:
        assert arithmetic_format(accum.name, storage) is accum
        assert arithmetic_format(accum.dtype, storage) is accum
    else:
        with pytest.raises(ValueError, match=f"state_format={accum.name} .*{storage.name}"):
            arithmetic_format(accum, storage, name="state_format")


def test_arithmetic_format_names_the_argument_in_lookup_errors():
    from precision.formats import arithmetic_format
    with pytest.raises(ValueError, match="accum: unknown format 'float8'"):
        arithmetic_format("float8", pr.float16)
    with pytest.raises(TypeError, match="accum: a format is named"):
        arithmetic_format(3.5, pr.float16)
    with pytest.raises(ValueError, match="float64 has no wider format"):
        arithmetic_format("float32", pr.float64)
