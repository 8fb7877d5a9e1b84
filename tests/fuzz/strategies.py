"""Hypothesis strategies for hostile arguments: arrays of every dtype, shape, layout and special
value (as :class:`tests.fuzz.spec.ArraySpec` recipes), and argument values at and beyond their
limits.  Most draws stay close to valid input (a float format, a coherent shape), so that the
deep code paths are reached too, not only the first check."""
from __future__ import annotations

import math

from hypothesis import strategies as st

from .spec import DTYPES, FLOAT_FORMATS, LAYOUTS, ArraySpec  # noqa: F401 (LAYOUTS re-exported)

HOSTILE_DTYPES = tuple(d for d in DTYPES if d not in FLOAT_FORMATS)

# values at the edges of the four formats: zeros, subnormals, the largest finite values and just
# beyond, ties, infinities and NaN
SPECIAL_VALUES = (
    0.0, -0.0, 1.0, -1.0, 0.5, 1 / 3, 2.0, -2.0, 1e-8, 1e-3,
    math.inf, -math.inf, math.nan,
    5e-324, 2.0 ** -1022, 2.0 ** -149, 2.0 ** -133, 2.0 ** -126, 2.0 ** -24, 2.0 ** -14,
    65504.0, 65520.0, -65504.0, 3.3895313892515355e38, 3.4028234663852886e38, 1e38,
    1.7976931348623157e308, -1.7976931348623157e308, 1e300, 1 + 2.0 ** -11, 1 + 2.0 ** -8,
    700.0, -700.0, 88.0, 1e5, -1e5,
)

HUGE = (1.7976931348623157e308, 1e308, 9.5e307, -1e308, 65504.0, 3.4028234663852886e38)

values = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.floats(-30, 30),
    st.floats(allow_nan=True, allow_infinity=True),
)
finite_values = st.one_of(st.sampled_from([v for v in SPECIAL_VALUES if math.isfinite(v)]),
                          st.floats(-30, 30), st.floats(allow_nan=False, allow_infinity=False))
probability_values = st.one_of(st.floats(0, 1), st.sampled_from((0.0, 1.0, 0.5, 2.0 ** -24)))


def dtypes(float_weight: int = 6):
    """Mostly one of the four formats, sometimes anything else."""
    return st.one_of(*[st.sampled_from(FLOAT_FORMATS)] * float_weight,
                     st.sampled_from(HOSTILE_DTYPES))


def dtype(draw, h: bool):
    """A float format in a clean call; in a hostile one, anything (a format still most often)."""
    return draw(dtypes() if h else st.sampled_from(FLOAT_FORMATS))


def shapes(min_dims=0, max_dims=3, max_side=5, min_side=0):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


@st.composite
def arrays(draw, name, *, dtype=None, shape=None, elements=values, huge=True, layouts=LAYOUTS,
           readonly=None):
    """An ArraySpec called ``name``; ``dtype`` / ``shape`` drawn when not given.  With
    ``huge``, sometimes a stride-0 view with millions of elements (cheap to make, costly to
    copy)."""
    if dtype is None:
        dtype = draw(dtypes())
    if shape is None:
        shape = draw(shapes())
    layout = draw(st.sampled_from(layouts))
    if huge and layout == "broadcast" and len(shape) >= 1 and draw(st.integers(0, 4)) == 0:
        shape = (1 << draw(st.integers(16, 21)),) + tuple(shape[1:])
    if layout == "broadcast":     # the last axis's values (one value if that axis is huge)
        n = shape[-1] if shape and shape[-1] <= 64 else 1
    else:
        n = math.prod(shape)
    if n > 1 and draw(st.integers(0, 4)) == 0:
        # one value repeated: rows of the largest finite values (whose sums overflow), of
        # subnormals, of NaN, exact ties
        vals = (draw(st.one_of(elements, st.sampled_from(HUGE)) if elements is values
                     else elements),) * n
    else:
        vals = tuple(draw(st.lists(elements, min_size=n, max_size=n)))
    if readonly is None:
        readonly = layout != "broadcast" and draw(st.integers(0, 3)) == 0
    return ArraySpec(name, dtype, tuple(shape), vals, layout, readonly)


@st.composite
def probability_rows(draw, name, *, dtype, shape, layouts=LAYOUTS):
    """Rows that are distributions (normalised in float64 before rounding to ``dtype``), the
    input that passes the target checks, so the kernels behind them are reached."""
    spec = draw(arrays(name, dtype=dtype, shape=shape, elements=probability_values, huge=False,
                       layouts=tuple(x for x in layouts if x != "broadcast")))
    if not shape or not shape[-1]:
        return spec
    c = shape[-1]
    rows = [spec.values[i:i + c] for i in range(0, len(spec.values), c)]
    normalised = []
    for row in rows:
        s = sum(row)
        normalised.extend((v / s for v in row) if s > 0 else [1.0 / c] * c)
    return ArraySpec(name, dtype, shape, tuple(normalised), spec.layout, spec.readonly)


# ----------------------------------------------------------------------------- arguments
# Each argument has values a careful caller passes (CLEAN) and values beyond its limits or of the
# wrong kind (HOSTILE).  A call is drawn clean or hostile (hostile()); in a hostile call each
# argument is hostile with probability 1/3, so both the checks and the kernels behind them are
# exercised, and errors are met one at a time as well as together.
CLEAN = {
    "dtype": st.sampled_from(FLOAT_FORMATS),
    "num_threads": st.sampled_from([None, None, 1, 2, 3]),
    "accum": st.sampled_from([None, None, "float16", "bfloat16", "float32", "float64"]),
    "reduction": st.sampled_from(["mean", "sum", "none"]),
    "hyper": st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1e-3, 0.1, 0.9, 0.999, 1.0, 1e-8])),
    "tolerance": st.one_of(st.none(), st.none(), st.none(), st.floats(0, 1)),
    "bool": st.booleans(),
    "axis": st.one_of(st.none(), st.integers(-3, 2)),
    "int": st.integers(1, 16),
    "size": st.integers(1, 16),
}
HOSTILE = {
    "dtype": st.sampled_from(HOSTILE_DTYPES),
    "num_threads": st.sampled_from([0, -1, 256, 257, 65536, 2 ** 31, 2 ** 63, 2 ** 64, 10 ** 30,
                                    1.5, 2.0, True, "2", math.nan]),
    "accum": st.sampled_from(["float128", "FLOAT32", "int32", "", 3, 1.5, "float8_e4m3fn",
                              "longdouble"]),
    "reduction": st.sampled_from(["max", "", None, 0, "MEAN"]),
    "hyper": st.one_of(st.sampled_from([-1.0, -0.0, math.inf, -math.inf, math.nan, 1e300, 1e-320,
                                        10 ** 400, 2.0, True, None, "0.1", 1j, 5]),
                       st.floats(allow_nan=True, allow_infinity=True)),
    "tolerance": st.sampled_from([-0.1, math.nan, math.inf, 1e300, 10 ** 400, "0.1", True]),
    "bool": st.sampled_from([0, 1, None, "yes", 1.0]),
    "axis": st.sampled_from([-5, 4, (0, 1), (0, 0), 1.0, "0", True]),
    "int": st.sampled_from([0, -1, 2 ** 31, 2 ** 64, 10 ** 30, 1.0, 2.5, True, None, "3"]),
    # an allocation size: no value that is legal but would allocate gigabytes
    "size": st.sampled_from([0, -1, 2 ** 64, 10 ** 30, 1.0, 2.5, True, None, "3"]),
}

hostile = st.booleans()


_WIDER = {"float16": ("float16", "float32", "float64"), "bfloat16": ("bfloat16", "float32", "float64"),
          "float32": ("float32", "float64"), "float64": ("float64",)}


def accum_for(draw, h: bool, dtype: str):
    """``accum=``: None or a format at least as wide as ``dtype`` in a clean call."""
    if h or dtype not in _WIDER:
        return arg(draw, h, "accum")
    return draw(st.sampled_from((None, None) + _WIDER[dtype]))


def arg(draw, h: bool, kind: str):
    """A value of argument ``kind`` (a key of CLEAN): hostile with probability 1/3 when ``h``."""
    if h and draw(st.integers(0, 2)) == 0:
        return draw(HOSTILE[kind])
    return draw(CLEAN[kind])
