"""Compiled kernels.  Use :func:`load` rather than importing a module directly: it returns the
x86-64-v3 (AVX2) build of a kernel module when this CPU runs it, else the baseline build.
Both builds compute identical bits (no FMA contraction; see setup.py)."""
import importlib
import os
import platform

__all__ = ["load", "uses_v3"]

_V3_FLAGS = {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"}


def _cpu_runs_v3() -> bool:
    if os.environ.get("PRECISION_NO_V3") or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return _V3_FLAGS <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


uses_v3 = _cpu_runs_v3()
_cache = {}


def load(name: str):
    """The best build of ``precision._kernels.<name>`` for this CPU."""
    mod = _cache.get(name)
    if mod is None:
        mod = None
        if uses_v3:
            try:
                mod = importlib.import_module(f"{__name__}.{name}__v3")
            except ImportError:
                mod = None
        if mod is None:
            mod = importlib.import_module(f"{__name__}.{name}")
        _cache[name] = mod
    return mod


def load_baseline(name: str):
    """The baseline (SSE2) build, for tests that compare the two builds."""
    return importlib.import_module(f"{__name__}.{name}")
