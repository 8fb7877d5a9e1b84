"""Scalars shared by the optimizers: accurate bias corrections, stochastic-rounding keys,
and the checks of hyperparameter values."""
from __future__ import annotations

import hashlib
import numbers

import gmpy2
import numpy as np

from .. import _checks
from .. import formats as _formats

# 256 bits: 1 - beta^t loses at most 53 bits to cancellation (1 - beta >= 2^-53), so what is
# left is still far more than any format needs to be rounded correctly.
_WIDE = gmpy2.context(precision=256, emin=-(1 << 30), emax=1 << 30)
_MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------ accurate per-step scalars
def _one_minus_pow(beta: float, t: int):
    """1 - beta^t as a 256-bit mpfr (beta^t is correctly rounded there; the subtraction loses
    at most 53 of the 256 bits)."""
    with gmpy2.context(_WIDE):
        return 1 - gmpy2.mpfr(beta) ** t


def bias_correction(beta: float, t: int, fmt="float64") -> float:
    """``1 - beta**t`` rounded once (correctly) into ``fmt``: Adam's bias correction.

    Evaluated in 256-bit arithmetic, then rounded once.  The float64 expression ``1 - beta**t``
    cancels: for beta = 0.999 and t = 10 it is about 12 ulps wrong, and torch passes that
    value (or its square root) to every step.
    """
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"t must be an integer >= 1, got {t!r}")
    beta = _check_real("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    return float(_formats.format(fmt).round(_one_minus_pow(beta, int(t))))


# ------------------------------------------------------------------ counter-based random keys
def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _stream_of(key) -> int:
    """A stable 64-bit number for a parameter key (ints are themselves; others hashed)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key) & _MASK64
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _sr_key(seed: int, stream: int, t: int) -> int:
    """The 64-bit key of stochastic rounding for one parameter's step t."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ t)


# ------------------------------------------------------------------ argument checking
_check_real = _checks.check_real     # ValueError (not OverflowError) for lr=10**400
_check_bool = _checks.check_bool
