"""Reproducible descriptions of hostile arguments, and the contract every public call must keep.

A fuzz case is a :class:`Call`: a function name under ``precision`` (or a scenario of
``tests.fuzz.targets``) and arguments in which arrays appear as :class:`ArraySpec` recipes (dtype,
shape, values, memory layout, writeability) or :class:`Ref` (another argument's array, the same
object or a view of it, for aliasing ``out=``).  ``repr(call)`` is Python that rebuilds the case
exactly -- layout and aliasing included, which pickling would lose -- so a crash in a fuzz
subprocess is reported as a one-line reproducer.

The contract (:func:`check_call`): the call returns, or raises ValueError / TypeError; a
documented PrecisionWarning (or UserWarning) may be emitted; a RuntimeWarning raised inside
precision is a failure (numpy overflow or invalid-value leaking out of the Python layer, as
pytest's configuration treats it).  On an error, no argument array has changed (validation comes
before any write); on success only the arrays the function documents as outputs
(``out=``, ``grad_out=`` and those a scenario names) may have changed.
"""
from __future__ import annotations

import dataclasses
import warnings

import ml_dtypes
import numpy as np

import precision as pr

__all__ = ["ArraySpec", "Ref", "Make", "Call", "check_call", "ContractViolation", "DTYPES"]

DTYPES = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "longdouble": np.dtype(np.longdouble),
    ">f2": np.dtype(">f2"),
    ">f4": np.dtype(">f4"),
    ">f8": np.dtype(">f8"),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "int8": np.dtype(np.int8),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint16": np.dtype(np.uint16),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "object": np.dtype(object),
}
FLOAT_FORMATS = ("float16", "bfloat16", "float32", "float64")
LAYOUTS = ("c", "f", "strided", "reversed", "misaligned", "broadcast")


def _convert(values, dtype: np.dtype) -> np.ndarray:
    """Python floats (NaN and infinities included) as an array of ``dtype``, saturating what
    the dtype cannot hold."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(np.nan_to_num(v, nan=0.0), info.min, info.max).astype(dtype)
        if dtype.kind == "b":
            return v != 0
        if dtype.kind == "c":
            return (v + 1j * v[::-1]).astype(dtype) if v.size else v.astype(dtype)
        if dtype.kind == "O":
            return np.array([float(x) for x in v], dtype=object)
        return v.astype(dtype)


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """An array: ``values`` (row-major, len = prod(shape), or one value filling it; for layout "broadcast" the values of
    the last axis only, or a single value, broadcast to ``shape`` with stride 0, so huge shapes stay cheap) of
    ``dtype`` (a key of DTYPES), in memory ``layout`` (LAYOUTS: C order, Fortran order, every
    other element of a wider buffer, negative strides, one byte off alignment, stride 0).
    ``name`` lets a :class:`Ref` point at it."""
    name: str
    dtype: str
    shape: tuple
    values: tuple
    layout: str = "c"
    readonly: bool = False

    def build(self) -> np.ndarray:
        dt = DTYPES[self.dtype]
        if self.layout == "broadcast":
            row = _convert(self.values, dt)
            arr = np.broadcast_to(row if len(self.shape) else row.reshape(()), self.shape)
            return arr   # read-only by construction
        a = _convert(self.values, dt)
        a = np.full(self.shape, a[0], dtype=dt) if a.size == 1 else a.reshape(self.shape)
        if self.layout == "f":
            a = np.asfortranarray(a)
        elif self.layout == "strided" and a.ndim:
            wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dtype=dt)
            wide[..., 1::2] = a
            a = wide[..., 1::2]
        elif self.layout == "reversed" and a.ndim:
            a = a[..., ::-1].copy()[..., ::-1]
        elif self.layout == "misaligned" and dt.kind != "O" and dt.itemsize > 1:
            raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
            m = np.frombuffer(raw.data, dtype=dt, count=a.size, offset=1)
            m[...] = a.reshape(-1)
            a = m.reshape(a.shape)
        if self.readonly:
            a.flags.writeable = False
        return a


@dataclasses.dataclass(frozen=True)
class Ref:
    """Another argument's array: ``how`` = "same" (the object itself), "view" (a new view of all
    of it), "reversed" (its elements in reverse order, a view), "readonly" (a read-only view)."""
    name: str
    how: str = "same"

    def resolve(self, built: dict):
        a = built[self.name]
        if self.how == "same":
            return a
        if self.how == "view":
            return a.view()
        if self.how == "reversed":
            return a[::-1] if a.ndim else a
        v = a.view()
        v.flags.writeable = False
        return v


@dataclasses.dataclass(frozen=True)
class Make:
    """An object made by a scenario helper, e.g. ``Make("running_stats", (4, "torch"))`` (a
    RunningStats passed as ``running=``); ``args`` hold plain values only."""
    fn: str
    args: tuple = ()

    def resolve(self, built: dict):
        from . import scenarios
        return getattr(scenarios, self.fn)(*self.args)


def _walk(obj, fn):
    """Apply ``fn`` to every ArraySpec / Ref / Make inside tuples, lists and dicts."""
    if isinstance(obj, (ArraySpec, Ref, Make)):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_walk(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_walk(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    return obj


@dataclasses.dataclass(frozen=True)
class Call:
    """``fn`` (a dotted name: "softmax", "linalg.matmul", "float16.round" resolve under
    ``precision``; "scenario.<name>" under tests.fuzz.scenarios) called with ``args`` /
    ``kwargs``.  ``outputs``: names of arrays the call may write when it succeeds."""
    fn: str
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    outputs: tuple = ()

    def resolve_fn(self):
        if self.fn.startswith("scenario."):
            from . import scenarios
            return getattr(scenarios, self.fn.split(".", 1)[1])
        obj = pr
        for part in self.fn.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self):
        """(fn, args, kwargs, arrays by name)."""
        built = {}

        def make(node):
            if isinstance(node, ArraySpec):
                built[node.name] = node.build()
            return node

        _walk((self.args, self.kwargs), make)

        def resolve(node):
            return built[node.name] if isinstance(node, ArraySpec) else node.resolve(built)

        args = _walk(self.args, resolve)
        kwargs = _walk(self.kwargs, resolve)
        return self.resolve_fn(), args, kwargs, built

    def reproducer(self) -> str:
        return ("from tests.fuzz.spec import *\n"
                f"call = {self!r}\n"
                "fn, args, kwargs, arrays = call.build()\n"
                "fn(*args, **kwargs)")


class ContractViolation(AssertionError):
    pass


def _snapshot(arr: np.ndarray):
    """The bytes of ``arr``'s elements (or None for huge read-only stride-0 views, which
    nothing can write)."""
    if arr.size > (1 << 16) and not arr.flags.writeable:
        return None
    return np.array(arr, copy=True, order="C").tobytes()


def _changed(arrays: dict, before: dict, allowed=()) -> list:
    return [name for name, arr in arrays.items()
            if name not in allowed and before[name] is not None
            and np.array(arr, copy=True, order="C").tobytes() != before[name]]


def check_call(call: Call):
    """Run ``call`` under the contract (module docstring); returns its result or the
    ValueError/TypeError it raised; raises ContractViolation (or the unexpected exception)."""
    try:
        fn, args, kwargs, arrays = call.build()
    except (ValueError, TypeError) as exc:     # a constructor (Make) refused its arguments
        _check_message(exc, call)
        return exc
    before = {name: _snapshot(a) for name, a in arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # PrecisionWarning, UserWarning: documented
        warnings.filterwarnings("error", category=RuntimeWarning, module=r"precision(\.|$)")
        try:
            result = fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, RuntimeWarning):   # pragma: no cover - not a subclass
                raise
            changed = _changed(arrays, before)
            if changed:
                raise ContractViolation(
                    f"{call.fn} raised {type(exc).__name__}({exc}) after writing {changed}") from exc
            _check_message(exc, call)
            return exc
    changed = _changed(arrays, before, allowed=call.outputs)
    if changed:
        raise ContractViolation(f"{call.fn} returned but changed its input arrays {changed}")
    return result


def _check_message(exc, call):
    """An error must say something (a bare ``ValueError()`` helps no one)."""
    if not str(exc).strip():
        raise ContractViolation(f"{call.fn} raised {type(exc).__name__} with no message") from exc

