"""Coverage-guided fuzzing of the array entry points with atheris (libFuzzer), for local use.

    pip install -e ".[fuzz]"          # atheris
    python -m tests.fuzz.atheris_kernels -max_total_time=300 [corpus_dir]

libFuzzer's bytes are decoded into the same :class:`tests.fuzz.spec.Call` cases the hypothesis
suite draws (function, dtype, shape, layout, values, accum, num_threads, reduction, out=) and
checked by the same contract (tests/fuzz/spec.py); a contract violation or a crash stops the
run with the input that caused it (and its reproducer is printed).

What guides it: Python line coverage of ``precision`` (atheris instruments the imports).  The
kernels themselves are not coverage-instrumented: that needs clang's ``-fsanitize=fuzzer-no-link``
for the extension modules, and the project builds with gcc (NOTES-harden.md: why this is not part
of CI).
"""
from __future__ import annotations

import math
import sys

import atheris

with atheris.instrument_imports(include=["precision"]):
    # the submodules load lazily: import them here so that they are instrumented
    import precision._checks  # noqa: F401
    import precision.formats  # noqa: F401
    import precision.linalg  # noqa: F401
    import precision.losses  # noqa: F401
    import precision.parallel  # noqa: F401
    import precision.rl  # noqa: F401
    import precision.stats  # noqa: F401

from .spec import DTYPES, FLOAT_FORMATS, LAYOUTS, ArraySpec, Call, Ref, check_call  # noqa: E402

# (function, number of array arguments, the output shape from the first argument's shape)
ENTRY_POINTS = (
    ("softmax", 1, lambda s: s), ("log_softmax", 1, lambda s: s),
    ("logsumexp", 1, lambda s: s[:-1]), ("softmax_cross_entropy", 2, lambda s: ()),
    ("kl_divergence", 2, lambda s: ()), ("entropy", 1, lambda s: ()),
    ("linalg.matmul", 2, None), ("stats.sum", 1, lambda s: ()), ("stats.var", 1, lambda s: ()),
    ("parallel.allreduce", 1, lambda s: s), ("rl.approx_kl", 1, lambda s: ()),
    ("rl.categorical_entropy", 1, None), ("rl.value_loss", 2, lambda s: ()),
)
DTYPE_NAMES = FLOAT_FORMATS * 4 + tuple(DTYPES)
ACCUM = (None, None, "float16", "bfloat16", "float32", "float64", "int32")
THREADS = (None, 1, 2, 0, 257, 2 ** 31)


def _pick(fdp, options):
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def decode(data: bytes) -> Call:
    fdp = atheris.FuzzedDataProvider(data)
    fn, n_arrays, out_shape = _pick(fdp, ENTRY_POINTS)
    dtype = _pick(fdp, DTYPE_NAMES)
    shape = tuple(fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    arrays = []
    for i in range(n_arrays):
        s = shape if fn != "linalg.matmul" or i == 0 else tuple(reversed(shape))
        layout = _pick(fdp, LAYOUTS)
        n = (s[-1] if s and s[-1] <= 64 else 1) if layout == "broadcast" else math.prod(s)
        values = tuple(fdp.ConsumeFloat() for _ in range(n))
        arrays.append(ArraySpec(f"a{i}", dtype, s, values, layout, fdp.ConsumeBool()))
    kwargs = {"accum": _pick(fdp, ACCUM), "num_threads": _pick(fdp, THREADS)}
    if fn in ("softmax_cross_entropy", "kl_divergence", "entropy", "rl.approx_kl",
              "rl.value_loss", "rl.categorical_entropy"):
        kwargs["reduction"] = _pick(fdp, ("mean", "sum", "none"))
    if out_shape is not None and kwargs.get("reduction", "mean") != "none" and fdp.ConsumeBool():
        kwargs["out"] = (Ref("a0", _pick(fdp, ("same", "reversed"))) if fdp.ConsumeBool() else
                         ArraySpec("out", dtype, out_shape(shape), (0.0,), "c", False))
    return Call(fn, tuple(arrays), {k: v for k, v in kwargs.items() if v is not None},
                outputs=("out",))


def test_one_input(data: bytes) -> None:
    call = decode(data)
    try:
        check_call(call)
    except BaseException:
        print(call.reproducer(), file=sys.stderr)
        raise


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
