"""The (storage, arithmetic) policies every templated kernel is specialised for.

A kernel template (``kernels/*.pyx.tp``, rendered by ``setup.py`` with Cython's Tempita) loops
``{{for P in POLICIES}}`` and writes its body once in terms of these names; ``fp.h`` defines
every function named here.  The storage format S is what the caller's arrays hold; the
arithmetic format A is where every operation is rounded (``accum=`` in the Python API).
"""

FORMATS = ("f16", "bf16", "f32", "f64")
COMPUTE = {"f16": "float", "bf16": "float", "f32": "float", "f64": "double"}
STORAGE = {"f16": "uint16_t", "bf16": "uint16_t", "f32": "float", "f64": "double"}
# Wider-or-equal arithmetic for each storage format (f16 -> bf16 would lose range and bits).
ARITH_FOR = {
    "f16": ("f16", "f32", "f64"),
    "bf16": ("bf16", "f32", "f64"),
    "f32": ("f32", "f64"),
    "f64": ("f64",),
}


class Policy:
    """Names a template uses for one (storage S, arithmetic A) pair."""

    def __init__(self, s, a):
        self.s, self.a = s, a
        self.name = f"{s}_{a}"          # suffix of every specialised function
        self.stype = STORAGE[s]         # C element type of the caller's arrays
        self.ctype = COMPUTE[a]         # C type holding values of A
        self.ld = f"ld_{s}_{a}"         # storage -> compute, exact
        self.st = f"st_{s}_{a}"         # compute -> storage, rounded once
        self.to = f"to_{s}_{a}"         # compute -> S's value set, staying in ctype
        self.rnd = f"rnd_{a}"           # round a compute value to A
        self.exp = f"exp_{a}"
        self.log = f"log_{a}"
        self.log1p = f"log1p_{a}"
        self.expm1 = f"expm1_{a}"
        self.sqrt = f"sqrt_{a}"
        self.from64 = f"from64_{a}"     # a double scalar rounded once into A
        self.narrow = a in ("f16", "bf16")   # ops need an explicit rounding after them

    def __repr__(self):
        return f"Policy({self.s!r}, {self.a!r})"


POLICIES = [Policy(s, a) for s in FORMATS for a in ARITH_FOR[s]]
