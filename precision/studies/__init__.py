"""The studies that come with precision, found by name.

Each study is a subpackage of ``precision.studies`` that defines

* ``NAME``: the name the command line uses (``soft-target-stall``);
* ``build(args) -> precision.study.Study``: the grid for the parsed command-line arguments
  (``args.size`` is "smoke", "quick" or "full"; ``args.formats``, ``args.seed``);
* a module docstring whose first line is the one-line summary ``precision study --list`` prints.

The studies install with the package, so ``pip install precision`` can run them from any folder; the
engine (:mod:`precision.study`) knows none of them. A folder of further study scripts can be added with
the environment variable ``PRECISION_STUDIES_DIR`` (see :mod:`precision.cli`).
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["available", "load"]


def _packages() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg
                  and not info.name.startswith("_"))


def available() -> dict[str, ModuleType]:
    """{study name: its package}, for every study that comes with precision."""
    found = {}
    for package in _packages():
        module = importlib.import_module(f"{__name__}.{package}")
        name = getattr(module, "NAME", None)
        if isinstance(name, str) and callable(getattr(module, "build", None)):
            found[name] = module
    return dict(sorted(found.items()))


def load(name: str) -> ModuleType:
    """The package of study `name`; LookupError naming the available ones if there is none."""
    studies = available()
    if name not in studies:
        raise LookupError(f"no study {name!r} comes with precision "
                          f"(available: {', '.join(studies) or 'none'})")
    return studies[name]
