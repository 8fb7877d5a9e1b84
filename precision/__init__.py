"""precision: what floating-point formats do to training, with exact arithmetic as the judge.

    import precision as pr
    pr.float16, pr.bfloat16, pr.float32, pr.float64, pr.format("bfloat16")
    pr.exact       arbitrary-precision references and op-by-op emulation in any format
    pr.errors      ulp / relative / bits-of-error metrics
"""
from importlib import import_module as _import_module

from .formats import (
    FORMATS,
    Format,
    PrecisionWarning,
    bfloat16,
    float16,
    float32,
    float64,
    format,
)

__version__ = "0.1.0"

# Submodules are loaded on first use so `import precision` stays light and partial builds work.
_SUBMODULES = ("batchnorm", "exact", "errors", "losses", "optim", "parallel", "rl", "stats", "study")
_LOSS_NAMES = ("logsumexp", "softmax", "log_softmax", "softmax_cross_entropy", "kl_divergence", "entropy")


def __getattr__(name):
    if name in _SUBMODULES:
        return _import_module(f".{name}", __name__)
    if name in _LOSS_NAMES:
        return getattr(_import_module(".losses", __name__), name)
    raise AttributeError(f"module 'precision' has no attribute {name!r}")


__all__ = [
    "FORMATS", "Format", "PrecisionWarning", "bfloat16", "float16", "float32", "float64",
    "format", *_SUBMODULES, *_LOSS_NAMES,
]
