"""The base of every optimizer: settings, per-parameter state, persistence, the step dispatch."""
from __future__ import annotations

import bisect
import numbers
import warnings

import numpy as np

from .. import _checks
from .. import formats as _formats
from .._kernels import load as _load
from .scalars import _check_bool, _check_real, _sr_key, _stream_of

CONVENTIONS = ("torch", "keras", "optax")
UPDATE_RULES = ("nearest", "kahan", "stochastic")

# Below this many elements a parallel region costs more than it saves (results are identical).
_PARALLEL_MIN = 1 << 16
_REQUIRED = object()    # "the convention has no default for this hyperparameter"


def _kernels():
    return _load("optim")


def _byte_bounds(arr):
    """[low, high) of the bytes an array with elements spans (numpy's byte_bounds)."""
    low = high = arr.__array_interface__["data"][0]
    for n, stride in zip(arr.shape, arr.strides):
        if stride < 0:
            low += (n - 1) * stride
        else:
            high += (n - 1) * stride
    return low, high + arr.itemsize


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

    **State and identity.**  State is kept per parameter array: by the array object's identity
    when ``step`` gets no ``key`` (the optimizer holds a reference to the array), else by the
    key.  Passing an array that shares memory with any of the optimizer's state arrays (another
    parameter's ``exp_avg`` from :meth:`state_of`, a master copy, ...) as ``param`` is refused
    with a ValueError before anything is written: the step would overwrite that state.

    **Pickling and copying.**  An optimizer pickles and deep-copies with its state and with the
    parameter arrays it is bound to.  Pickle or deepcopy it *together with its parameters*, in
    one object graph (``pickle.dumps((params, opt))``, ``copy.deepcopy((params, opt))``, or a
    model object holding both): the restored optimizer is bound to the restored arrays, and
    stepping them continues the trajectory bit for bit (same moments, same step counters t,
    same stochastic-rounding streams).  Keyed state (``key=``) follows its key, so a keyed
    optimizer can also be pickled alone.  An unkeyed optimizer pickled *apart* from its
    parameters holds its own copies of the arrays; stepping other arrays then starts new state,
    and the first such step of an array whose shape and format match restored state not
    stepped since emits a ``UserWarning`` saying so.  To move state between processes or
    programs independently of object identity, use :meth:`state_dict` /
    :meth:`load_state_dict`.

    Subclasses declare ``_DEFAULTS`` (per convention: hyperparameter -> default), ``_FLAGS``
    (boolean options) and implement ``_check``, ``_kernel``, ``_state_names``,
    ``_initial_state``, ``_constants`` and ``_per_step``.
    """

    _DEFAULTS: dict = {}
    _FLAGS: tuple = ()
    _STEP_DEPTH = 7     # stack frames from round_scalar's warn() to the caller of step()
    _STATE_DEPTH = 6    # the same from _initial_state's round_scalar (via _complete, _run)

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
        # None: the CPUs this process may run on (at most OMP_NUM_THREADS and 256)
        self.num_threads = (_checks.available_cpus() if num_threads is None
                            else _checks.check_num_threads(num_threads))
        self._slots = {}            # key -> _Slot
        self._by_id = {}            # id(param) -> key, for identity-keyed slots
        self._pending = {}          # key -> saved state (load_state_dict) not yet bound
        self._next_index = 0        # ordinal of the next identity-keyed parameter
        self._cache = {}            # rounded scalars
        self._state_index = None    # byte ranges of every state array (built when needed)
        self._unbound_restored = set()   # identity keys restored by pickle, not stepped since
        self.iterations = 0         # step_all calls (Keras's optimizer.iterations)
        object.__setattr__(self, "_ready", True)

    # --------------------------------------------------------------- hyperparameters
    @property
    def hyperparameters(self) -> dict:
        """The hyperparameters (convention defaults filled in) and boolean options."""
        names = list(self._DEFAULTS[self.convention]) + list(self._FLAGS)
        return {name: getattr(self, name) for name in names}

    _NOT_REAL = ("betas", "mu_dtype")     # hyperparameters that are not one real number
    _FIXED = ("convention", "state_format", "master_weights", "update", "seed")

    def __setattr__(self, name, value):
        ready = getattr(self, "_ready", False)
        if ready and name in self._FIXED:
            raise AttributeError(
                f"{name} is fixed when the optimizer is created (make a new one, or restore one "
                f"with load_state_dict)")
        if ready and name == "num_threads":
            object.__setattr__(self, name, _checks.check_num_threads(value))
            return
        if ready and name == "iterations":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
                    or value < 0:
                raise ValueError(f"iterations must be an integer >= 0, got {value!r}")
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
            if name not in self._NOT_REAL:
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
    _CONVENTION_ONLY = {"eps_root": "optax", "dampening": "torch", "lr_decay": "torch",
                        "initial_scale": "optax", "eps_in_sqrt": "optax",
                        "bias_correction": "optax", "mu_dtype": "optax"}

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
        before = len(self._slot_arrays(slot))
        for name in self._state_names():
            if name is not None and name not in slot.arrays:
                slot.arrays[name] = np.full(slot.shape, self._initial_state(name, A), dtype=A.dtype)
        rule = self._update_rule(S, A)
        if rule == "master" and slot.master is None:
            slot.master = param_flat.astype(A.dtype).reshape(slot.shape)     # exact widening
        if rule == "kahan" and slot.compensation is None:
            slot.compensation = np.zeros(slot.shape, dtype=S.dtype)
        if len(self._slot_arrays(slot)) != before:
            self._state_index = None

    def _find_slot(self, param, key, S, A, fresh=0):
        """The slot of this parameter, or a new (unregistered) one; validates without mutating.
        ``fresh``: new unkeyed parameters already planned in the same step_all (numbered
        before this one)."""
        if key is None:
            k = self._by_id.get(id(param))
            slot = self._slots.get(k) if k is not None else None
            if slot is not None and slot.param is not param:
                slot = None
            new_key = self._next_index + fresh if slot is None else k
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
        ``param``.  Everything is validated before anything is modified.  The step number t
        is this parameter's own count (1 at its first step), in every convention: to step
        several parameters as one step of one shared count, as Keras and optax do, use
        :meth:`step_all`.
        """
        plan = self._plan(param, grad, key, None, 0)
        self._run(plan)
        return param

    def step_all(self, items) -> None:
        """One optimizer step over several parameters, as one call of Keras's
        ``optimizer.apply(grads, variables)`` or one optax ``update`` of a parameter tree.

        ``items``: a non-empty sequence of ``(param, grad)`` or ``(param, grad, key)``; a
        ``grad`` of ``None`` skips that parameter (Keras drops variables without a gradient and
        still counts the step).  Everything is validated before any parameter is written: the
        same array (or key) twice, a parameter that shares memory with another item's parameter
        or gradient, and every check of :meth:`step` are errors.  Then ``iterations`` (the
        optimizer-wide count, Keras's ``optimizer.iterations``) increases by one.

        The step number t: in the ``"keras"`` and ``"optax"`` conventions every parameter of the
        call takes t = ``iterations + 1`` (one count for all variables, Keras's
        ``local_step = iterations + 1`` and optax's ``count`` in the state of the tree), so a
        parameter first stepped at the 5th call starts at t = 5, and one skipped in a call
        jumps, as in Keras.  In the ``"torch"`` convention each parameter keeps its own count
        (``state["step"]`` per parameter in torch.optim).  :meth:`step` never changes
        ``iterations``.
        """
        try:
            items = list(items)
        except TypeError:
            raise TypeError("items must be a sequence of (param, grad) or (param, grad, key)") \
                from None
        if not items:
            raise ValueError("step_all needs at least one (param, grad) pair")
        shared_t = self.iterations + 1 if self.convention != "torch" else None
        plans, params, grads, keys = [], [], [], set()
        fresh = 0
        for n, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise TypeError(f"items[{n}] must be (param, grad) or (param, grad, key), "
                                f"got {type(item).__name__}")
            param, grad = item[0], item[1]
            key = item[2] if len(item) == 3 else None
            if grad is None:
                continue
            if key is not None:
                try:
                    if key in keys:
                        raise ValueError(f"key {key!r} appears twice in step_all")
                except TypeError:
                    raise TypeError(f"key must be hashable, got {type(key).__name__}") from None
                keys.add(key)
            plan = self._plan(param, grad, key, shared_t, fresh)
            for other in params:
                if other is param or np.shares_memory(other, param):
                    raise ValueError(f"items[{n}]: param is (or shares memory with) the param "
                                     f"of an earlier item")
            for other in grads:
                if np.shares_memory(other, param):
                    raise ValueError(f"items[{n}]: param shares memory with the grad of an "
                                     f"earlier item (its step would change that gradient)")
            for other in params:
                if np.shares_memory(other, grad):
                    raise ValueError(f"items[{n}]: grad shares memory with the param of an "
                                     f"earlier item")
            fresh += plan["new"] and key is None
            plans.append(plan)
            params.append(param)
            grads.append(grad)
        if not plans:
            raise ValueError("step_all got no gradient (every grad is None)")
        # a gradient that is another item's state would be read after that item's step wrote it
        for n, plan in enumerate(plans):
            for other in plans:
                if other is plan or other["new"]:
                    continue
                for name, arr in self._slot_arrays(other["slot"]):
                    if np.shares_memory(plan["grad"], arr):
                        raise ValueError(
                            f"the grad of item {n} shares memory with the optimizer state "
                            f"{name!r} of parameter {other['slot'].key!r}, which this step_all "
                            f"also updates")
        # validated: from here on, state is created and the parameters are updated
        for plan in plans:
            self._run(plan)
        self.iterations += 1

    def _plan(self, param, grad, key, shared_t, fresh):
        """Validate one parameter's step and compute everything it needs; mutates nothing.
        ``shared_t``: the step number of a :meth:`step_all` in a shared-count convention;
        ``fresh``: new unkeyed parameters planned before this one in the same call."""
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
        if not param.flags.aligned:
            raise ValueError("param is not aligned to its dtype (e.g. a view at an odd byte offset): "
                             "the step updates it in place, so it cannot be copied; pass an aligned array")
        if np.shares_memory(param, grad):
            raise ValueError("grad shares memory with param")
        A = self._arith_for(S)
        slot, new, saved = self._find_slot(param, key, S, A, fresh)
        if not new:
            for name, arr in self._slot_arrays(slot):
                if np.shares_memory(grad, arr):
                    raise ValueError(f"grad shares memory with the optimizer state {name!r}")
                if np.shares_memory(param, arr):
                    raise ValueError(f"param shares memory with the optimizer state {name!r}")
        owner = self._state_sharing_memory_with(param)
        if owner is not None:
            raise ValueError(
                f"param shares memory with the optimizer state {owner[1]!r} of parameter "
                f"{owner[0]!r}: stepping it would overwrite that state (pass the parameter "
                f"array itself, not a state array from state_of())")
        if shared_t is not None:
            t = shared_t
        else:
            t = (saved["step"] if saved is not None else slot.step) + 1
        hyper = self._scalars(A, t)
        kernel = _kernels()
        # a contiguous, aligned grad (a misaligned view is copied: the kernel reads typed elements)
        return {"param": param, "grad": np.require(grad, requirements=["C", "A"]), "key": key, "S": S, "A": A,
                "slot": slot, "new": new, "saved": saved, "t": t, "hyper": hyper,
                "kernel_id": kernel.KERNEL_NAMES.index(self._kernel()),
                "rule": self._update_rule(S, A)}

    def _run(self, plan):
        """Create the state a validated plan needs and run its kernel."""
        param, grad, key, S, A = plan["param"], plan["grad"], plan["key"], plan["S"], plan["A"]
        slot, new, saved, t, rule = plan["slot"], plan["new"], plan["saved"], plan["t"], plan["rule"]
        param_flat = param.reshape(-1)
        if new and key is None and self._unbound_restored:
            self._warn_if_restored_state_is_skipped(param, S)
        if new:
            if saved is not None:
                self._restore(slot, saved)
                del self._pending[slot.key]
            if key is None:
                self._by_id[id(param)] = slot.key
                self._next_index += 1
            self._slots[slot.key] = slot
            self._state_index = None
        self._unbound_restored.discard(slot.key)
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
        # one thread for small steps, and in a forked child (see precision._checks)
        threads = _checks.threads(self.num_threads if n >= _PARALLEL_MIN else 1, n, _PARALLEL_MIN)
        kernel = _kernels()
        fn = getattr(kernel, f"step_{S.short}_{A.short}")
        fn(plan["kernel_id"], kernel.MODE_CODES[rule], flat(param_flat), flat(grad.reshape(-1)),
           states[0], states[1], states[2], flat(slot.master if rule == "master" else None),
           flat(slot.compensation if rule == "kahan" else None), plan["hyper"],
           _sr_key(self.seed, slot.stream, t), threads)
        slot.step = t

    def _state_sharing_memory_with(self, param):
        """(key, name) of a state array of any parameter that shares memory with ``param``, or
        None.  The byte ranges of all state arrays are indexed once, sorted (rebuilt after
        state is created), so a step bisects them instead of checking every array."""
        if param.size == 0:
            return None
        if self._state_index is None:
            entries = sorted(((_byte_bounds(arr), key, name, arr)
                              for key, slot in self._slots.items()
                              for name, arr in self._slot_arrays(slot) if arr.size),
                             key=lambda entry: entry[0])
            lows = [bounds[0] for bounds, _, _, _ in entries]
            reach = []                     # reach[i]: the highest byte end among entries[:i + 1]
            for bounds, _, _, _ in entries:
                reach.append(max(bounds[1], reach[-1]) if reach else bounds[1])
            self._state_index = (lows, reach, entries)
        lows, reach, entries = self._state_index
        low, high = _byte_bounds(param)
        i = bisect.bisect_left(lows, high) - 1      # entries[:i + 1] start below param's end
        while i >= 0 and reach[i] > low:
            (_, end), key, name, arr = entries[i]
            if end > low and np.shares_memory(param, arr):
                return key, name
            i -= 1
        return None

    def _warn_if_restored_state_is_skipped(self, param, S):
        """A new unkeyed array, while state restored by pickle/deepcopy for an array of the same
        shape and format has not been stepped since: most likely the optimizer was pickled
        apart from its parameters, and that state would silently be left behind."""
        for key in sorted(self._unbound_restored, key=repr):
            slot = self._slots.get(key)
            if slot is not None and slot.shape == param.shape and slot.storage is S:
                warnings.warn(
                    f"this optimizer was unpickled or deep-copied with state for a {S.name} "
                    f"parameter of shape {param.shape} (number {key}) that has not been stepped "
                    f"since, and param is another array: its state starts fresh.  Pickle or "
                    f"deepcopy the optimizer together with its parameters (one object, e.g. "
                    f"pickle.dumps((params, opt))), name them with key=, or use "
                    f"state_dict()/load_state_dict()", UserWarning, stacklevel=3)     # -> step -> its caller
                return

    # --------------------------------------------------------------- pickling, copying
    def __getstate__(self):
        state = self.__dict__.copy()
        # id()s and memory addresses belong to this process's objects: rebuilt on load
        del state["_by_id"], state["_state_index"], state["_unbound_restored"]
        return state

    def __setstate__(self, state):
        state.setdefault("iterations", 0)       # pickled before step_all existed
        self.__dict__.update(state)
        # the parameter arrays were pickled (or copied) with the optimizer, as the same objects
        # as the caller's when both are in one pickle / one deepcopy: identity state follows them
        by_id = {id(slot.param): key for key, slot in self._slots.items() if slot.param is not None}
        self.__dict__.update(_by_id=by_id, _state_index=None, _unbound_restored=set(by_id.values()))

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
            "iterations": self.iterations,
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
        iterations = state_dict.get("iterations", 0)     # absent in state_dicts of 0.x
        if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, numbers.Integral) \
                or iterations < 0:
            raise ValueError(f"state_dict has an invalid iterations {iterations!r}")
        # all checked: adopt
        for name in ("convention", "state_format", "master_weights", "update", "seed"):
            object.__setattr__(self, name, getattr(probe, name))
        for name in list(cls._DEFAULTS[self.convention]) + list(cls._FLAGS):
            object.__setattr__(self, name, getattr(probe, name))
        self.reset()
        self._pending = pending
        self.iterations = int(iterations)

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
        """Forget all per-parameter state (step counters and ``iterations`` included)."""
        self._slots = {}
        self._by_id = {}
        self._pending = {}
        self._next_index = 0
        self._cache = {}
        self._state_index = None
        self._unbound_restored = set()
        self.iterations = 0

    zero_state = reset
