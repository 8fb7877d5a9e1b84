"""precision.parallel: the all-reduce kernel is bit-identical to its emulated twin; facts of the
divide modes and orders derived from the arithmetic; unequal shards; learning-rate rules."""
import math
import warnings
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

import precision as pr
from precision import parallel
from precision.exact import emulate
from precision.exact import parallel as twin

POLICIES = [("float16", None), ("float16", "float32"), ("float16", "float64"),
            ("bfloat16", None), ("bfloat16", "float32"), ("bfloat16", "float64"),
            ("float32", None), ("float32", "float64"), ("float64", None)]
WIRES = {"float16": [None], "bfloat16": [None], "float32": [None, "float16", "bfloat16"],
         "float64": [None, "float16", "bfloat16", "float32"]}


def _values(fmt, k, n, draw):
    """k·n values of fmt: random bit patterns (subnormals, extremes, inf, NaN, ±0 included)
    mixed with ordinary magnitudes."""
    F = pr.format(fmt)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits = {16: np.uint16, 32: np.uint32, 64: np.uint64}[F.bits]
    raw = rng.integers(0, np.iinfo(bits).max, k * n, dtype=bits, endpoint=True).view(F.dtype)
    normal = (rng.standard_normal(k * n) * 10.0 ** rng.integers(-3, 4, k * n))
    normal = F.round(normal)
    pick = rng.random(k * n) < draw(st.sampled_from([0.0, 0.05, 0.5]))
    return np.where(pick, raw, normal).astype(F.dtype).reshape(k, n)


@given(st.data())
def test_kernel_is_bit_identical_to_the_emulated_twin(data):
    S, A = data.draw(st.sampled_from(POLICIES))
    wire = data.draw(st.sampled_from(WIRES[A or S]))
    k = data.draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 12, 16, 33, 130, 257]))
    n = data.draw(st.integers(1, 5 if k > 100 else 40))
    g = _values(S, k, n, data.draw)
    op = data.draw(st.sampled_from(["mean", "sum"]))
    kw = dict(algorithm=data.draw(st.sampled_from(parallel.ALGORITHMS)),
              direction=data.draw(st.sampled_from(["ascending", "descending"])),
              scaling=data.draw(st.sampled_from(["div", "mul"])), accum=A, wire_format=wire)
    if op == "mean":
        kw["divide"] = data.draw(st.sampled_from(parallel.DIVIDE_MODES))
    if kw["algorithm"] == "ring":
        kw["chunk_size"] = data.draw(st.sampled_from([None, "gloo", -(-n // k) + 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pr.PrecisionWarning)
        got = parallel.allreduce(g, op, **kw)
        want = twin.allreduce_emulated(g, op, **kw)
    assert got.shape == g.shape and got.dtype == g.dtype
    bits = got.view(np.uint16 if got.itemsize == 2 else got.dtype.str.replace("f", "u"))
    assert np.all(bits == bits[0])          # every worker holds the same bits
    np.testing.assert_array_equal(got[0].astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("S, A", POLICIES)
def test_k_1024_workers(S, A):
    rng = np.random.default_rng(1)
    g = pr.format(S).round(rng.standard_normal((1024, 3)) * 1e-3)
    for algorithm in parallel.ALGORITHMS:
        got = parallel.allreduce(g, algorithm=algorithm, divide="post", accum=A)[0]
        want = twin.allreduce_emulated(g, algorithm=algorithm, divide="post", accum=A)
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


def test_exact_twin_and_float64_error_bound():
    """float64, k workers: |computed − exact| <= (k−1)·u·Σ|g| / k + u·|exact| (Higham's bound for
    any summation order, plus the division)."""
    rng = np.random.default_rng(2)
    g = rng.standard_normal((50, 20))
    exact = np.array([float(v) for v in twin.allreduce_exact(g)])
    u = pr.float64.u
    bound = (49 * u * np.abs(g).sum(0) / 50 + u * np.abs(exact)) * (1 + 1e-10)
    for algorithm in parallel.ALGORITHMS:
        got = parallel.allreduce(g, algorithm=algorithm)[0]
        assert np.all(np.abs(got - exact) <= bound)


# ---------------------------------------------------------------- reference facts (§B)
def test_float16_post_division_overflows_pre_division_keeps_the_value():
    """256 workers holding 300: the sum 76800 exceeds float16's max, so post-division is inf in
    every order; pre-division: 300/256 = 75·2^-6 is exact and every partial sum of a power-of-two
    tree is 2^j·75·2^-6 (exact), so tree/halving-doubling/pairwise give exactly 300."""
    k, value = 256, 300.0
    assert k * value > pr.float16.max
    g = np.full((k, 1), value, dtype=np.float16)
    for algorithm in parallel.ALGORITHMS:
        assert np.isinf(parallel.allreduce(g, divide="post", algorithm=algorithm)[0, 0])
    for algorithm in ("tree", "halving_doubling", "pairwise"):
        assert parallel.allreduce(g, divide="pre", algorithm=algorithm)[0, 0] == value
    # FSDP's split (16, 16): 300/16 = 18.75 exact, partial sums 2^j·18.75 <= 4800 exact
    assert parallel.fsdp_predivide_factor(k) == 16
    assert parallel.allreduce(g, divide="split", algorithm="tree")[0, 0] == value


def test_bfloat16_sequential_sum_of_ones_stagnates():
    """bfloat16 has 8 significant bits: 256 + 1 is a tie between 256 and 258 and rounds to even
    256, so a chain of 512 ones stops at 256 and the mean is 0.5; a power-of-two tree only adds
    equal partial sums (exact)."""
    E = emulate("bfloat16")
    assert E.add(256.0, 1.0) == 256.0
    g = np.ones((512, 1), dtype=ml_dtypes.bfloat16)
    for divide in ("pre", "post"):
        assert float(parallel.allreduce(g, divide=divide, algorithm="sequential")[0, 0]) == 0.5
        assert float(parallel.allreduce(g, divide=divide, algorithm="ring")[0, 0]) == 0.5
        for algorithm in ("tree", "pairwise", "halving_doubling"):
            assert float(parallel.allreduce(g, divide=divide, algorithm=algorithm)[0, 0]) == 1.0


def test_pre_division_underflows():
    """float16: g/k below half the smallest subnormal 2^-24 rounds to 0 before the sum."""
    k = 1024
    g = np.full((k, 1), 2.0**-14, dtype=np.float16)     # g/k = 2^-24: the smallest subnormal
    assert parallel.allreduce(g, divide="pre", algorithm="tree")[0, 0] == np.float16(2.0**-14)
    g = np.full((k, 1), 2.0**-15, dtype=np.float16)     # g/k = 2^-25: a tie, to even 0
    assert parallel.allreduce(g, divide="pre", algorithm="tree")[0, 0] == 0
    assert parallel.allreduce(g, divide="post", algorithm="tree")[0, 0] == np.float16(2.0**-15)


def test_wire_format_is_the_fp16_hook():
    """wire float16 on float32 gradients = cast to float16, divide in float16, sum in float16,
    cast back (torch's fp16_compress_hook), derived here with numpy float16 for k = 2."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((2, 100)).astype(np.float32)
    h = g.astype(np.float16) / np.float16(2)       # numpy float16 ops round to float16
    want = (h[0] + h[1]).astype(np.float32)
    got = parallel.allreduce(g, wire_format="float16")
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)


def test_thread_count_does_not_change_bits():
    rng = np.random.default_rng(4)
    g = rng.standard_normal((9, 5000)).astype(np.float16)
    for algorithm in parallel.ALGORITHMS:
        one = parallel.allreduce(g, algorithm=algorithm, num_threads=1)
        for t in (2, 3, 7):
            np.testing.assert_array_equal(parallel.allreduce(g, algorithm=algorithm, num_threads=t), one)


def test_in_place_and_out():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((4, 3, 5)).astype(np.float32)
    want = parallel.allreduce(g)
    out = np.empty_like(g)
    assert parallel.allreduce(g, out=out) is out
    np.testing.assert_array_equal(out, want)
    h = g.copy()
    parallel.allreduce(h, out=h)
    np.testing.assert_array_equal(h, want)


def test_bad_input_is_rejected_before_writing():
    g = np.ones((4, 6), dtype=np.float32)
    out = np.full_like(g, 7.0)
    bad = [
        (TypeError, dict(grads=[[1.0]])),
        (TypeError, dict(grads=np.ones((2, 3), dtype=np.int32))),
        (ValueError, dict(grads=np.ones((0, 3), dtype=np.float32))),
        (ValueError, dict(grads=np.ones((3, 0), dtype=np.float32))),
        (ValueError, dict(grads=np.array(1.0, dtype=np.float32))),
        (ValueError, dict(algorithm="butterfly")),
        (ValueError, dict(divide="middle")),
        (ValueError, dict(op="max")),
        (ValueError, dict(op="sum", divide="pre")),
        (ValueError, dict(divide="pre", factor=4)),
        (ValueError, dict(divide="split", factor=0)),
        (ValueError, dict(accum="float16")),
        (ValueError, dict(wire_format="float64")),
        (ValueError, dict(chunk_size=1)),
        (ValueError, dict(chunk_size="nccl")),
        (ValueError, dict(num_threads=0)),
        (ValueError, dict(num_threads=257)),
        (TypeError, dict(num_threads=2.0)),
        (ValueError, dict(out=out[:, :3])),
        (TypeError, dict(out=out.astype(np.float64))),
        (ValueError, dict(out=out[:, ::-1])),
    ]
    for error, kw in bad:
        kw = dict(kw)
        grads = kw.pop("grads", g)
        with pytest.raises(error):
            parallel.allreduce(grads, out=kw.pop("out", out), **kw)
        assert np.all(out == 7.0), kw
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        parallel.allreduce(g, out=ro)
    big = np.ones((4, 8), dtype=np.float32)
    with pytest.raises(ValueError):
        parallel.allreduce(big[:, :6], out=big[:, 2:])   # overlapping, not identical


def test_scalar_warnings():
    """A divisor that rounds to inf in the arithmetic format is named in a PrecisionWarning."""
    g = np.ones((2, 1), dtype=np.float16)
    with pytest.warns(pr.PrecisionWarning, match="f_pre"):
        parallel.allreduce(g, divide="split", factor=1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel.allreduce(g, divide="split", factor=2)


# ---------------------------------------------------------------- shards and samplers
def test_shard_weights():
    assert parallel.shard_weights([3, 1]) == [Fraction(1, 6), Fraction(1, 2)]
    assert parallel.shard_weights([3, 1], "global") == [Fraction(1, 4)] * 2
    assert parallel.shard_weights([5, 5, 5]) == parallel.shard_weights([5, 5, 5], "global")
    for sizes in ([3, 1], [2, 7, 1]):     # weights sum to one over all samples
        assert sum(w * s for w, s in zip(parallel.shard_weights(sizes), sizes)) == 1


def test_mean_of_means():
    x = [1.0, 2.0, 3.0, 10.0]
    mom, glob = parallel.mean_of_means(x, [3, 1])
    assert glob == 4.0 and mom == (2.0 + 10.0) / 2
    mom, glob = parallel.mean_of_means(x, [2, 2])
    assert mom == glob


def test_distributed_sampler_padding_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler

    for n in (1, 5, 10, 11, 3):
        for r in (1, 2, 3, 4, 8):
            for drop_last in (False, True):
                if drop_last and n < r:
                    continue
                ours = parallel.distributed_sampler_indices(n, r, drop_last=drop_last)
                for rank in range(r):
                    s = DistributedSampler(range(n), num_replicas=r, rank=rank, shuffle=False,
                                           drop_last=drop_last)
                    assert list(s) == ours[rank].tolist()
    del torch


def test_sampler_padding_repeats_the_first_samples():
    parts = parallel.distributed_sampler_indices(10, 4)
    counts = np.bincount(np.concatenate(parts), minlength=10)
    assert counts.tolist() == [2, 2] + [1] * 8


# ---------------------------------------------------------------- learning-rate rules
def test_goyal_rules():
    assert parallel.linear_scaling_lr(0.1, 8192) == pytest.approx(3.2)
    assert parallel.sqrt_scaling_lr(0.1, 1024) == pytest.approx(0.2)
    ipe = 100
    t = np.arange(0, 600)
    lr = parallel.goyal_lr(t, ipe, 8192)
    assert lr[0] == pytest.approx(0.1)
    np.testing.assert_allclose(lr[:500], 0.1 + (3.2 - 0.1) * t[:500] / 500)
    assert np.all(lr[500:] == pytest.approx(3.2))
    assert np.all(np.diff(lr[:501]) > 0)
    assert parallel.goyal_lr(3, ipe, 8192, warmup_epochs=0) == pytest.approx(3.2)
    assert parallel.sum_reduction_lr(0.01, 8) == pytest.approx(0.08)


def test_sum_with_lr_is_mean_with_k_lr_exactly_for_power_of_two_k():
    """SGD: p − lr·Σg = p − (k·lr)·mean g; with k a power of two and pre-division in a tree the
    mean is exactly the sum / k (scaling by 2^-j is exact away from under/overflow)."""
    rng = np.random.default_rng(6)
    g = rng.standard_normal((8, 50)).astype(np.float32)
    s = parallel.allreduce(g, "sum", algorithm="tree")[0]
    m = parallel.allreduce(g, "mean", algorithm="tree")[0]
    np.testing.assert_array_equal(s / np.float32(8), m)
    assert math.isclose(parallel.sum_reduction_lr(1e-3, 8), 8e-3)


def test_lr_rules_bad_input():
    with pytest.raises(ValueError):
        parallel.linear_scaling_lr(-0.1, 256)
    with pytest.raises(TypeError):
        parallel.linear_scaling_lr(0.1, 256.0)
    with pytest.raises(ValueError):
        parallel.warmup_lr(-1, 0.1, 1.0, 10)
    with pytest.raises(ValueError):
        parallel.shard_weights([3, 0])
