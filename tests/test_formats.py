"""precision.formats: constants, correct rounding of float and exact values, neighbours, errors."""
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


def test_bfloat16_round_differs_from_ml_dtypes_double_rounding():
    """ml_dtypes casts float64 -> float32 -> bfloat16: two roundings.  1 + 2**-8 + 2**-30 lies
    just above the midpoint of 1 and its bfloat16 successor, so it rounds up; through float32
    it first becomes the exact midpoint, which ties to even: down."""
    x = np.array([1 + 2.0**-8 + 2.0**-30])
    assert float(pr.bfloat16.round(x)[0]) == 1 + 2.0**-7
    assert float(x.astype(ml_dtypes.bfloat16)[0]) == 1.0


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
