"""Build precision's Cython kernels.

Every ``kernels/<name>.pyx.tp`` is rendered with Cython's Tempita (with the policies of
``kernels/policies.py``) into ``kernels/<name>.pyx`` and compiled to ``precision._kernels.<name>``.

On x86-64 each kernel module (not the ``_``-prefixed helpers) is also built a second time as
``<name>__v3`` with ``-march=x86-64-v3`` (AVX2), and the modules of V4_MODULES a third time as
``<name>__v4`` (``-march=x86-64-v4``, AVX-512): ``precision._kernels.load(name)`` picks the
widest one the CPU runs.  All builds compute the same bits: contraction is off, so the wider
vectors change speed, not a single rounding (tests compare them).

Compiler flags are part of the arithmetic contract (DESIGN.md section 3):
  -ffp-contract=off   no FMA contraction: a*b+c must round twice, as the emulated reference does;
  -fno-math-errno     sqrt without an errno branch, so loops vectorise;
  -fno-trapping-math  lets the branch-free rounding selects vectorise (changes no value);
and never any fast-math flag (a test asserts it).  OpenMP is used when the compiler has it.

Cython's own support code (memoryviews, type conversions: about 1 MB of C per module) is
generated once, into the shared module ``precision._kernels._cyutility`` (Cython >= 3.1), instead
of into every module and every ISA variant of it.

Set PRECISION_ONLY=name1,name2 to build a subset while developing.  PRECISION_PREBUILT=1 builds
nothing (the Makefile compiles in place first, then registers the package: see there).

Set PRECISION_SANITIZE=1 to build the baseline modules with AddressSanitizer and
UndefinedBehaviorSanitizer (for `make sanitize`, which builds them into a separate tree).
"""
import os
import platform
import sys
from pathlib import Path

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
KERNELS = ROOT / "kernels"
sys.path.insert(0, str(KERNELS))
from policies import POLICIES  # noqa: E402

COMPILE_ARGS = [
    "-O3",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp",
    "-Wno-unused-function",
    "-Wno-unreachable-code",
    "-g0",      # no debug information (Python's CFLAGS ask for -g): a quarter of the compile time
]
LINK_ARGS = ["-fopenmp"]


V3_ARGS = ["-march=x86-64-v3", "-mtune=generic"]
# an AVX-512 build only for the modules where a benchmark (tests/bench) has shown one to pay: the
# loss kernels, whose exp runs 8 doubles per instruction.
V4_ARGS = ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512"]
V4_MODULES = {"losses"}
# PRECISION_SANITIZE: instrumented modules of one build only (`make sanitize` builds them out of
# tree and runs the kernel tests with libasan preloaded), the baseline one unless
# PRECISION_SANITIZE_ISA is v3 or v4: then every module is compiled for that instruction set under
# its baseline name, so the AVX2 / AVX-512 code paths are the ones sanitized. -O1 keeps the
# compile affordable; any UB aborts.
SANITIZE = bool(os.environ.get("PRECISION_SANITIZE"))
if SANITIZE:
    SANITIZE_ARGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                     "-fno-sanitize-recover=undefined", "-O1", "-g1"]
    COMPILE_ARGS = [a for a in COMPILE_ARGS if a != "-g0"] + SANITIZE_ARGS
    _isa = os.environ.get("PRECISION_SANITIZE_ISA", "")
    _isa_args = {"": [], "baseline": [], "v3": V3_ARGS, "v4": V4_ARGS}
    if _isa not in _isa_args:
        sys.exit(f"PRECISION_SANITIZE_ISA must be baseline, v3 or v4, got {_isa!r}")
    COMPILE_ARGS += _isa_args[_isa]
    LINK_ARGS = LINK_ARGS + SANITIZE_ARGS[:1]

BUILD_V3 = (platform.machine().lower() in ("x86_64", "amd64") and not os.environ.get("PRECISION_NO_V3")
            and not SANITIZE)

def write_if_changed(path: Path, text: str):
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def render_templates():
    """Render each template; return [(module name, .pyx path, extra compile args)]."""
    from Cython import Tempita

    modules = []
    for tp in sorted(KERNELS.glob("*.pyx.tp")):
        name = tp.name[: -len(".pyx.tp")]
        template = tp.read_text()

        def render(isa, template=template, source=tp.name):
            # ISA ("baseline", "v3", "v4"): a template may emit code only a build of that
            # instruction set uses (optim's F16C kernels)
            text = Tempita.sub(template, POLICIES=POLICIES, ISA=isa)
            return f"# Generated from {source} by setup.py; edit the template, not this file.\n" + text

        write_if_changed(KERNELS / f"{name}.pyx", render("baseline"))
        modules.append((name, KERNELS / f"{name}.pyx", []))
        if BUILD_V3 and not name.startswith("_"):
            write_if_changed(KERNELS / f"{name}__v3.pyx", render("v3"))
            modules.append((f"{name}__v3", KERNELS / f"{name}__v3.pyx", V3_ARGS))
            if name in V4_MODULES:
                write_if_changed(KERNELS / f"{name}__v4.pyx", render("v4"))
                modules.append((f"{name}__v4", KERNELS / f"{name}__v4.pyx", V4_ARGS))
    return modules


SHARED_UTILITY = "precision._kernels._cyutility"


def extensions():
    only = {s for s in os.environ.get("PRECISION_ONLY", "").split(",") if s}
    # the shared Cython support module: generated by cythonize, compiled with the baseline flags
    exts = [Extension(SHARED_UTILITY, [str((KERNELS / "_cyutility.c").relative_to(ROOT))],
                      extra_compile_args=COMPILE_ARGS, extra_link_args=LINK_ARGS)]
    for name, pyx, extra in render_templates():
        if only and name.split("__")[0] not in only:
            continue
        exts.append(
            Extension(
                f"precision._kernels.{name}",
                [str(pyx.relative_to(ROOT))],
                include_dirs=[str(KERNELS), np.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=COMPILE_ARGS + extra,
                extra_link_args=LINK_ARGS,
                depends=sorted(str(h) for h in KERNELS.glob("*.h")) + [str(KERNELS / "fp.pxd")],
            )
        )
    return exts


def cythonized():
    from Cython.Build import cythonize

    return cythonize(
        extensions(),
        include_path=[str(KERNELS)],
        compiler_directives={"language_level": 3},
        shared_utility_qualified_name=SHARED_UTILITY,
        nthreads=int(os.environ.get("PRECISION_BUILD_JOBS", "2")),
    )


class ParallelBuildExt(build_ext):
    """Compile the extension modules in parallel (PRECISION_BUILD_JOBS, default 2): the AVX2 and
    AVX-512 twins triple the C to compile, and one compiler at a time took 8 of CI's minutes."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = int(os.environ.get("PRECISION_BUILD_JOBS", "2"))


# PRECISION_PREBUILT=1: the kernels are already built in place (`make` compiles them while pip
# installs the dependencies); the editable install then only registers the package.
if os.environ.get("PRECISION_PREBUILT"):
    setup()
else:
    setup(ext_modules=cythonized(), cmdclass={"build_ext": ParallelBuildExt})
