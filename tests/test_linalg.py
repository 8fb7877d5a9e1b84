"""precision.linalg.matmul: bit-identical to the pairwise dot product run op by op in every policy."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precision as pr
from precision._kernels import load_baseline
from precision.exact import emulate
from precision.linalg import matmul
from tests.helpers import same_bits

POLICIES = [(s, a) for s, arith in (("float16", ("float16", "float32", "float64")),
                                    ("bfloat16", ("bfloat16", "float32", "float64")),
                                    ("float32", ("float32", "float64")),
                                    ("float64", ("float64",)))
            for a in arith]


def reference(a, b, storage, arithmetic):
    """S.round(emulate(A).dot(a[i, :], b[:, j])) for every (i, j)."""
    em = emulate(arithmetic)
    m, n = a.shape[0], b.shape[1]
    exact = np.array([[em.dot(a[i, :], b[:, j]) for j in range(n)] for i in range(m)],
                     dtype=np.float64).reshape(m, n)
    return pr.format(storage).round(exact)


def values(fmt, scale_exponents):
    """Values of fmt with a random sign, significand and exponent in the given range."""
    fmt = pr.format(fmt)
    lo, hi = scale_exponents
    return st.builds(lambda s, m, e: float(fmt.round(s * m * 2.0 ** e)),
                     st.sampled_from([-1.0, 1.0]), st.floats(1.0, 2.0), st.integers(lo, hi))


@st.composite
def operands(draw, storage, max_k=40, specials=False):
    fmt = pr.format(storage)
    m = draw(st.integers(1, 4))
    k = draw(st.one_of(st.integers(1, max_k), st.sampled_from([127, 128, 129, 257, 385])))
    n = draw(st.integers(1, 4))
    # Exponent ranges that reach overflow and subnormals of the narrow formats.
    lo, hi = {"float16": (-26, 9), "bfloat16": (-134, 64)}.get(storage, (-30, 30))
    elems = values(storage, (lo, hi))
    if specials:
        elems = st.one_of(elems, st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan,
                                                  float(fmt.tiny), float(fmt.smallest_subnormal)]))
    a = np.array(draw(st.lists(elems, min_size=m * k, max_size=m * k)), dtype=np.float64)
    b = np.array(draw(st.lists(elems, min_size=k * n, max_size=k * n)), dtype=np.float64)
    return fmt.round(a.reshape(m, k)), fmt.round(b.reshape(k, n))


@pytest.mark.parametrize("storage,arithmetic", POLICIES)
@settings(max_examples=25)
@given(data=st.data())
def test_bit_identical_to_emulated_pairwise_dot(storage, arithmetic, data):
    a, b = data.draw(operands(storage, specials=data.draw(st.booleans())))
    with np.errstate(all="ignore"):
        expected = reference(a, b, storage, arithmetic)
    got = matmul(a, b, accum=arithmetic)
    assert got.dtype == a.dtype and got.shape == expected.shape
    assert same_bits(got, expected).all(), (got, expected)


@pytest.mark.parametrize("storage,arithmetic", POLICIES)
def test_transposed_and_strided_inputs_read_in_place(storage, arithmetic):
    fmt = pr.format(storage)
    rng = np.random.default_rng(1)
    x = fmt.round(rng.normal(size=(150, 6)))       # X (N, d)
    g = fmt.round(rng.normal(size=(150, 3)))       # G (N, C)
    w = fmt.round(rng.normal(size=(5, 3)))         # W (h, C)
    xtg = matmul(x.T, g, accum=arithmetic)         # X^T G: a transposed view
    assert same_bits(xtg, reference(x.T, g, storage, arithmetic)).all()
    gwt = matmul(g, w.T, accum=arithmetic)         # G W^T: b transposed
    assert same_bits(gwt, reference(g, w.T, storage, arithmetic)).all()
    every_other = matmul(x[::2, ::2], g[:3, ::2].T.copy().T[:3], accum=arithmetic)
    assert same_bits(every_other, reference(x[::2, ::2], g[:3, ::2], storage, arithmetic)).all()


@pytest.mark.parametrize("storage,arithmetic", POLICIES)
def test_threads_and_builds_give_identical_bits(storage, arithmetic):
    fmt = pr.format(storage)
    rng = np.random.default_rng(2)
    a = fmt.round(rng.normal(size=(67, 300)))
    b = fmt.round(rng.normal(size=(300, 9)))
    one = matmul(a, b, accum=arithmetic, num_threads=1)
    for threads in (2, 3, 8):
        assert same_bits(matmul(a, b, accum=arithmetic, num_threads=threads), one).all()
    baseline = load_baseline("linalg")
    out = np.empty_like(one)
    s, ar = fmt.short, pr.format(arithmetic).short
    getattr(baseline, f"matmul_{s}_{ar}")(fmt.storage_view(a), fmt.storage_view(b),
                                          fmt.storage_view(out), 2)
    assert same_bits(out, one).all()


def test_cancellation_is_rounded_not_exact():
    # 1 + 2^-11 - 1 in float16 sequential lanes: R(1 + 2^-11) = 1 (tie to even), then - 1 = 0.
    a = np.array([[1.0, 2.0 ** -11, -1.0]], dtype=np.float16).reshape(1, 3)
    b = np.ones((3, 1), dtype=np.float16)
    # Elements go to lanes 0, 1, 2: ((1 + 2^-11) + (-1 + 0)) + 0 = R(1 + 2^-11) + (-1) = 0.
    assert matmul(a, b)[0, 0] == 0.0
    assert matmul(a, b, accum="float32")[0, 0] == np.float16(2.0 ** -11)


def test_out_argument_is_written_and_returned():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((3, 2), dtype=np.float32)
    out = np.full((2, 2), np.nan, dtype=np.float32)
    assert matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, [[3.0, 3.0], [12.0, 12.0]])


@pytest.mark.parametrize("call,error", [
    (lambda: matmul(np.ones((2, 3)), np.ones((2, 3))), ValueError),                 # shapes don't chain
    (lambda: matmul(np.ones(3), np.ones((3, 1))), ValueError),                      # 1-D
    (lambda: matmul(np.ones((2, 3)), np.ones((3, 1), dtype=np.float32)), TypeError),  # dtypes differ
    (lambda: matmul(np.ones((2, 3), dtype=int), np.ones((3, 1), dtype=int)), TypeError),
    (lambda: matmul([[1.0]], np.ones((1, 1))), TypeError),
    (lambda: matmul(np.ones((0, 3)), np.ones((3, 1))), ValueError),                 # empty
    (lambda: matmul(np.ones((2, 0)), np.ones((0, 1))), ValueError),
    (lambda: matmul(np.ones((2, 3), dtype=np.float32), np.ones((3, 1), dtype=np.float32),
                    accum="float16"), ValueError),                                 # narrower accum
    (lambda: matmul(np.ones((2, 3)), np.ones((3, 1)), accum="float8"), ValueError),
    (lambda: matmul(np.ones((2, 3)), np.ones((3, 1)), out=np.ones((2, 2))), ValueError),
    (lambda: matmul(np.ones((2, 3)), np.ones((3, 1)), out=np.ones((2, 1), np.float32)), TypeError),
    (lambda: matmul(np.ones((2, 3)), np.ones((3, 1)), num_threads=0), ValueError),
])
def test_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_bad_out_is_not_written():
    a = np.ones((3, 3))
    readonly = np.zeros((3, 3))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        matmul(a, a.copy(), out=readonly)
    with pytest.raises(ValueError, match="overlap"):
        matmul(a, np.ones((3, 3)), out=a)
    np.testing.assert_array_equal(a, 1.0)
