"""precision: what floating-point formats do to training, with exact arithmetic as the judge.

    import precision as pr
    pr.float16, pr.bfloat16, pr.float32, pr.float64, pr.format("bfloat16")
    pr.exact       arbitrary-precision references and op-by-op emulation in any format
    pr.errors      ulp / relative / bits-of-error metrics
    pr.linalg      matrix products rounded as each format does
    pr.losses      softmax, cross-entropy, KL, entropy      pr.optim      optimizer steps
    pr.stats       sums, means, variances, moments         pr.batchnorm  running statistics, batch norm
    pr.parallel    all-reduce orders, divide modes, wire formats, learning-rate scaling
    pr.rl          PPO diagnostics: entropies, KL estimators, explained variance, value loss
    pr.study       the study engine                        pr.studies    the studies that come with it
"""
from importlib import import_module as _import_module
from importlib.util import find_spec as _find_spec

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
# Only those present in this installation are offered (``from precision import *`` imports each
# name of __all__, so a missing one would make it fail).
_SUBMODULES = tuple(name for name in ("batchnorm", "exact", "errors", "linalg", "losses", "optim",
                                      "parallel", "rl", "stats", "studies", "study")
                    if _find_spec(f"{__name__}.{name}") is not None)
_LOSS_NAMES = ("logsumexp", "softmax", "log_softmax", "softmax_cross_entropy", "kl_divergence", "entropy")


def __getattr__(name):
    if name in _SUBMODULES:
        return _import_module(f".{name}", __name__)
    if name in _LOSS_NAMES:
        value = getattr(_import_module(".losses", __name__), name)
        globals()[name] = value         # later lookups find it without this call
        return value
    raise AttributeError(f"module 'precision' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "FORMATS", "Format", "PrecisionWarning", "bfloat16", "float16", "float32", "float64",
    "format", *_SUBMODULES, *_LOSS_NAMES,
]
