"""Compiled kernels.  Use :func:`load` rather than importing a module directly: it returns the
widest build of a kernel module this CPU runs -- x86-64-v4 (AVX-512, built for some modules),
x86-64-v3 (AVX2), else the baseline build.  ``PRECISION_ISA=v3`` (or ``baseline``) caps the choice,
to measure what an AVX2-only (or older) CPU gets on a newer one; ``PRECISION_NO_V3`` = baseline.  Every build computes identical bits (no FMA
contraction; see setup.py), which tests check through :func:`variants`."""
import importlib
import os
import platform

__all__ = ["load", "load_baseline", "variants", "uses_v3", "uses_v4"]

_V3_FLAGS = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"}
_V4_FLAGS = _V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def _cpu_flags() -> set:
    if os.environ.get("PRECISION_NO_V3") or platform.machine().lower() not in ("x86_64", "amd64"):
        return set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_flags = _cpu_flags()
_cap = os.environ.get("PRECISION_ISA", "v4").strip().lower()
if _cap not in ("baseline", "v3", "v4"):
    raise ImportError(f"PRECISION_ISA must be baseline, v3 or v4, got {_cap!r}")
uses_v3 = _V3_FLAGS <= _flags and _cap in ("v3", "v4")
uses_v4 = _V4_FLAGS <= _flags and _cap == "v4"
_SUFFIXES = [s for s, usable in (("__v4", uses_v4), ("__v3", uses_v3)) if usable]
_cache = {}


def load(name: str):
    """The best build of ``precision._kernels.<name>`` for this CPU."""
    mod = _cache.get(name)
    if mod is None:
        for suffix in _SUFFIXES:
            try:
                mod = importlib.import_module(f"{__name__}.{name}{suffix}")
                break
            except ImportError:
                continue
        else:
            mod = importlib.import_module(f"{__name__}.{name}")
        _cache[name] = mod
    return mod


def load_baseline(name: str):
    """The baseline (SSE2) build, for tests that compare builds."""
    return importlib.import_module(f"{__name__}.{name}")


def variants(name: str) -> dict:
    """Every build of ``<name>`` this CPU runs, by suffix ("" is the baseline)."""
    found = {"": load_baseline(name)}
    for suffix in _SUFFIXES:
        try:
            found[suffix] = importlib.import_module(f"{__name__}.{name}{suffix}")
        except ImportError:
            pass
    return found


def empty_aligned(shape, dtype, align: int = 64):
    """np.empty(shape, dtype) whose data starts at a multiple of `align` bytes (numpy's own large
    arrays start 16 bytes past a page): the loss kernels' gradients (float64 rows at a multiple of
    64 bytes are written with streaming stores, kernels/losses_soft.h) and their per-thread
    scratch rows (losses.pyx.tp's _scratch: vectors that never straddle a cache line)."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + align, dtype=np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes].view(dtype).reshape(shape)
