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


def ulps_apart(a, b, before):
    """|a - b| in ulps of b's format at the largest magnitude among a, b and ``before`` (so a
    step that crosses a power of two is measured at the coarser spacing)."""
    dtype = np.asarray(b).dtype
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    big = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.abs(np.asarray(before, np.float64)))
    ulp = np.spacing(big.astype(dtype)).astype(np.float64)
    return np.where(a == b, 0.0, np.abs(a - b) / ulp)


def buffer_at(shape, dtype, offset):
    """An uninitialised C-contiguous array whose data starts `offset` bytes past a multiple of 64
    (the loss kernels stream float64 gradient rows that start at a multiple of 64)."""
    from precision._kernels import empty_aligned
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return empty_aligned((nbytes + offset,), np.uint8)[offset:].view(dtype).reshape(shape)
