"""Argument checks shared by the API modules (losses, linalg, and the optimizers).

One copy of each: the thread count a kernel runs with, ``out=`` buffers, scalars, flags and
reductions.  Every check raises TypeError (wrong kind of value) or ValueError (right kind, bad
value) before anything is written, with a message that names the argument.

Threads.  ``num_threads`` goes to OpenMP, which crashes or aborts when asked for tens of thousands
of threads, so it must lie in [1, MAX_THREADS].  The default (``None``) is 1 for work too small
to be worth a parallel region, else the CPUs this process may run on (``os.sched_getaffinity``,
which a container or ``taskset`` restricts, unlike ``os.cpu_count``), at most OMP_NUM_THREADS when
that is set, and at most MAX_THREADS.  Results never depend on the thread count.

Fork.  GNU OpenMP keeps its thread pool across ``os.fork()`` but the child has only the forking
thread, so the child's first parallel region waits forever for threads that do not exist (the
default ``multiprocessing`` start method on Linux forks).  A fork handler therefore marks every
process created by ``os.fork()`` from this one, and there every kernel runs on one thread,
whatever ``num_threads`` says: the same bits, since results do not depend on the thread count.
A process started fresh (``spawn``, ``forkserver``, a new interpreter) uses threads as usual.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np

__all__ = [
    "MAX_THREADS",
    "available_cpus",
    "in_forked_child",
    "check_num_threads",
    "threads",
    "check_real",
    "check_bool",
    "check_reduction",
    "overlaps",
    "check_out",
    "float_array",
    "same_dtype",
]

# The most threads a kernel is ever started with: OpenMP fails far above this (libgomp
# cannot create ~30k threads; 65536 segfaults), and no machine this library targets has more
# cores than this per process.
MAX_THREADS = 256

_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process made by ``os.fork()`` from one that imported precision: kernels then
    run single-threaded (module docstring, "Fork")."""
    return _forked_child


def available_cpus() -> int:
    """The CPUs this process may run on, at most OMP_NUM_THREADS (if set) and MAX_THREADS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        cpus = min(cpus, int(omp))
    return max(1, min(cpus, MAX_THREADS))


def check_num_threads(num_threads, name: str = "num_threads") -> int:
    """An explicit thread count: an integer in [1, MAX_THREADS] (TypeError / ValueError)."""
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(num_threads).__name__}")
    n = int(num_threads)
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{name} must be >= 1 and <= {MAX_THREADS}, got {n}")
    return n


def threads(num_threads, work: int, parallel_min_work: int) -> int:
    """The thread count a kernel runs with.

    ``num_threads``: None (1 when ``work`` < ``parallel_min_work``, else
    :func:`available_cpus`) or an explicit count (checked by :func:`check_num_threads`).
    Always 1 in a forked child (module docstring).
    """
    if num_threads is None:
        n = 1 if work < parallel_min_work else available_cpus()
    else:
        n = check_num_threads(num_threads)
    return 1 if _forked_child else n


# ------------------------------------------------------------------------------- scalars
def check_real(name: str, value, *, finite: bool = True) -> float:
    """A real scalar (not a bool) as a Python float.

    TypeError for non-reals; ValueError for values beyond float64's range (a Python int such
    as 10**400, whose ``float()`` would raise OverflowError) and, with ``finite``, for NaN and
    infinities.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError(f"{name}={value!r} is beyond float64's range (about 1.8e308)") from None
    if finite and not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def check_bool(name: str, value) -> bool:
    """True or False (numpy bools too); TypeError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_reduction(reduction, allowed) -> str:
    """One of ``allowed`` (ValueError otherwise)."""
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, allowed))}, "
                         f"got {reduction!r}")
    return reduction


# ------------------------------------------------------------------------------- out=
# np.shares_memory solves an integer program; past this much work the answer is "overlaps"
# (a refusal of a legal buffer is a clear error, a missed overlap a wrong result).
_OVERLAP_MAX_WORK = 1 << 20


def overlaps(a: np.ndarray, b) -> bool:
    """Whether two arrays share a byte of memory (exactly, or True when too costly to tell)."""
    if b is None or not isinstance(b, np.ndarray) or not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=_OVERLAP_MAX_WORK))
    except np.exceptions.TooHardError:
        return True


def _same_view(a: np.ndarray, b) -> bool:
    """Whether b is a view of exactly a's elements (same first byte, shape and strides)."""
    return (isinstance(b, np.ndarray) and a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_out(out, name: str, shape, dtype, inputs, *, contiguous: bool = True,
              aligned: bool = True, in_place: bool = False) -> np.ndarray:
    """A caller's output buffer: a writable numpy array of ``dtype`` and ``shape`` (C-contiguous
    when ``contiguous``; aligned to its itemsize when ``aligned``, as a kernel writing through
    typed pointers needs) that overlaps none of ``inputs`` ([(name, array or None), ...]).
    ``in_place``: an input that is exactly ``out`` (the same elements, element for element) is
    allowed -- an elementwise kernel may write over what it reads -- but a partial overlap is not."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have the storage dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if contiguous and not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if aligned and not out.flags.aligned:
        raise ValueError(f"{name} is not aligned to its itemsize (flags.aligned is False): the "
                         f"kernels write elements through typed pointers; pass an aligned buffer")
    for other_name, other in inputs:
        if in_place and _same_view(out, other):
            continue
        if overlaps(out, other):
            raise ValueError(f"{name} overlaps {other_name}"
                             + (" without being it (in place is allowed)" if in_place else "")
                             + ": results cannot be written over an input")
    return out


# ------------------------------------------------------------------------------- arrays
def float_array(x, name: str) -> np.ndarray:
    """``x`` as an array of one of the formats (float16, bfloat16, float32, float64); TypeError
    for anything else (booleans, integers, complex, objects).

    An array whose data is not aligned to its itemsize (a view at an odd byte offset of a
    buffer, ``flags.aligned`` False) is returned as an aligned copy: the kernels read elements
    through typed C pointers, and a misaligned one is undefined behaviour (UBSan reports it;
    ``make sanitize``)."""
    from . import formats

    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a float array, got a boolean array")
    try:
        formats.of(arr)
    except TypeError:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got dtype "
                        f"{arr.dtype}") from None
    return arr if arr.flags.aligned else arr.copy()


def same_dtype(arr: np.ndarray, name: str, dtype, against: str) -> None:
    """TypeError unless ``arr`` has ``dtype`` (the storage format of ``against``)."""
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but {against} is {np.dtype(dtype).name}: "
                        f"all arrays of a call must share one storage format (convert one "
                        f"explicitly)")
