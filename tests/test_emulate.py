"""precision.exact.emulate: correctly rounded op-by-op arithmetic, and the fixed summation orders.

References used, each independent of the code under test:
* numpy float16/float32/float64 and ml_dtypes bfloat16 arithmetic, which is correctly rounded
  per operation for + − × ÷ √ (float16/bfloat16 compute in float32 and round once: exact because
  24 >= 2p + 2);
* a from-first-principles rounding of Python Fractions (``round_fraction`` below);
* mpmath at 60 digits for exp/log/log1p/expm1 near rounding boundaries.
"""
import math
import operator
from fractions import Fraction

import gmpy2
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st

import precision as pr
from precision.exact import emulate, pairwise_sum, kahan_sum, sequential_sum
from precision.exact.emulate import Emulated, to_mpfr
from tests.test_formats import far_rounding, far_values

BF16 = ml_dtypes.bfloat16
FMT_NAMES = ["float16", "bfloat16", "float32", "float64"]
NATIVE = {"float16": np.float16, "bfloat16": BF16, "float32": np.float32, "float64": np.float64}
UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


# ------------------------------------------------------------------------------ references
def round_fraction(q: Fraction, fmt) -> float:
    """q rounded to nearest-even in fmt, written from the IEEE definition (no gmpy2)."""
    if q == 0:
        return 0.0
    sign = -1.0 if q < 0 else 1.0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, fmt.emin)                      # below the normal range the spacing is fixed
    spacing = Fraction(2) ** (e - fmt.p + 1)
    scaled = a / spacing
    m = math.floor(scaled)
    rest = scaled - m
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and m % 2 == 1):
        m += 1
    value = m * spacing
    if value >= Fraction(2) ** (fmt.emax + 1):
        return sign * math.inf
    return sign * float(value)


def bits_of(values, fmt_name):
    """Bit patterns as unsigned ints, NaNs collapsed to one pattern (values: exact in the format)."""
    with np.errstate(invalid="ignore"):
        return _bits_of(values, fmt_name)


def _bits_of(values, fmt_name):
    arr = np.asarray(values, dtype=np.float64).astype(NATIVE[fmt_name]) \
        if fmt_name != "bfloat16" else np.asarray(values, dtype=np.float64).astype(np.float32).astype(BF16)
    u = arr.view(UINT[arr.dtype.itemsize * 8]).astype(np.uint64)
    nan = np.isnan(np.asarray(values, dtype=np.float64))
    return np.where(nan, np.uint64(0xFFFFFFFFFFFFFFFF), u)


def random_values(fmt_name, n, seed):
    """n values of the format from uniformly random bit patterns (NaN, inf, subnormals included)."""
    rng = np.random.default_rng(seed)
    bits = 8 * np.dtype(NATIVE[fmt_name]).itemsize
    pattern = rng.integers(0, 2**bits, n, dtype=np.uint64).astype(UINT[bits])
    return pattern.view(NATIVE[fmt_name])


def near_one(fmt_name, n, seed):
    """Values near 1 with many exact ties in sums and products."""
    rng = np.random.default_rng(seed)
    p = pr.format(fmt_name).p
    k = rng.integers(0, 2 ** (p - 1), n)
    return (1.0 + k * 2.0 ** (1 - p)).astype(NATIVE[fmt_name]) * rng.choice([-1, 1], n) * \
        np.exp2(rng.integers(-3, 3, n)).astype(NATIVE[fmt_name])


def check_binary_op(fmt_name, name, a, b):
    ref_op = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[name]
    with np.errstate(all="ignore"):
        ref = ref_op(a, b)
    em = emulate(fmt_name)
    op = getattr(em, name)
    with np.errstate(invalid="ignore"):
        a64, b64, ref64 = a.astype(np.float64), b.astype(np.float64), ref.astype(np.float64)
    got = [op(x, y) for x, y in zip(a64.tolist(), b64.tolist())]
    mismatch = bits_of(got, fmt_name) != bits_of(ref64, fmt_name)
    assert not mismatch.any(), (
        f"{fmt_name} {name}: {mismatch.sum()} mismatches, first "
        f"{a[mismatch][0]!r} {name} {b[mismatch][0]!r} = {np.asarray(got)[mismatch][0]!r}, "
        f"native {ref64[mismatch][0]!r}")


# ------------------------------------------------------------------------------ contexts
def test_contexts_are_the_ieee_ones():
    # MPFR exponents are IEEE's + 1; emin is the MPFR exponent of the smallest subnormal
    for bits, name in [(16, "float16"), (32, "float32"), (64, "float64")]:
        ieee, ctx = gmpy2.ieee(bits), emulate(name).context
        assert (ctx.precision, ctx.emin, ctx.emax, ctx.subnormalize) == \
            (ieee.precision, ieee.emin, ieee.emax, True)
    ctx = emulate("bfloat16").context
    assert (ctx.precision, ctx.emin, ctx.emax, ctx.subnormalize) == (8, -132, 128, True)


@pytest.mark.parametrize("alias,name", [("f16", "float16"), ("bf16", "bfloat16"), ("f32", "float32"),
                                        ("f64", "float64"), (pr.bfloat16, "bfloat16"),
                                        (np.float32, "float32")])
def test_emulate_accepts_names_and_formats(alias, name):
    em = emulate(alias)
    assert isinstance(em, Emulated) and em.fmt is pr.format(name)
    assert em is emulate(name)  # cached
    assert em.zero == 0.0 and math.copysign(1.0, em.zero) == 1.0


def test_emulate_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        emulate("float8")


# ------------------------------------------------------------------------------ + − × ÷ vs native
@pytest.mark.parametrize("fmt_name", FMT_NAMES)
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_ops_match_native_on_random_bit_patterns(fmt_name, name):
    a = random_values(fmt_name, 6000, seed=1)
    b = random_values(fmt_name, 6000, seed=2)
    check_binary_op(fmt_name, name, a, b)


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_binary_ops_match_native_near_ties(fmt_name, name):
    check_binary_op(fmt_name, name, near_one(fmt_name, 4000, 3), near_one(fmt_name, 4000, 4))


def test_float16_subnormal_and_overflow_results():
    tiny = 2.0 ** -24
    f16 = emulate("float16")
    a = np.array([tiny, 3 * tiny, 2.0 ** -12, 2.0 ** -12, 65504.0, 65504.0, 65504.0, -65504.0,
                  2.0 ** -14, 300.0], dtype=np.float16)
    b = np.array([2.0 ** -1, 2.0 ** -1, 2.0 ** -13, 3 * 2.0 ** -13, 16.0, 8.0, 2.0, 2.0,
                  -2.0 ** -15, 300.0], dtype=np.float16)
    for name in ["add", "sub", "mul", "div"]:
        check_binary_op("float16", name, a, b)
    assert f16.mul(2.0 ** -12, 2.0 ** -13) == 0.0          # 2^-25: a tie, to even (0)
    assert f16.mul(3 * 2.0 ** -13, 2.0 ** -12) == 2 * tiny  # 1.5 * 2^-24: tie to even
    assert f16.add(65504.0, 16.0) == math.inf               # 65520 ties to 2^16: overflow
    assert f16.add(65504.0, 15.0) == 65504.0


def test_bfloat16_subnormals_and_overflow():
    bf = emulate("bfloat16")
    tiny = 2.0 ** -133
    bmax = float(pr.bfloat16.max)
    assert bf.mul(2.0 ** -70, 2.0 ** -63) == tiny
    assert bf.mul(2.0 ** -67, 2.0 ** -67) == 0.0            # 2^-134: tie to even (0)
    assert bf.mul(3 * 2.0 ** -67, 2.0 ** -67) == 2 * tiny   # 1.5 * 2^-133: tie to even
    assert bf.mul(5 * 2.0 ** -68, 2.0 ** -67) == tiny       # 1.25 * 2^-133: below the tie
    assert bf.div(2.0 ** -126, 2.0 ** 7) == tiny
    assert bf.sub(2.0 ** -126, 2.0 ** -126 + 2 * tiny) == -2 * tiny   # exact subnormal difference
    assert bf.add(bmax, 2.0 ** 119) == math.inf             # exactly half an ulp: ties to even (2^128)
    assert bf.add(bmax, 2.0 ** 118) == bmax
    assert bf.mul(-bmax, 2.0) == -math.inf
    # the same cases through ml_dtypes' own arithmetic
    a = np.array([2.0 ** -70, 2.0 ** -67, 3 * 2.0 ** -67, 5 * 2.0 ** -68, bmax, bmax, -bmax],
                 dtype=np.float32).astype(BF16)
    b = np.array([2.0 ** -63, 2.0 ** -67, 2.0 ** -67, 2.0 ** -67, 1.0, 2.0, 2.0],
                 dtype=np.float32).astype(BF16)
    check_binary_op("bfloat16", "mul", a, b)


@given(st.floats(width=16), st.floats(width=16))
def test_float16_ops_match_numpy(x, y):
    a, b = np.array([x], dtype=np.float16), np.array([y], dtype=np.float16)
    for name in ["add", "sub", "mul", "div"]:
        check_binary_op("float16", name, a, b)


bf16_values = st.integers(0, 0xFFFF).map(lambda b: float(np.uint16(b).view(BF16)))


@given(bf16_values, bf16_values)
def test_bfloat16_ops_match_ml_dtypes(x, y):
    a = np.array([x], dtype=np.float32).astype(BF16)
    b = np.array([y], dtype=np.float32).astype(BF16)
    for name in ["add", "sub", "mul", "div"]:
        check_binary_op("bfloat16", name, a, b)


@given(st.floats(width=32), st.floats(width=32))
def test_float32_ops_match_numpy(x, y):
    a, b = np.array([x], dtype=np.float32), np.array([y], dtype=np.float32)
    for name in ["add", "sub", "mul", "div"]:
        check_binary_op("float32", name, a, b)


# ------------------------------------------------------------------------------ fma, round
finite16 = st.floats(width=16, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("fmt_name", ["float16", "bfloat16"])
@given(a=finite16, b=finite16, c=finite16)
def test_fma_is_one_rounding_of_the_exact_value(fmt_name, a, b, c):
    em = emulate(fmt_name)
    a, b, c = em.round(a), em.round(b), em.round(c)
    expected = round_fraction(Fraction(a) * Fraction(b) + Fraction(c), em.fmt)
    got = em.fma(a, b, c)
    if expected == 0:
        assert got == 0  # the sign of an exact zero sum follows IEEE, checked separately
    else:
        assert got == expected


def test_fma_differs_from_mul_then_add():
    f16 = emulate("float16")
    a = 1.0 + 2.0 ** -10
    # a*a = 1 + 2^-9 + 2^-20: mul rounds the 2^-20 away, fma keeps it for the subtraction
    assert f16.sub(f16.mul(a, a), 1.0 + 2.0 ** -9) == 0.0
    assert f16.fma(a, a, -(1.0 + 2.0 ** -9)) == 2.0 ** -20


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
@given(st.fractions(max_denominator=10**30).filter(lambda q: abs(q) < 10**40))
def test_round_of_fractions_from_first_principles(fmt_name, q):
    em = emulate(fmt_name)
    assert em.round(q) == round_fraction(q, em.fmt)
    assert em.round(gmpy2.mpq(q.numerator, q.denominator)) == round_fraction(q, em.fmt)


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
@given(st.floats(allow_nan=False))
def test_round_of_float64_is_one_rounding(fmt_name, x):
    em = emulate(fmt_name)
    expected = round_fraction(Fraction(x), em.fmt) if math.isfinite(x) else x
    assert em.round(x) == expected
    assert em.round(mpmath.mpf(x)) == expected
    assert em.round(gmpy2.mpfr(x)) == expected


def test_round_bfloat16_is_not_fooled_by_double_rounding():
    # 1 + 2^-8 + 2^-30 lies just above a bfloat16 midpoint; through float32 it lands on it
    x = 1.0 + 2.0 ** -8 + 2.0 ** -30
    assert float(np.float32(x)) == 1.0 + 2.0 ** -8
    assert emulate("bfloat16").round(x) == 1.0 + 2.0 ** -7


def test_round_exact_inputs():
    f16 = emulate("float16")
    assert f16.round(2**70) == math.inf
    assert f16.round(2049) == 2048.0  # tie to even
    assert f16.round(2051) == 2052.0
    assert f16.round(gmpy2.mpz(2051)) == 2052.0
    assert f16.round(np.int64(-2051)) == -2052.0
    assert f16.round(mpmath.mpf(1) / 3) == float(np.float16(1 / 3))
    assert math.isnan(f16.round(mpmath.nan))
    assert f16.round(-mpmath.inf) == -math.inf
    assert f16.round(np.float16(0.5)) == 0.5
    assert f16.round(BF16(1.5)) == 1.5
    with mpmath.workprec(300):
        tiny_above_tie = (1 + mpmath.mpf(2) ** -11) + mpmath.mpf(2) ** -200
    assert f16.round(tiny_above_tie) == 1 + 2.0 ** -10


def test_round_far_outside_every_format():
    f16 = emulate("float16")
    huge, tiny = mpmath.mpf((3, 10**19)), mpmath.mpf((-3, -10**19))
    assert f16.round(huge) == math.inf and f16.round(-huge) == -math.inf
    assert f16.round(tiny) == 0.0 and math.copysign(1.0, f16.round(tiny)) == -1.0
    assert emulate("float64").round(gmpy2.mpfr(2) ** (2**28)) == math.inf
    with pytest.raises(OverflowError, match="exponent range"):
        f16.add(huge, 1.0)


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
@given(far=far_values())
def test_round_values_of_any_magnitude_and_type(fmt_name, far):
    value, sign, _, top = far
    got = emulate(fmt_name).round(value)
    assert got == far_rounding(sign, top) and math.copysign(1.0, got) == sign


def test_bad_inputs():
    f16 = emulate("float16")
    with pytest.raises(TypeError, match="round it first"):
        f16.add(Fraction(1, 3), 1.0)
    with pytest.raises(TypeError, match="boolean"):
        f16.mul(True, 1.0)
    with pytest.raises(TypeError):
        f16.add("1", 1.0)
    with pytest.raises(TypeError):
        f16.sqrt(1 + 2j)
    with pytest.raises(TypeError):
        f16.round(mpmath.mpc(1, 1))


def test_inputs_are_taken_exactly():
    f16 = emulate("float16")
    # 2^-11 + 2^-30 rounded to float16 first would make 1 + it a tie rounding down to 1
    assert f16.add(1.0, 2.0 ** -11 + 2.0 ** -30) == 1.0 + 2.0 ** -10
    assert f16.add(2.0 ** -24, 2.0 ** -25) == 2.0 ** -23   # 1.5 smallest subnormals: tie to even
    assert to_mpfr(2.0 ** -1074) == gmpy2.mpfr(2) ** -1074


# ------------------------------------------------------------------------------ special values
NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
def test_special_values(fmt_name):
    em = emulate(fmt_name)
    is_nan = math.isnan

    def signed(x):
        return (x, math.copysign(1.0, x))

    for op in [em.add, em.sub, em.mul, em.div]:
        assert is_nan(op(NAN, 1.0)) and is_nan(op(1.0, NAN)) and is_nan(op(NAN, NAN))
    for op in [em.sqrt, em.exp, em.log, em.log1p, em.expm1, em.neg, em.round]:
        assert is_nan(op(NAN))
    assert is_nan(em.fma(NAN, 1.0, 1.0)) and is_nan(em.fma(0.0, INF, 1.0))
    assert is_nan(em.sub(INF, INF)) and is_nan(em.add(INF, -INF))
    assert is_nan(em.mul(0.0, INF)) and is_nan(em.div(0.0, 0.0)) and is_nan(em.div(INF, INF))
    assert em.div(1.0, 0.0) == INF and em.div(1.0, -0.0) == -INF and em.div(-1.0, 0.0) == -INF
    assert em.add(INF, 1.0) == INF and em.mul(-INF, 2.0) == -INF
    assert is_nan(em.sqrt(-1.0)) and is_nan(em.log(-1.0)) and is_nan(em.log1p(-2.0))
    assert em.log(0.0) == -INF and em.log(-0.0) == -INF and em.log1p(-1.0) == -INF
    assert em.exp(-INF) == 0.0 and em.exp(INF) == INF and em.expm1(-INF) == -1.0
    assert signed(em.sqrt(-0.0)) == (0.0, -1.0)
    assert signed(em.sub(1.0, 1.0)) == (0.0, 1.0)
    assert signed(em.add(-0.0, -0.0)) == (0.0, -1.0)
    assert signed(em.add(-0.0, 0.0)) == (0.0, 1.0)
    assert signed(em.mul(-1.0, 0.0)) == (0.0, -1.0)
    assert signed(em.neg(0.0)) == (0.0, -1.0)
    assert signed(em.round(-0.0)) == (0.0, -1.0)
    fmt = em.fmt
    assert em.mul(fmt.max, 2.0) == INF and em.exp(1000.0) == INF
    assert em.mul(fmt.smallest_subnormal, 0.5) == 0.0   # a tie, to even
    assert em.mul(fmt.smallest_subnormal, 0.75) == fmt.smallest_subnormal


# ------------------------------------------------------------------------------ √ and elementary functions
@pytest.mark.parametrize("fmt_name", ["float16", "bfloat16"])
def test_sqrt_exhaustive_16bit(fmt_name):
    fmt = pr.format(fmt_name)
    values = fmt.all_bit_patterns()
    with np.errstate(invalid="ignore"):
        ref = np.sqrt(values).astype(np.float64)  # float32 sqrt, rounded once: correct for p <= 11
    em = emulate(fmt_name)
    with np.errstate(invalid="ignore"):
        values64 = values.astype(np.float64)
    got = [em.sqrt(v) for v in values64.tolist()]
    assert np.array_equal(bits_of(got, fmt_name), bits_of(ref, fmt_name))


@given(st.floats(width=32))
def test_float32_sqrt_matches_numpy(x):
    with np.errstate(invalid="ignore"):
        ref = float(np.sqrt(np.float32(x)))
    got = emulate("float32").sqrt(x)
    assert (math.isnan(got) and math.isnan(ref)) or (got == ref and math.copysign(1, got) == math.copysign(1, ref))


def _correctly_rounded_elementary(name, values, fmt):
    """fmt's correctly rounded name(values) for float64 inputs: libm in float64 rounded once, and
    mpmath at 60 digits wherever the float64 result is within 8 float64-ulps of a rounding
    boundary (so libm's error, below one float64-ulp, cannot matter elsewhere)."""
    libm = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1}[name]
    with np.errstate(all="ignore"):
        r = libm(values)
        lo = fmt.round(r * (1 - 8 * 2.0 ** -53)).astype(np.float64)
        hi = fmt.round(r * (1 + 8 * 2.0 ** -53)).astype(np.float64)
        out = fmt.round(r).astype(np.float64)
    doubtful = np.flatnonzero((lo != hi) & np.isfinite(r))
    mp_fn = getattr(mpmath, name)
    with mpmath.workdps(60):
        for i in doubtful:
            out[i] = float(fmt.round(mp_fn(mpmath.mpf(float(values[i])))))
    return out, doubtful.size


@pytest.mark.parametrize("fmt_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["exp", "log", "log1p", "expm1"])
def test_elementary_functions_exhaustive_16bit(fmt_name, name):
    fmt = pr.format(fmt_name)
    with np.errstate(invalid="ignore"):
        values = fmt.all_bit_patterns().astype(np.float64)
    ref, n_doubtful = _correctly_rounded_elementary(name, values, fmt)
    assert n_doubtful < 200  # the mpmath path is the exception, not the rule
    em = emulate(fmt_name)
    op = getattr(em, name)
    got = [op(v) for v in values.tolist()]
    mismatch = bits_of(got, fmt_name) != bits_of(ref, fmt_name)
    assert not mismatch.any(), (name, values[mismatch][:5], np.asarray(got)[mismatch][:5], ref[mismatch][:5])


def test_exp_on_the_inputs_a_float32_intermediate_gets_wrong():
    # DESIGN.md §3.3: exp(0x1f79) correctly rounded is 0x3c07; via float32 one gets 0x3c08
    f16 = emulate("float16")
    x = float(np.uint16(0x1F79).view(np.float16))
    assert np.float16(f16.exp(x)).view(np.uint16) == 0x3C07


@pytest.mark.parametrize("name", ["exp", "log", "log1p", "expm1"])
@given(st.floats(width=32, allow_nan=False))
def test_float32_elementary_correctly_rounded(name, x):
    fmt = pr.float32
    ref, _ = _correctly_rounded_elementary(name, np.array([x]), fmt)
    assert bits_of([getattr(emulate("float32"), name)(x)], "float32") == bits_of(ref, "float32")


# ------------------------------------------------------------------------------ summation orders
def pairwise_reference(x, add):
    """The pairwise order re-implemented with whole-array operations: rows of 8 lanes."""
    x = np.asarray(x)
    n = x.size
    if n == 0:
        return x.dtype.type(0)
    n_leaves = -(-n // 128)
    padded = np.zeros(n_leaves * 128, dtype=x.dtype)   # +0 padding: lane + 0 leaves lanes unchanged
    padded[:n] = x
    blocks = padded.reshape(n_leaves, 16, 8)
    lanes = np.zeros((n_leaves, 8), dtype=x.dtype)
    for r in range(16):
        lanes = add(lanes, blocks[:, r, :])
    l = [lanes[:, j] for j in range(8)]
    level = add(add(add(l[0], l[1]), add(l[2], l[3])), add(add(l[4], l[5]), add(l[6], l[7])))
    while level.size > 1:
        paired = add(level[0:-1:2], level[1::2])
        if level.size % 2:
            paired = np.concatenate([paired, level[-1:]])
        level = paired
    return level[0]


SIZES = [0, 1, 7, 8, 9, 127, 128, 129, 255, 256, 300, 1000, 128 * 5 + 3]


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
def test_pairwise_order_matches_vectorised_reference(fmt_name):
    rng = np.random.default_rng(5)
    em = emulate(fmt_name)
    dtype = NATIVE[fmt_name]
    for n in SIZES:
        # spread magnitudes so that the order of additions changes the result
        x = (rng.standard_normal(n) * np.exp2(rng.integers(-12, 12, n))).astype(np.float32).astype(dtype)
        with np.errstate(over="ignore"):
            expected = float(pairwise_reference(x, np.add))
        assert em.sum(x, order="pairwise") == expected, (fmt_name, n)
        assert pairwise_sum(x.astype(np.float64).tolist(), operator.add) == \
            float(pairwise_reference(x.astype(np.float64), np.add))


@pytest.mark.parametrize("fmt_name", FMT_NAMES)
def test_sequential_and_kahan_match_scalar_loops(fmt_name):
    rng = np.random.default_rng(6)
    dtype = NATIVE[fmt_name]
    x = (rng.standard_normal(300) * np.exp2(rng.integers(-8, 8, 300))).astype(np.float32).astype(dtype)
    s = dtype(0)
    for v in x:
        s = dtype(s + v)
    em = emulate(fmt_name)
    assert em.sum(x, order="sequential") == float(s)
    s = c = dtype(0)
    for v in x:
        y = dtype(v - c)
        t = dtype(s + y)
        c = dtype(dtype(t - s) - y)
        s = t
    assert em.sum(x, order="kahan") == float(s)


def test_orders_are_different_orders():
    # 1 followed by 2^-53's: sequentially each addition is lost, pairwise they first add up
    em = emulate("float64")
    x = [1.0] + [2.0 ** -53] * 1023
    assert em.sum(x, order="sequential") == 1.0
    assert em.sum(x, order="pairwise") > 1.0
    assert em.sum(x, order="kahan") == 1.0 + 1022 * 2.0 ** -53 + 2.0 ** -53


def test_float16_sequential_sum_stagnates_and_pairwise_does_not():
    x = np.full(4096, 8.77, dtype=np.float16)          # 8.7734375 in float16
    exact = 4096 * float(x[0])
    f16, bf16 = emulate("float16"), emulate("bfloat16")
    assert f16.sum(x, order="sequential") / 4096 == 8.0  # stuck at 2^15: spacing 32 > 2 * 8.77
    assert abs(f16.sum(x, order="pairwise") - exact) <= 12 * 2.0 ** -11 * exact
    assert abs(f16.sum(x, order="kahan") - exact) <= 2 * 2.0 ** -11 * exact
    xb = x.astype(np.float32).astype(BF16)
    assert bf16.sum(xb, order="sequential") / 4096 == 1.0  # stuck at 2^12
    assert abs(bf16.sum(xb, order="pairwise") / 4096 - 8.75) < 0.2


def test_sums_of_specials_and_empty():
    em = emulate("float16")
    for order in ["pairwise", "sequential", "kahan"]:
        assert em.sum([], order=order) == 0.0
        assert math.copysign(1.0, em.sum([-0.0, -0.0], order=order)) == 1.0  # lanes start at +0
        assert math.isnan(em.sum([1.0, math.nan, 2.0], order=order))
        assert math.isnan(em.sum([math.inf, -math.inf], order=order))
        assert em.sum([65504.0, 65504.0], order=order) == math.inf
    with pytest.raises(ValueError, match="summation order"):
        em.sum([1.0], order="tree")


@pytest.mark.parametrize("fmt_name", ["float16", "bfloat16"])
def test_dot_is_the_sum_of_rounded_products(fmt_name):
    rng = np.random.default_rng(7)
    dtype = NATIVE[fmt_name]
    a = rng.standard_normal(500).astype(np.float32).astype(dtype)
    b = rng.standard_normal(500).astype(np.float32).astype(dtype)
    products = a * b   # native: each product rounded once
    em = emulate(fmt_name)
    assert em.dot(a, b) == float(pairwise_reference(products, np.add))
    assert em.dot(a, b, order="sequential") == em.sum(products, order="sequential")
    with pytest.raises(ValueError, match="lengths"):
        em.dot(a, b[:-1])


def test_max():
    em = emulate("bfloat16")
    assert em.max([1.0, 3.0, -5.0]) == 3.0
    assert math.isnan(em.max([1.0, math.nan, 3.0]))
    assert math.copysign(1.0, em.max([-0.0, 0.0])) == 1.0
    assert math.copysign(1.0, em.max([0.0, -0.0])) == 1.0
    assert em.max(np.array([-np.inf, -1.0], dtype=BF16)) == -1.0
    with pytest.raises(ValueError):
        em.max([])


def test_pairwise_plain_function_with_custom_add():
    calls = []

    def add(a, b):
        calls.append((a, b))
        return a + b

    assert pairwise_sum(range(1, 17), add, 0) == 136
    # 16 elements: 8 lanes of 2 additions each, then 7 additions combining the lanes
    assert len(calls) == 8 * 2 + 7
    assert calls[0] == (0, 1) and calls[1] == (1, 9)       # lane 0: 0 + x0, then + x8
    assert sequential_sum([1, 2, 3], operator.add, 0) == 6
    assert kahan_sum([1.0, 2.0], operator.add, operator.sub, 0.0) == 3.0
