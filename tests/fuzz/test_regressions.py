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
