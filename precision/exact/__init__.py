"""The two oracles every kernel is judged by (DESIGN.md §3.6).

* **exact** (:mod:`precision.exact.mp`): the mathematical function of the exact input values in
  arbitrary precision (mpmath with the gmpy2 backend), with ``dps`` significant digits chosen by
  the caller (default 40, enough to round correctly to float64).  Results are object arrays of
  ``mpmath.mpf``; round them into any format with ``fmt.round(result)``::

      loss, grad = pr.exact.softmax_cross_entropy(logits, targets, return_grad=True, dps=50)
      pr.float16.round(grad)            # the correctly rounded float16 gradient
      pr.errors.compare(np.exp(x32), pr.exact.exp(x32), pr.float32)   # how good is numpy's exp?

* **emulated** (:mod:`precision.exact.emulate`): a kernel's own algorithm run operation by
  operation, each result rounded once into the format (gmpy2 IEEE contexts)::

      f16 = pr.exact.emulate("float16")
      f16.add(a, b); f16.exp(x); f16.sum(values, order="pairwise")

* **twins** of the kernels, built on the emulated arithmetic: every function of
  :mod:`precision.losses` (:mod:`precision.exact.losses`) and every optimizer of
  :mod:`precision.optim` (:mod:`precision.exact.optim`), replayed op by op in the emulated
  format as the arithmetic A; :mod:`precision.exact.registry` pairs each kernel with its twin by
  name, and the tests compare every pairing::

      pr.exact.emulate("float32").softmax_cross_entropy(x16, t16, return_grad=True)
      twin = pr.exact.emulate("float16").optimizer("adam", lr=1e-3)
      twin.step(param, grad); twin.state_of(param)
"""
from .emulate import (
    PAIRWISE_BLOCK,
    PAIRWISE_LANES,
    SUMMATION_ORDERS,
    Emulated,
    emulate,
    kahan_sum,
    pairwise_depth,
    pairwise_sum,
    sequential_sum,
    summation,
)
from .losses import EmulatedLosses
from .optim import EmulatedOptimizer
from .registry import PAIRINGS, pairings
from .mp import (
    DEFAULT_DPS,
    PrecisionExhausted,
    entropy,
    exp,
    expm1,
    kl_divergence,
    log,
    log1p,
    sqrt,
    log_softmax,
    logsumexp,
    softmax,
    softmax_cross_entropy,
    to_float64,
)

__all__ = [
    "DEFAULT_DPS",
    "PrecisionExhausted",
    "pairwise_depth",
    "logsumexp",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "kl_divergence",
    "entropy",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sqrt",
    "to_float64",
    "emulate",
    "Emulated",
    "SUMMATION_ORDERS",
    "PAIRWISE_BLOCK",
    "PAIRWISE_LANES",
    "pairwise_sum",
    "sequential_sum",
    "kahan_sum",
    "summation",
    "EmulatedLosses",
    "EmulatedOptimizer",
    "PAIRINGS",
    "pairings",
]

# the twins of precision.stats, batchnorm, parallel and rl, and the double-double helpers
# (pr.exact.double_double), as submodules (pr.exact.stats.moments,
# pr.exact.batchnorm.emulated_batch_norm, ...); imported on first use
def __getattr__(name):
    if name in ("stats", "batchnorm", "parallel", "rl", "double_double"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
