"""Long double inputs are rounded once, from all their bits (issue #17 item 5).

``np.longdouble`` on x86-64 Linux carries a 64-bit significand: cutting it to float64 first
(53 bits) and rounding again is a double rounding.  Format.round, precision.exact and
precision.errors take its exact value.
"""
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import precision as pr
from precision.formats import is_extended
from tests.test_formats import fraction_round

L = np.longdouble
pytestmark = pytest.mark.skipif(not is_extended(L), reason="long double is float64 here")
ALL = pr.FORMATS


def exact(x) -> Fraction:
    return Fraction(*x.as_integer_ratio())


def test_the_issue_example_rounds_once():
    """1 + 2^-11 + 2^-60 lies above the float16 midpoint 1 + 2^-11 (the issue's 2^-70 is below
    the long double's own last bit, so 1 + 2^-11 + 2^-70 is the midpoint itself and 1.0 is
    right for it); through float64 it becomes the midpoint and ties to even, down to 1.0."""
    x = L(1) + L(2) ** -11 + L(2) ** -60
    assert float(pr.float16.round(x)) == 1 + 2.0 ** -10
    assert float(pr.float16.round(np.float64(x))) == 1.0           # the double rounding
    assert L(1) + L(2) ** -11 + L(2) ** -70 == L(1) + L(2) ** -11
    assert float(pr.float16.round(L(1) + L(2) ** -11 + L(2) ** -70)) == 1.0
    assert float(pr.exact.to_float64(pr.exact.sqrt(np.array([x * x]))[0])) == float(x)
    assert pr.float16.round(pr.exact.sqrt(np.array([x * x])))[0] == np.float16(1 + 2.0 ** -10)
    assert pr.errors.bits_error(np.float16([1.0]), np.array([x]), pr.float16)[0] == 1.0


# Long doubles with bits beyond float64's: a float64 midpoint-ish head and a small tail.
def long_doubles():
    head = st.floats(allow_nan=False, allow_infinity=False, width=64)
    return st.builds(lambda h, k, s: L(h) + L(s) * np.ldexp(L(abs(h) if h else 1.0), -k),
                     head, st.integers(54, 63), st.sampled_from([-1, 1]))


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
@given(x=long_doubles())
def test_round_takes_every_bit(fmt, x):
    if not np.isfinite(x):
        return
    assert float(fmt.round(x)) == fraction_round(exact(x), fmt)
    arr = np.array([x, -x], dtype=L)
    want = [fraction_round(exact(v), fmt) for v in arr]
    assert pr.format(fmt).round(arr).astype(np.float64).tolist() == want


@given(x=long_doubles().filter(lambda v: np.isfinite(v) and abs(v) < 1e300))
def test_exact_and_errors_take_every_bit(x):
    arr = np.array([x], dtype=L)
    with mpmath.workdps(80):
        want = mpmath.mpf(exact(x).numerator) / exact(x).denominator
        got = pr.exact.expm1(arr / L(2) ** 1000)[0]     # expm1(y) = y (1 + y/2 ...) keeps y's bits
        assert got == 0 or abs(got / mpmath.expm1(want / mpmath.mpf(2) ** 1000) - 1) < 1e-40
        assert pr.exact.log1p(arr - arr)[0] == 0
    for fmt in ALL:
        rounded = fmt.round(arr)
        # the correctly rounded value is an exact match and within half an ulp
        assert pr.errors.compare(rounded, arr, fmt).exact_matches == 1
        if np.isfinite(rounded.astype(np.float64)[0]):      # else an overflow: inf ulps
            assert abs(pr.errors.ulp_error(rounded, arr, fmt)[0]) <= 0.5
        assert pr.errors.bits_error(rounded, arr, fmt)[0] == 0


def test_computed_long_doubles_beyond_float64_are_refused():
    x = np.array([L(1) + L(2) ** -60])
    with pytest.raises(ValueError, match="not a float64 value"):
        pr.errors.ulp_error(x, np.array([1.0]), pr.float64)
    # long doubles that are float64 values are fine
    assert pr.errors.ulp_error(np.array([L(1)]), np.array([1.0]), pr.float64)[0] == 0
