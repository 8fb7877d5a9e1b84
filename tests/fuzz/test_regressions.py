"""Cases the fuzzers found, kept as plain tests (each raised another exception type before)."""
import numpy as np
import pytest

import precision as pr


def test_entropy_row_whose_sum_overflows_is_a_value_error():
    # found by atheris: the error message summed the row with math.fsum -> OverflowError
    p = np.full((1, 3), 9.5e307)
    with pytest.raises(ValueError, match="more than 1.8e308"):
        pr.entropy(p)


def test_running_stats_momentum_beyond_float64_is_a_value_error():
    with pytest.raises(ValueError, match="momentum"):
        pr.batchnorm.RunningStats(2, momentum=10 ** 400)
    with pytest.raises(ValueError, match="eps"):
        pr.batchnorm.batch_norm(np.ones((2, 2), np.float32), eps=10 ** 400)


def test_squashed_gaussian_entropy_refuses_complex_and_huge_eps():
    zeros = np.zeros(2)
    with pytest.raises(TypeError, match="real numbers"):
        pr.rl.squashed_gaussian_entropy(zeros + 1j, zeros, n_samples=8)
    with pytest.raises(ValueError, match="eps"):
        pr.rl.squashed_gaussian_entropy(zeros, zeros, n_samples=8, eps=10 ** 400)


def _misaligned(values, dtype):
    """``values`` in a view one byte into a buffer (flags.aligned False)."""
    a = np.asarray(values, dtype=dtype)
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    m = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    m[...] = a
    assert not m.flags.aligned
    return m


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_misaligned_inputs_are_read_as_their_aligned_copies(dtype):
    # found by the fuzz suite under UBSan (make sanitize): the kernels loaded elements through
    # misaligned typed pointers, undefined behaviour in C
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    m = _misaligned(x, dtype)
    assert np.array_equal(pr.softmax(m), pr.softmax(x.astype(dtype)))
    assert np.array_equal(pr.linalg.matmul(m, m.T), pr.linalg.matmul(x.astype(dtype),
                                                                      x.astype(dtype).T))
    assert np.array_equal(pr.stats.sum(m, axis=0), pr.stats.sum(x.astype(dtype), axis=0))
    assert np.array_equal(pr.parallel.allreduce(m), pr.parallel.allreduce(x.astype(dtype)))


def test_misaligned_out_is_refused_before_anything_is_written():
    x = np.ones((2, 3), np.float32)
    out = _misaligned(np.full((2, 3), 7.0), np.float32)
    with pytest.raises(ValueError, match="aligned"):
        pr.softmax(x, out=out)
    with pytest.raises(ValueError, match="aligned"):
        pr.parallel.allreduce(x, out=out)
    assert (out == 7).all()


def test_squashed_gaussian_entropy_refuses_log_std_whose_exp_overflows():
    # found by the fuzz suite: exp(65504) overflowed to inf and the estimate came out NaN
    with pytest.raises(ValueError, match="log_std"):
        pr.rl.squashed_gaussian_entropy(np.zeros(2), np.full(2, 65504.0), n_samples=4)
