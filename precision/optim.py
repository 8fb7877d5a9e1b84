"""Optimizers whose every operation is rounded as hardware of the chosen format rounds it.

    import precision as pr
    opt = pr.optim.Adam(lr=1e-3)                          # torch.optim.Adam: update and defaults
    opt.step(param, grad)                                 # param updated in place, in its format
    opt = pr.optim.AdamW(convention="keras")              # Keras 3's AdamW, Keras's defaults
    opt = pr.optim.Adam(lr=1e-3, state_format="float32", master_weights=True)   # mixed precision
    opt = pr.optim.SGD(lr=0.1, update="stochastic", state_format="float32")     # 16-bit remedy

**Formats.**  S is the format of ``param`` and ``grad`` (their dtype: float16, bfloat16, float32,
float64; they must match).  A, the arithmetic and state format, is ``state_format`` (default S,
never narrower): every +, -, *, /, sqrt of the step is rounded to A (nearest, ties to even, with
A's subnormals and overflow), the optimizer's state arrays (moments, buffers, accumulators) are
stored in A, and the new parameter is rounded once from A into S.  With ``master_weights=True``
and A wider than S the optimizer also keeps the parameter in A (the "master weights" of mixed
precision training): each step starts from the master copy and writes both.  The kernels are
bit-identical to the same algorithm run operation by operation through
``precision.exact.emulate(A)``, for any number of threads.

**Scalars.**  Every hyperparameter enters the arithmetic rounded once into A, as hardware of
that format sees it (``eps=1e-8`` is 0 in float16; ``beta2=0.999`` is 1 in bfloat16); a
:class:`precision.PrecisionWarning` names a hyperparameter that rounds to 0, to inf, by more than
1 %, or (a decay rate) to exactly 1.  Per-step scalars (bias corrections ``1 - beta^t``, the
Adagrad ``lr / (1 + (t-1) lr_decay)``, Keras's ``alpha_t``) are computed exactly or in 256-bit
arithmetic, without the cancellation of evaluating ``1 - beta**t`` in float64 (about 12 ulps wrong
at t = 10 for beta = 0.999), and rounded once into A: see :func:`bias_correction`.

**State per parameter.**  One optimizer serves many parameter arrays (a model's layers).  Its state
is keyed by the identity of the array object (``id(param)``; the optimizer keeps a reference to
it, so the id stays unique): pass the *same* array each step.  A new array object, even a view of
the same memory, starts new state.  Pass ``key=`` to name a parameter instead
(``opt.step(w, g, key="fc1.weight")``).  ``state_dict()`` / ``load_state_dict()`` save and
restore everything; after loading, parameters stepped without a key are matched to the saved
state in the order they were first stepped (as ``torch.optim`` matches its parameter lists).
``state_of(param)`` returns the live state arrays; ``reset()`` forgets all state.  Each parameter
has its own step counter t (1 at its first step).

**Update rules** (``update=``), applied when the new parameter is written; u is the step's update
computed in A, theta the parameter in A after any decoupled weight decay, R the rounding to A,
round_S to S:

* ``"nearest"`` (default): ``param = round_S(R(theta + u))``.
* ``"kahan"``: Kahan-compensated update with a compensation buffer c stored in S (Zamirai et al.,
  "Revisiting BFloat16 Training", 2021): ``y = R(u - c); s = round_S(R(theta + y));
  c = round_S(R(R(s - theta) - y)); param = s``.  It recovers updates too small to change param.
* ``"stochastic"``: ``x = theta + u`` rounded only to the compute type W (float32 for A in
  float16/bfloat16/float32, float64 for A = float64), then stochastically rounded into S: to the
  nearer S neighbour n, or to the other neighbour o with probability ``|x - n| / |o - n|``
  (quantised to multiples of 2^-24).  The random bits are a counter-based hash of (``seed``,
  the parameter's key, t, element index): reproducible and independent of the thread count.
  It changes nothing where W already is S (float32 with float32 arithmetic, float64).
* ``master_weights=True`` (with ``update="nearest"``): ``master = R(theta + u)``,
  ``param = round_S(master)``.

**Special values.**  NaN and inf propagate as IEEE-754 arithmetic propagates them, and never raise:
an inf gradient makes Adam's step inf/inf = NaN, a zero gradient with a zero denominator (float16
Adam with ``eps=1e-8``, which rounds to 0) makes 0/0 = NaN.  The optimizer does not skip or clip.

**Conventions** (``convention=``): ``"torch"`` (default) follows ``torch.optim`` (operation order
included, defaults included), ``"keras"`` Keras 3, ``"optax"`` optax (which has no default learning
rate: pass ``lr``).  Where they differ: where eps sits (outside the square root in torch, inside in
Keras's RMSprop/Adagrad and optax's RMSprop/Adagrad; Keras's Adam adds its "epsilon hat" to the
uncorrected sqrt(v)), where lr sits in momentum buffers (Keras puts it inside), what
``weight_decay`` means (coupled L2 in torch's SGD/Adagrad/Adadelta/RMSprop/Adam; decoupled and
lr-scaled in every Keras optimizer; ``optax.adamw``'s decay is added to the Adam direction before
the lr scaling; in the optax convention other optimizers' ``weight_decay`` is
``optax.add_decayed_weights`` chained before them, an L2 term), and the defaults.  Each class's
docstring gives every convention's update as formulas.
"""
from __future__ import annotations

import hashlib
import math
import numbers
import os
import warnings
from fractions import Fraction

import gmpy2
import numpy as np

from . import formats as _formats
from ._kernels import load as _load

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Adam",
    "AdamW",
    "CONVENTIONS",
    "UPDATE_RULES",
    "bias_correction",
]

CONVENTIONS = ("torch", "keras", "optax")
UPDATE_RULES = ("nearest", "kahan", "stochastic")

# Below this many elements a parallel region costs more than it saves (results are identical).
_PARALLEL_MIN = 1 << 16
# 256 bits: 1 - beta^t loses at most 53 bits to cancellation (1 - beta >= 2^-53), so what is
# left is still far more than any format needs to be rounded correctly.
_WIDE = gmpy2.context(precision=256, emin=-(1 << 30), emax=1 << 30)
_MASK64 = (1 << 64) - 1
_REQUIRED = object()    # "the convention has no default for this hyperparameter"


def _kernels():
    return _load("optim")


# ------------------------------------------------------------------ accurate per-step scalars
def _one_minus_pow(beta: float, t: int):
    """1 - beta^t as a 256-bit mpfr (beta^t is correctly rounded there; the subtraction loses
    at most 53 of the 256 bits)."""
    with gmpy2.context(_WIDE):
        return 1 - gmpy2.mpfr(beta) ** t


def bias_correction(beta: float, t: int, fmt="float64") -> float:
    """``1 - beta**t`` rounded once (correctly) into ``fmt``: Adam's bias correction.

    Evaluated in 256-bit arithmetic, then rounded once.  The float64 expression ``1 - beta**t``
    cancels: for beta = 0.999 and t = 10 it is about 12 ulps wrong, and torch passes that
    value (or its square root) to every step.
    """
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral) or t < 1:
        raise ValueError(f"t must be an integer >= 1, got {t!r}")
    beta = _check_real("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    return float(_formats.format(fmt).round(_one_minus_pow(beta, int(t))))


# ------------------------------------------------------------------ counter-based random keys
def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _stream_of(key) -> int:
    """A stable 64-bit number for a parameter key (ints are themselves; others hashed)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key) & _MASK64
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _sr_key(seed: int, stream: int, t: int) -> int:
    """The 64-bit key of stochastic rounding for one parameter's step t."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ t)


# ------------------------------------------------------------------ argument checking
def _check_real(name, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class _Slot:
    """The state of one parameter array."""

    __slots__ = ("key", "param", "shape", "storage", "arith", "step", "arrays", "master",
                 "compensation", "stream")

    def __init__(self, key, param, shape, storage, arith, stream):
        self.key = key
        self.param = param              # the array object, for identity-keyed slots
        self.shape = shape
        self.storage = storage          # S
        self.arith = arith              # A
        self.step = 0
        self.arrays = {}                # name -> array of A's dtype, param's shape
        self.master = None              # A copy of the parameter (master weights)
        self.compensation = None        # Kahan buffer, S's dtype
        self.stream = stream


# ======================================================================= base class
class Optimizer:
    """Base class: settings, per-parameter state, validation and dispatch to the kernels.

    Subclasses declare ``_DEFAULTS`` (per convention: hyperparameter -> default), ``_FLAGS``
    (boolean options) and implement ``_check``, ``_kernel``, ``_state_names``,
    ``_initial_state``, ``_constants`` and ``_per_step``.
    """

    _DEFAULTS: dict = {}
    _FLAGS: tuple = ()
    _STEP_DEPTH = 6     # stack frames from round_scalar's warn() to the caller of step()

    def __init__(self, hyper: dict, flags: dict, *, convention, state_format, master_weights,
                 update, seed, num_threads):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        object.__setattr__(self, "convention", convention)
        object.__setattr__(self, "_ready", False)
        defaults = self._DEFAULTS[convention]
        for name, value in hyper.items():
            if value is None:
                value = defaults[name]
                if value is _REQUIRED:
                    raise TypeError(
                        f"{type(self).__name__}(convention={convention!r}) needs {name}= "
                        f"({convention} has no default for it)")
            object.__setattr__(self, name, value)
        for name, value in flags.items():
            object.__setattr__(self, name, _check_bool(name, value))
        self._check_all()
        self.state_format = None if state_format is None else _formats.format(state_format)
        self.master_weights = _check_bool("master_weights", master_weights)
        if update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {update!r}")
        if self.master_weights and update != "nearest":
            raise ValueError(
                f"update={update!r} is an alternative to master weights: use one or the other")
        self.update = update
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) \
                or not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
        self.seed = int(seed)
        if num_threads is None:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:
                num_threads = os.cpu_count() or 1
        if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, numbers.Integral) \
                or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        self.num_threads = int(num_threads)
        self._slots = {}            # key -> _Slot
        self._by_id = {}            # id(param) -> key, for identity-keyed slots
        self._pending = {}          # key -> saved state (load_state_dict) not yet bound
        self._next_index = 0        # ordinal of the next identity-keyed parameter
        self._cache = {}            # rounded scalars
        object.__setattr__(self, "_ready", True)

    # --------------------------------------------------------------- hyperparameters
    @property
    def hyperparameters(self) -> dict:
        """The hyperparameters (convention defaults filled in) and boolean options."""
        names = list(self._DEFAULTS[self.convention]) + list(self._FLAGS)
        return {name: getattr(self, name) for name in names}

    _FIXED = ("convention", "state_format", "master_weights", "update", "seed")

    def __setattr__(self, name, value):
        ready = getattr(self, "_ready", False)
        if ready and name in self._FIXED:
            raise AttributeError(
                f"{name} is fixed when the optimizer is created (make a new one, or restore one "
                f"with load_state_dict)")
        if ready and name == "num_threads":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
                    or value < 1:
                raise ValueError(f"num_threads must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
            return
        # hyperparameters may change between steps (learning-rate schedules): re-validate
        if ready and (name in self._DEFAULTS[self.convention] or name in self._FLAGS):
            old = getattr(self, name)
            if name in self._FLAGS:
                value = _check_bool(name, value)
            object.__setattr__(self, name, value)
            try:
                self._check_all()
            except Exception:
                object.__setattr__(self, name, old)
                raise
            return
        object.__setattr__(self, name, value)

    def _check_all(self):
        for name in self._DEFAULTS[self.convention]:
            value = getattr(self, name)
            if name != "betas":
                object.__setattr__(self, name, _check_real(name, value))
        self._check()

    def _nonneg(self, *names):
        for name in names:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def _only_in(self, convention, **values):
        """Options that exist in one convention only must keep their neutral value elsewhere."""
        if self.convention != convention:
            for name, neutral in values.items():
                if getattr(self, name) != neutral:
                    raise ValueError(
                        f"{name} is a {convention} option; the {self.convention} convention has "
                        f"no {name} (leave it at {neutral!r})")

    # options that exist in one convention only (shown by repr only there)
    _CONVENTION_ONLY = {"eps_root": "optax", "dampening": "torch", "lr_decay": "torch"}

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items()
                       if self._CONVENTION_ONLY.get(k, self.convention) == self.convention)
        extra = ""
        if self.state_format is not None:
            extra += f", state_format={self.state_format.name!r}"
        if self.master_weights:
            extra += ", master_weights=True"
        if self.update != "nearest":
            extra += f", update={self.update!r}"
        return f"{type(self).__name__}({hp}, convention={self.convention!r}{extra})"

    # --------------------------------------------------------------- to implement
    def _check(self):
        raise NotImplementedError

    def _kernel(self) -> str:
        raise NotImplementedError

    def _state_names(self) -> tuple:
        """Names of the kernel's state arrays s0, s1, s2 (None where absent)."""
        raise NotImplementedError

    def _initial_state(self, name, A):
        """Initial value of a state array (a Python float, exactly representable in A)."""
        return 0.0

    def _constants(self, A) -> dict:
        raise NotImplementedError

    def _per_step(self, A, t) -> dict:
        return {}

    # --------------------------------------------------------------- scalars
    def _round(self, value, A, name):
        """A scalar rounded once into A; warns (PrecisionWarning) as formats.round_scalar."""
        return _formats.round_scalar(value, A, name, stacklevel=self._STEP_DEPTH)

    def _round_decay(self, value, A, name):
        """A decay rate (beta, rho, alpha, momentum) rounded into A; also warns when a rate
        below 1 becomes exactly 1: the average then never forgets."""
        r = _formats.round_scalar(value, A, name, stacklevel=self._STEP_DEPTH)
        if r == 1.0 and value < 1.0:
            warnings.warn(
                f"{name}={value!r} rounds to 1 in {A.name}: the running average never forgets "
                f"(1 - {name} is still used where the formula has it)",
                _formats.PrecisionWarning, stacklevel=self._STEP_DEPTH - 1)
        return r

    def _hyper_values(self):
        return tuple(sorted((k, v if not isinstance(v, tuple) else tuple(v))
                            for k, v in self.hyperparameters.items()))

    def _scalars(self, A, t) -> dict:
        """The kernel's scalar arguments for a step t in arithmetic A (cached)."""
        hv = self._hyper_values()
        if len(self._cache) > 256:
            self._cache.clear()
        ckey = ("const", A.name, hv)
        const = self._cache.get(ckey)
        if const is None:
            const = self._constants(A)
            const["gsign"] = -1.0 if getattr(self, "maximize", False) else 1.0
            const["wd_on"] = int(self.weight_decay != 0)
            self._cache[ckey] = const
        skey = ("step", A.name, hv, t)
        per = self._cache.get(skey)
        if per is None:
            per = self._per_step(A, t)
            self._cache[skey] = per
        return {**const, **per}

    # --------------------------------------------------------------- state
    def _arith_for(self, S):
        return _formats.arithmetic_format(self.state_format, S, name="state_format")

    def _update_rule(self, S, A) -> str:
        if self.update == "nearest":
            return "master" if self.master_weights and A is not S else "nearest"
        if self.update == "kahan":
            return "kahan"
        if S.short in ("f16", "bf16") or (S.short == "f32" and A.short == "f64"):
            return "stochastic"
        return "nearest"    # rounding stochastically from S's own compute type changes nothing

    def _complete(self, slot, param_flat):
        """Create state arrays the current options need and the slot lacks (fresh slots, loaded
        state, or an option switched on mid-training, as torch creates buffers lazily)."""
        A, S = slot.arith, slot.storage
        for name in self._state_names():
            if name is not None and name not in slot.arrays:
                slot.arrays[name] = np.full(slot.shape, self._initial_state(name, A), dtype=A.dtype)
        rule = self._update_rule(S, A)
        if rule == "master" and slot.master is None:
            slot.master = param_flat.astype(A.dtype).reshape(slot.shape)     # exact widening
        if rule == "kahan" and slot.compensation is None:
            slot.compensation = np.zeros(slot.shape, dtype=S.dtype)

    def _find_slot(self, param, key, S, A):
        """The slot of this parameter, or a new (unregistered) one; validates without mutating."""
        if key is None:
            k = self._by_id.get(id(param))
            slot = self._slots.get(k) if k is not None else None
            if slot is not None and slot.param is not param:
                slot = None
            new_key = self._next_index if slot is None else k
        else:
            try:
                hash(key)
            except TypeError:
                raise TypeError(f"key must be hashable, got {type(key).__name__}") from None
            if isinstance(key, numbers.Integral) and not isinstance(key, bool):
                raise TypeError("key must not be an integer (integers number unkeyed parameters)")
            slot = self._slots.get(key)
            new_key = key
        if slot is None:
            saved = self._pending.get(new_key)
            slot = _Slot(new_key, param if key is None else None, param.shape, S, A,
                         _stream_of(new_key))
            if saved is not None:
                self._check_saved(saved, new_key, param, S, A)
            return slot, True, saved
        if slot.shape != param.shape:
            raise ValueError(
                f"parameter {slot.key!r} has shape {param.shape}, but its optimizer state was "
                f"created for shape {slot.shape}: the shape changed since (reset() to start over)")
        if slot.storage is not S:
            raise TypeError(
                f"parameter {slot.key!r} is {S.name} now but its state was created for "
                f"{slot.storage.name} parameters")
        if slot.arith is not A:
            raise ValueError(
                f"parameter {slot.key!r} has state in {slot.arith.name}, but state_format asks "
                f"for {A.name}")
        return slot, False, None

    @staticmethod
    def _check_saved(saved, key, param, S, A):
        if tuple(saved["shape"]) != param.shape:
            raise ValueError(
                f"saved state {key!r} is for shape {tuple(saved['shape'])}, the parameter has "
                f"shape {param.shape}")
        if saved["format"] != S.name:
            raise TypeError(f"saved state {key!r} is for {saved['format']} parameters, got {S.name}")
        if saved["state_format"] != A.name:
            raise ValueError(
                f"saved state {key!r} holds {saved['state_format']} state, this optimizer "
                f"keeps {A.name}")

    # --------------------------------------------------------------- the step
    def step(self, param: np.ndarray, grad: np.ndarray, key=None) -> np.ndarray:
        """Update ``param`` in place by one step with gradient ``grad``; returns ``param``.

        ``param``: a writeable, C-contiguous float16/bfloat16/float32/float64 array; ``grad``: an
        array of the same dtype and shape (any memory layout; it is only read) that shares no
        memory with ``param`` or the optimizer's state.  ``key``: an optional name for the
        parameter (any hashable but an int); without it the state is keyed by the identity of
        ``param``.  Everything is validated before anything is modified.
        """
        if not isinstance(param, np.ndarray):
            raise TypeError(f"param must be a numpy array, got {type(param).__name__}")
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"grad must be a numpy array, got {type(grad).__name__}")
        S = _formats.of(param)
        if grad.dtype != param.dtype:
            raise TypeError(f"grad is {grad.dtype} but param is {param.dtype}: they must match")
        if grad.shape != param.shape:
            raise ValueError(f"grad has shape {grad.shape} but param has shape {param.shape}")
        if not param.flags.writeable:
            raise ValueError("param is read-only: the step updates it in place")
        if not param.flags.c_contiguous:
            raise ValueError("param must be C-contiguous (the step updates it in place; "
                             "np.ascontiguousarray would update a copy)")
        if np.shares_memory(param, grad):
            raise ValueError("grad shares memory with param")
        A = self._arith_for(S)
        slot, new, saved = self._find_slot(param, key, S, A)
        if not new:
            for name, arr in self._slot_arrays(slot):
                if np.shares_memory(grad, arr):
                    raise ValueError(f"grad shares memory with the optimizer state {name!r}")
                if np.shares_memory(param, arr):
                    raise ValueError(f"param shares memory with the optimizer state {name!r}")
        t = (saved["step"] if saved is not None else slot.step) + 1
        hyper = self._scalars(A, t)
        kernel = _kernels()
        kernel_id = kernel.KERNEL_NAMES.index(self._kernel())
        rule = self._update_rule(S, A)
        grad = np.ascontiguousarray(grad)
        param_flat = param.reshape(-1)

        # validated: from here on, state is created and the parameter is updated
        if new:
            if saved is not None:
                self._restore(slot, saved)
                del self._pending[slot.key]
            if key is None:
                self._by_id[id(param)] = slot.key
                self._next_index += 1
            self._slots[slot.key] = slot
        self._complete(slot, param_flat)

        def flat(arr):
            if arr is None:
                return None
            arr = arr.reshape(-1)
            return arr.view(np.uint16) if arr.dtype.itemsize == 2 else arr

        states = [flat(slot.arrays[name]) if name is not None else None
                  for name in self._state_names()]
        states += [None] * (3 - len(states))
        n = param.size
        threads = self.num_threads if n >= _PARALLEL_MIN else 1
        fn = getattr(kernel, f"step_{S.short}_{A.short}")
        fn(kernel_id, kernel.MODE_CODES[rule], flat(param_flat), flat(grad.reshape(-1)),
           states[0], states[1], states[2], flat(slot.master if rule == "master" else None),
           flat(slot.compensation if rule == "kahan" else None), hyper,
           _sr_key(self.seed, slot.stream, t), threads)
        slot.step = t
        return param

    @staticmethod
    def _slot_arrays(slot):
        out = list(slot.arrays.items())
        if slot.master is not None:
            out.append(("master", slot.master))
        if slot.compensation is not None:
            out.append(("compensation", slot.compensation))
        return out

    # --------------------------------------------------------------- inspection, persistence
    def state_of(self, param=None, *, key=None) -> dict:
        """The live state of a parameter: ``{"step": t, name: array, ...}`` (arrays are the
        optimizer's own, in the state format; ``"master"`` and ``"compensation"`` when used).
        Modifying the arrays modifies the optimizer's state."""
        if key is None:
            k = self._by_id.get(id(param))
            slot = self._slots.get(k) if k is not None else None
            if slot is None or slot.param is not param:
                raise KeyError("this optimizer has no state for that array (not stepped yet?)")
        else:
            slot = self._slots.get(key)
            if slot is None:
                raise KeyError(f"no state for key {key!r}")
        out = {"step": slot.step}
        out.update(self._slot_arrays(slot))
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: settings, hyperparameters and every parameter's state
        (copies of the arrays; keys are the parameters' keys, ints for unkeyed parameters)."""
        state = {}
        for key, slot in list(self._slots.items()) + [(k, None) for k in self._pending]:
            if slot is None:
                state[key] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                              for k, v in self._pending[key].items()}
                continue
            entry = {"step": slot.step, "shape": tuple(slot.shape), "format": slot.storage.name,
                     "state_format": slot.arith.name}
            for name, arr in self._slot_arrays(slot):
                entry[name] = arr.copy()
            state[key] = entry
        return {
            "optimizer": type(self).__name__,
            "convention": self.convention,
            "hyperparameters": self.hyperparameters,
            "state_format": None if self.state_format is None else self.state_format.name,
            "master_weights": self.master_weights,
            "update": self.update,
            "seed": self.seed,
            "state": state,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`: settings, hyperparameters and per-parameter state.

        Keyed state is bound when its key is stepped; unkeyed state (int keys) is bound to
        parameters in the order they are first stepped after loading.  Shapes and formats are
        checked then.  The current state is discarded."""
        if not isinstance(state_dict, dict):
            raise TypeError("state_dict must be a dict (from Optimizer.state_dict())")
        missing = {"optimizer", "convention", "hyperparameters", "state_format", "master_weights",
                   "update", "seed", "state"} - set(state_dict)
        if missing:
            raise ValueError(f"not an optimizer state_dict: missing {sorted(missing)}")
        if state_dict["optimizer"] != type(self).__name__:
            raise ValueError(
                f"state_dict is for {state_dict['optimizer']}, not {type(self).__name__}")
        cls = type(self)
        hyper = dict(state_dict["hyperparameters"])
        flags = {name: hyper.pop(name) for name in cls._FLAGS if name in hyper}
        probe = cls.__new__(cls)
        Optimizer.__init__(probe, hyper, flags, convention=state_dict["convention"],
                           state_format=state_dict["state_format"],
                           master_weights=state_dict["master_weights"],
                           update=state_dict["update"], seed=state_dict["seed"],
                           num_threads=self.num_threads)
        pending = {}
        for key, entry in state_dict["state"].items():
            if not isinstance(entry, dict) or not {"step", "shape", "format", "state_format"} <= set(entry):
                raise ValueError(f"state entry {key!r} is malformed")
            A = _formats.format(entry["state_format"])
            S = _formats.format(entry["format"])
            arrays = {}
            for name, arr in entry.items():
                if name in ("step", "shape", "format", "state_format"):
                    continue
                arr = np.asarray(arr)
                want = S.dtype if name == "compensation" else A.dtype
                if arr.dtype != want or arr.shape != tuple(entry["shape"]):
                    raise ValueError(f"state {key!r}/{name} must be {want} of shape {tuple(entry['shape'])}")
                arrays[name] = np.array(arr, copy=True, order="C")
            step = entry["step"]
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
                raise ValueError(f"state {key!r} has an invalid step {step!r}")
            pending[key] = {"step": int(step), "shape": tuple(entry["shape"]), "format": S.name,
                            "state_format": A.name, **arrays}
        # all checked: adopt
        for name in ("convention", "state_format", "master_weights", "update", "seed"):
            object.__setattr__(self, name, getattr(probe, name))
        for name in list(cls._DEFAULTS[self.convention]) + list(cls._FLAGS):
            object.__setattr__(self, name, getattr(probe, name))
        self.reset()
        self._pending = pending

    def _restore(self, slot, saved):
        slot.step = saved["step"]
        for name, arr in saved.items():
            if name in ("step", "shape", "format", "state_format"):
                continue
            if name == "master":
                slot.master = arr
            elif name == "compensation":
                slot.compensation = arr
            else:
                slot.arrays[name] = arr

    def reset(self) -> None:
        """Forget all per-parameter state (step counters included)."""
        self._slots = {}
        self._by_id = {}
        self._pending = {}
        self._next_index = 0
        self._cache = {}

    zero_state = reset


# ======================================================================= SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, dampening, Nesterov momentum, weight decay.

    Every operation is rounded to A; g is the gradient (negated when ``maximize``), theta the
    parameter, t the step (1 at the first).  Defaults per convention:

    ======== ======== ============ ============ ============ =========
    conv.    lr       momentum     dampening    weight_decay nesterov
    ======== ======== ============ ============ ============ =========
    torch    1e-3     0            0            0            False
    keras    0.01     0            (none)       0            False
    optax    required 0            (none)       0            False
    ======== ======== ============ ============ ============ =========

    **torch** (``torch.optim.SGD``)::

        g  <- g + wd * theta                                   (if weight_decay != 0)
        b  <- g                                   if t = 1     (if momentum != 0)
        b  <- mu * b + (1 - dampening) * g        otherwise
        d  <- g + mu * b   if nesterov   else   b              (d = g without momentum)
        theta <- theta - lr * d

    **keras** (``keras.optimizers.SGD``; lr inside the buffer; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr                      (if weight_decay != 0)
        b  <- mu * b - lr * g
        theta <- theta + (mu * b - lr * g)   if nesterov   else   theta + b
        theta <- theta - lr * g                                 (without momentum)

    **optax** (``optax.sgd``; ``weight_decay`` = ``optax.add_decayed_weights`` chained before)::

        g  <- g + wd * theta
        b  <- g + mu * b;   d <- g + mu * b  if nesterov  else  b;   theta <- theta - lr * d

    The conventions differ in where lr sits (inside Keras's buffer: identical while lr is
    constant, different once it changes), in dampening (torch only) and torch's first step
    (b = g, not (1 - dampening) g), and in weight decay (coupled L2 vs decoupled).
    State: ``momentum_buffer`` (when momentum != 0).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
        "keras": {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
        "optax": {"lr": _REQUIRED, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    }
    _FLAGS = ("nesterov", "maximize")

    def __init__(self, lr=None, momentum=None, dampening=None, weight_decay=None, nesterov=False,
                 *, maximize=False, convention="torch", state_format=None, master_weights=False,
                 update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay),
            dict(nesterov=nesterov, maximize=maximize), convention=convention,
            state_format=state_format, master_weights=master_weights, update=update, seed=seed,
            num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "momentum", "weight_decay")
        self._only_in("torch", dampening=0.0)
        if self.convention == "keras" and self.momentum > 1:
            raise ValueError(f"momentum must be in [0, 1] (keras), got {self.momentum!r}")
        if self.convention == "torch" and self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")

    def _kernel(self):
        return f"sgd_{self.convention}_m{int(self.momentum != 0)}"

    def _state_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "nesterov": int(self.nesterov)}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        if self.momentum != 0:
            h["mu"] = self._round_decay(self.momentum, A, "momentum")
            if self.convention == "torch":
                h["buf_g"] = self._round(1 - Fraction(self.dampening), A, "1 - dampening")
                h.update(nest_g=1.0, dir_scale=-lr)
            elif self.convention == "keras":
                h.update(buf_g=-lr, nest_g=-lr, dir_scale=1.0)
            else:
                h.update(buf_g=1.0, nest_g=1.0, dir_scale=-lr)
        return h

    def _per_step(self, A, t):
        return {"first_step": int(self.convention == "torch" and t == 1)}


# ======================================================================= Adagrad
class Adagrad(Optimizer):
    r"""Adagrad: per-coordinate steps scaled by the root of the sum of squared gradients.

    ======== ======== ======== ========================= ======== ============
    conv.    lr       lr_decay initial_accumulator_value eps      weight_decay
    ======== ======== ======== ========================= ======== ============
    torch    1e-2     0        0                         1e-10    0
    keras    1e-3     (none)   0.1                       1e-7     0
    optax    required (none)   0.1                       1e-7     0
    ======== ======== ======== ========================= ======== ============

    **torch** (``torch.optim.Adagrad``; eps outside the square root)::

        g <- g + wd * theta                 (if weight_decay != 0)
        s <- s + g * g
        theta <- theta + ((-clr) * g) / (sqrt(s) + eps),   clr = lr / (1 + (t - 1) lr_decay)

    **keras** (``keras.optimizers.Adagrad``; eps inside; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr
        s <- s + g * g
        theta <- theta - (lr * g) / sqrt(s + eps)

    **optax** (``optax.adagrad``; eps inside; a zero accumulator gives a zero step)::

        g <- g + wd * theta
        s <- g * g + s
        k <- 1 / sqrt(s + eps)  if s > 0  else  0
        theta <- theta + (-lr) * (k * g)

    ``clr`` is computed exactly and rounded once.  State: ``sum`` (starts at
    ``initial_accumulator_value`` rounded into A).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.0, "eps": 1e-10},
        "keras": {"lr": 1e-3, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.1, "eps": 1e-7},
        "optax": {"lr": _REQUIRED, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.1, "eps": 1e-7},
    }
    _FLAGS = ("maximize",)

    def __init__(self, lr=None, lr_decay=None, weight_decay=None, initial_accumulator_value=None,
                 eps=None, *, maximize=False, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                 initial_accumulator_value=initial_accumulator_value, eps=eps),
            dict(maximize=maximize), convention=convention, state_format=state_format,
            master_weights=master_weights, update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
        self._only_in("torch", lr_decay=0.0)

    def _kernel(self):
        return f"adagrad_{self.convention}"

    def _state_names(self):
        return ("sum",)

    def _initial_state(self, name, A):
        # frames: round_scalar <- _initial_state <- _complete <- step <- the caller
        return _formats.round_scalar(self.initial_accumulator_value, A,
                                     "initial_accumulator_value", stacklevel=5)

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps")}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        return h

    def _per_step(self, A, t):
        if self.convention != "torch":
            return {}
        clr = Fraction(self.lr) / (1 + (t - 1) * Fraction(self.lr_decay))
        return {"neg_step": -self._round(clr, A, "lr / (1 + (t - 1) * lr_decay)")}


# ======================================================================= Adadelta
class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012): steps scaled by RMS[update] / RMS[gradient].

    ======== ======== ====== ======= ============
    conv.    lr       rho    eps     weight_decay
    ======== ======== ====== ======= ============
    torch    1.0      0.9    1e-6    0
    keras    1e-3     0.95   1e-7    0
    optax    required 0.9    1e-6    0
    ======== ======== ====== ======= ============

    **torch** (``torch.optim.Adadelta``)::

        g <- g + wd * theta
        v <- rho * v + ((1 - rho) * g) * g
        D <- (sqrt(a + eps) / sqrt(v + eps)) * g
        a <- rho * a + ((1 - rho) * D) * D
        theta <- theta - lr * D

    **keras** (``keras.optimizers.Adadelta``; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr
        v <- rho * v + (1 - rho) * (g * g)
        D <- -((sqrt(a + eps) * g) / sqrt(v + eps))
        a <- rho * a + (1 - rho) * (D * D)
        theta <- theta + lr * D

    **optax** (``optax.adadelta``)::

        g <- g + wd * theta
        v <- (1 - rho) * (g * g) + rho * v
        D <- (sqrt(a + eps) / sqrt(v + eps)) * g
        a <- (1 - rho) * (D * D) + rho * a
        theta <- theta + (-lr) * D

    The three compute the same recurrence with differently ordered (differently rounded)
    operations; they differ in the defaults.  State: ``square_avg`` (v), ``acc_delta`` (a).
    """

    _DEFAULTS = {
        "torch": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.0},
        "optax": {"lr": _REQUIRED, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
    }
    _FLAGS = ("maximize",)

    def __init__(self, lr=None, rho=None, eps=None, weight_decay=None, *, maximize=False,
                 convention="torch", state_format=None, master_weights=False, update="nearest",
                 seed=0, num_threads=None):
        super().__init__(dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay),
                         dict(maximize=maximize), convention=convention,
                         state_format=state_format, master_weights=master_weights, update=update,
                         seed=seed, num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "eps", "weight_decay")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho!r}")

    def _kernel(self):
        return f"adadelta_{self.convention}"

    def _state_names(self):
        return ("square_avg", "acc_delta")

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps"),
             "rho": self._round_decay(self.rho, A, "rho"),
             "one_minus_rho": self._round(1 - Fraction(self.rho), A, "1 - rho")}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        return h


# ======================================================================= RMSprop
class RMSprop(Optimizer):
    r"""RMSprop (Hinton 2012; centered: Graves 2013), with momentum.

    ======== ======== ===== ====== ======== ============ ========
    conv.    lr       alpha eps    momentum weight_decay centered
    ======== ======== ===== ====== ======== ============ ========
    torch    1e-2     0.99  1e-8   0        0            False
    keras    1e-3     0.9   1e-7   0        0            False
    optax    required 0.9   1e-8   0        0            False
    ======== ======== ===== ====== ======== ============ ========

    (``alpha`` is Keras's ``rho`` and optax's ``decay``.)

    **torch** (``torch.optim.RMSprop``; eps outside the square root)::

        g <- g + wd * theta
        v <- alpha * v + ((1 - alpha) * g) * g
        centered:  gbar <- lerp(gbar, g, 1 - alpha);   den <- sqrt(v - gbar * gbar) + eps
        else:      den <- sqrt(v) + eps
        momentum:  b <- mu * b + g / den;   theta <- theta - lr * b
        else:      theta <- theta + ((-lr) * g) / den

    **keras** (``keras.optimizers.RMSprop``; eps inside; lr inside the momentum buffer)::

        theta <- theta - (theta * wd) * lr
        v <- alpha * v + (1 - alpha) * (g * g)
        centered:  gbar <- alpha * gbar + (1 - alpha) * g;   den <- (v - gbar * gbar) + eps
        else:      den <- v + eps
        inc <- (lr * g) / sqrt(den)
        momentum:  b <- mu * b + inc;   theta <- theta - b
        else:      theta <- theta - inc

    **optax** (``optax.rmsprop``, its default ``eps_in_sqrt=True``; momentum is a trace of the
    lr-scaled update)::

        g <- g + wd * theta
        v <- (1 - alpha) * (g * g) + alpha * v
        centered:  gbar <- (1 - alpha) * g + alpha * gbar;   k <- 1 / sqrt((v - gbar * gbar) + eps)
        else:      k <- 1 / sqrt(v + eps)
        d <- (-lr) * (k * g)
        momentum:  b <- d + mu * b;   theta <- theta + b
        else:      theta <- theta + d

    ``lerp(a, b, w)`` is torch's (vectorised CPU kernel): ``a + w (b - a)`` when |w| < 1/2, else
    ``b + (w - 1)(b - a)``.
    optax's ``rsqrt`` is modelled as 1 / sqrt (two roundings); optax's ``nesterov``,
    ``initial_scale``, ``eps_in_sqrt=False`` and ``bias_correction`` are not modelled.
    State: ``square_avg`` (v), ``grad_avg`` (gbar, centered), ``momentum_buffer`` (b).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "weight_decay": 0.0, "momentum": 0.0},
        "optax": {"lr": _REQUIRED, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.0,
                  "momentum": 0.0},
    }
    _FLAGS = ("centered", "maximize")

    def __init__(self, lr=None, alpha=None, eps=None, weight_decay=None, momentum=None,
                 centered=False, *, maximize=False, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum),
            dict(centered=centered, maximize=maximize), convention=convention,
            state_format=state_format, master_weights=master_weights, update=update, seed=seed,
            num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "eps", "weight_decay", "momentum", "alpha")
        if self.convention != "torch" and self.alpha > 1:
            raise ValueError(f"alpha (rho) must be in [0, 1], got {self.alpha!r}")

    def _kernel(self):
        return f"rmsprop_{self.convention}_c{int(self.centered)}_m{int(self.momentum != 0)}"

    def _state_names(self):
        return ("square_avg", "grad_avg" if self.centered else None,
                "momentum_buffer" if self.momentum != 0 else None)

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        w = self._round(1 - Fraction(self.alpha), A, "1 - alpha")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps"),
             "rho": self._round_decay(self.alpha, A, "alpha"), "one_minus_rho": w}
        # torch.lerp(gbar, g, w): gbar + w (g - gbar) if |w| < 1/2, else g + (w - 1)(g - gbar);
        # w - 1 is exact for w in [1/2, 1] (Sterbenz), and computed exactly here in any case
        small = abs(w) < 0.5
        h["lerp_from_old"] = int(small)
        h["lerp_coef"] = w if small else self._round(Fraction(w) - 1, A, "(1 - alpha) - 1")
        if self.momentum != 0:
            h["mu"] = self._round_decay(self.momentum, A, "momentum")
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        return h


# ======================================================================= Adam
class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015), AMSGrad (Reddi et al. 2018), with L2 or decoupled weight decay.

    ======== ======== ============= ====== ============ ======== ========
    conv.    lr       betas         eps    weight_decay eps_root amsgrad
    ======== ======== ============= ====== ============ ======== ========
    torch    1e-3     (0.9, 0.999)  1e-8   0            (none)   False
    keras    1e-3     (0.9, 0.999)  1e-7   0            (none)   False
    optax    required (0.9, 0.999)  1e-8   0            0        False
    ======== ======== ============= ====== ============ ======== ========

    With ``bc1 = 1 - beta1^t`` and ``bc2 = 1 - beta2^t`` (computed accurately, see
    :func:`bias_correction`; each derived scalar below is rounded once into A):

    **torch** (``torch.optim.Adam``; ``AdamW`` / ``decoupled_weight_decay=True`` decays theta)::

        g <- g + wd * theta                                  (L2, Adam)
        theta <- theta * (1 - lr * wd)                       (decoupled, AdamW)
        m <- lerp(m, g, 1 - beta1)
        v <- beta2 * v + ((1 - beta2) * g) * g
        vmax <- max(vmax, v), v' = vmax    (amsgrad)   else   v' = v
        theta <- theta + ((-lr / bc1) * m) / (sqrt(v') / sqrt(bc2) + eps)

    **keras** (``keras.optimizers.Adam``/``AdamW``; eps is "epsilon hat", added to the
    *uncorrected* sqrt(v); weight decay decoupled)::

        theta <- theta - (theta * wd) * lr
        m <- m + (g - m) * (1 - beta1);   v <- v + (g * g - v) * (1 - beta2)
        vmax <- max(vmax, v), v' = vmax    (amsgrad, of the raw v)
        theta <- theta - (m * alpha_t) / (sqrt(v') + eps),   alpha_t = lr sqrt(bc2) / bc1

    **optax** (``optax.adam``/``adamw``/``amsgrad``; ``weight_decay`` in Adam is
    ``add_decayed_weights`` chained before it, an L2 term)::

        g <- g + wd * theta                                  (L2, Adam)
        m <- (1 - beta1) * g + beta1 * m;   v <- (1 - beta2) * (g * g) + beta2 * v
        mh <- m / bc1;   vh <- v / bc2;   vmax <- max(vmax, vh), vh = vmax   (amsgrad)
        d <- mh / (sqrt(vh + eps_root) + eps)
        d <- d + wd * theta                                  (AdamW)
        theta <- theta + (-lr) * d

    Keras's form equals torch's with eps_torch = eps / sqrt(bc2) (31.6 eps at t = 1 for
    beta2 = 0.999).  ``lerp`` as in :class:`RMSprop`; max propagates NaN.  In float16 the
    default eps = 1e-8 rounds to 0: a zero gradient then gives 0/0 = NaN (a PrecisionWarning
    says so); ``state_format="float32"`` or eps >= 6e-8 avoid it.
    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (vmax, amsgrad).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "eps_root": 0.0},
        "keras": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0,
                  "eps_root": 0.0},
        "optax": {"lr": _REQUIRED, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "eps_root": 0.0},
    }
    _FLAGS = ("amsgrad", "maximize", "decoupled_weight_decay")

    def __init__(self, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, eps_root=None,
                 convention="torch", state_format=None, master_weights=False,
                 update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, eps_root=eps_root),
            dict(amsgrad=amsgrad, maximize=maximize,
                 decoupled_weight_decay=decoupled_weight_decay),
            convention=convention, state_format=state_format, master_weights=master_weights,
            update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = (_check_real("beta1", betas[0]), _check_real("beta2", betas[1]))
        for name, b in (("beta1", b1), ("beta2", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        object.__setattr__(self, "betas", (b1, b2))
        self._nonneg("lr", "eps", "weight_decay", "eps_root")
        self._only_in("optax", eps_root=0.0)

    def _decoupled(self):
        return self.convention == "keras" or self.decoupled_weight_decay

    def _kernel(self):
        decay = "decoupled" if self._decoupled() else "coupled"
        return f"adam_{self.convention}_a{int(self.amsgrad)}_{decay}"

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if self.amsgrad else None)

    def _constants(self, A):
        b1, b2 = self.betas
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps"),
             "eps_root": self._round(self.eps_root, A, "eps_root"),
             "one_minus_beta": self._round(1 - Fraction(b1), A, "1 - beta1"),
             "one_minus_rho": self._round(1 - Fraction(b2), A, "1 - beta2")}
        if self.convention != "keras":
            h["rho"] = self._round_decay(b2, A, "beta2")
        if self.convention == "optax":
            h["beta"] = self._round_decay(b1, A, "beta1")
        if self.convention == "torch":
            w = h["one_minus_beta"]
            small = abs(w) < 0.5
            h["lerp_from_old"] = int(small)
            h["lerp_coef"] = w if small else self._round(Fraction(w) - 1, A, "(1 - beta1) - 1")
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
            if self.convention == "torch" and self._decoupled():
                h["decay"] = self._round(1 - Fraction(self.lr) * Fraction(self.weight_decay), A,
                                         "1 - lr * weight_decay")
        return h

    def _per_step(self, A, t):
        b1, b2 = self.betas
        bc1 = _one_minus_pow(b1, t)
        bc2 = _one_minus_pow(b2, t)
        with gmpy2.context(_WIDE):
            lr = gmpy2.mpfr(self.lr)
            if self.convention == "torch":
                return {"neg_step": -self._round(lr / bc1, A, "lr / (1 - beta1^t)"),
                        "bc2_sqrt": self._round(gmpy2.sqrt(bc2), A, "sqrt(1 - beta2^t)")}
            if self.convention == "keras":
                return {"alpha_t": self._round(lr * gmpy2.sqrt(bc2) / bc1, A,
                                               "lr * sqrt(1 - beta2^t) / (1 - beta1^t)")}
        return {"bc1": self._round(bc1, A, "1 - beta1^t"), "bc2": self._round(bc2, A, "1 - beta2^t")}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019): :class:`Adam` with
    ``decoupled_weight_decay=True`` and each convention's AdamW defaults for ``weight_decay``:
    1e-2 (torch), 4e-3 (keras), 1e-4 (optax).  The decay (see :class:`Adam`)::

        torch:  theta <- theta * (1 - lr * wd)              then the Adam step
        keras:  theta <- theta - (theta * wd) * lr          then the Adam step
        optax:  d <- d + wd * theta on the Adam direction d, then theta <- theta + (-lr) * d
    """

    _DEFAULTS = {
        conv: {**d, "weight_decay": {"torch": 1e-2, "keras": 4e-3, "optax": 1e-4}[conv]}
        for conv, d in Adam._DEFAULTS.items()
    }

    def __init__(self, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=False, *,
                 maximize=False, eps_root=None, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, eps_root=eps_root, convention=convention,
                         state_format=state_format, master_weights=master_weights,
                         update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        super()._check()
        if not self.decoupled_weight_decay:
            raise ValueError("AdamW's weight decay is decoupled (use Adam for L2)")
