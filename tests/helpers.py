"""Small helpers shared by the tests."""
import numpy as np


def same_bits(a, b):
    """Bitwise equality of two arrays of the same format, any NaN equal to any NaN."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    ua = a.view(f"u{a.dtype.itemsize}")
    ub = b.view(f"u{b.dtype.itemsize}")
    with np.errstate(invalid="ignore"):
        nan_a = np.isnan(a.astype(np.float64))
        nan_b = np.isnan(b.astype(np.float64))
    return (ua == ub) | (nan_a & nan_b)
