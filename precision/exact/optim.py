"""The emulated twin of :mod:`precision.optim`: each optimizer step replayed op by op.

    twin = pr.exact.emulate("float32").optimizer("adam", lr=1e-3, convention="torch")
    twin.step(param16, grad16)             # param16 updated in place, state kept in float32
    twin.state_of(param16)                 # {"step": 1, "exp_avg": ..., "exp_avg_sq": ...}
    twin = pr.exact.emulate("float16").optimizer(opt)    # the settings of a pr.optim optimizer

:class:`EmulatedOptimizer` is the documented algorithm of each optimizer (the formulas in the
docstrings of :mod:`precision.optim`), written a second time in the frameworks' own operation
order (``theta - lr * g`` where torch adds ``-lr * g``, ``lerp`` as torch evaluates it, ...),
with every +, -, *, /, sqrt run through ``precision.exact.emulate(A)`` (one MPFR operation,
rounded once into A) and every scalar derived here again from the hyperparameters: exactly with
``Fraction`` where it is rational, in 600-bit mpmath where it needs a square root, then rounded
once into A.  The emulated format is A, the arithmetic and state format; S is each parameter's
dtype (A must be S or wider).  The kernels are bit-identical to this twin (any NaN equal to any
NaN) in the parameter and in every state array, after every step, for every optimizer,
convention, option, update rule and policy (tests/test_optim.py).

What it shares with :mod:`precision.optim` is the *settings*: the optimizer classes validate the
hyperparameters and fill in each convention's defaults.  None of the arithmetic is shared: the
rounded scalars, the per-step bias corrections, the stochastic-rounding hash and the update rules
are computed here independently (Python integers, Fractions, mpmath and MPFR).

State is kept per parameter as in :class:`precision.optim.Optimizer`: by the identity of the
array (parameters stepped without ``key`` are numbered 0, 1, ... in the order of their first
step; that number is also their stochastic-rounding stream), or by ``key=``.  ``hyperparameters``
is a plain dict read at every step: assign into it to change the learning rate between steps.
Everything is plain Python floats and lists inside: a twin is meant for small arrays (thousands
of elements, not millions).
"""
from __future__ import annotations

import hashlib
import math
import numbers
from fractions import Fraction

import mpmath
import numpy as np

from precision import formats as _formats

from .emulate import check_storage, emulate

__all__ = ["EmulatedOptimizer", "OPTIMIZER_NAMES", "stochastic_round", "stochastic_round_bits",
           "stochastic_round_key"]

# the names :meth:`precision.exact.Emulated.optimizer` accepts (classes of precision.optim)
OPTIMIZER_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta",
                   "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_WIDE_BITS = 600


# ---------------------------------------------------------------------- stochastic rounding
def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def _stream_of(key) -> int:
    """A parameter's stream: its number if unkeyed, else 8 bytes of blake2b(repr(key))."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key) & _M64
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")


def stochastic_round_key(seed: int, stream: int, t: int) -> int:
    """The 64-bit key of one parameter's step t: splitmix64(splitmix64(splitmix64(seed) ^
    stream) ^ t)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ t)


def stochastic_round_bits(i: int, key: int) -> int:
    """The 32 random bits of element i: mix32(mix32(i_lo ^ key_lo) ^ i_hi ^ key_hi)."""
    return _mix32(_mix32((i & _M32) ^ (key & _M32)) ^ (i >> 32) ^ (key >> 32))


def stochastic_round(x: float, bits: int, storage) -> float:
    """x (a float of the compute type W) rounded stochastically into ``storage``: to the nearest
    value n, or to the other neighbour o when U = (bits >> 8) / 2^24 < |x - n| / |o - n| (exact
    rational arithmetic).  Infinities, NaN and values of S are returned unchanged; a
    neighbour beyond S's range is never chosen; rounding keeps x's sign, also at zero."""
    S = _formats.format(storage)
    if math.isnan(x) or math.isinf(x):
        return x
    n = float(S.round(np.float64(x)))
    if n == x or math.isinf(n):
        return n
    arr = np.asarray(n, dtype=S.dtype)
    o = float(S.next_up(arr) if x > n else S.next_down(arr))
    o = math.copysign(o, x) if o == 0 else o
    if math.isinf(o):
        return n
    q = abs(Fraction(x) - Fraction(n)) / abs(Fraction(o) - Fraction(n))
    return o if Fraction(bits >> 8, 1 << 24) < q else n


def _maxnan(a, b):
    if math.isnan(a):
        return a
    if math.isnan(b):
        return b
    return a if a >= b else b


def _wide(q: Fraction):
    return mpmath.mpf(q.numerator) / q.denominator


# ---------------------------------------------------------------------- per-parameter state
class _TwinSlot:
    """One parameter's state: step counter, state arrays, master copy, Kahan compensation (all
    Python floats, flat), and what identifies it."""

    def __init__(self, key, param, S, stream):
        self.key = key
        self.param = param
        self.shape = param.shape
        self.S = S
        self.stream = stream
        self.t = 0
        self.state = {}
        self.master = None
        self.comp = None


# ---------------------------------------------------------------------- the twin
class EmulatedOptimizer:
    """An optimizer of :mod:`precision.optim` replayed op by op in arithmetic ``arith`` (A).

    Build it with :meth:`precision.exact.Emulated.optimizer`.  Attributes: ``arith`` (A),
    ``kind`` ("SGD", "Adagrad", "Adadelta", "RMSprop", "Adam" or "AdamW"), ``convention``,
    ``hyperparameters`` (a dict, read at every step), ``update``, ``master_weights``, ``seed``.
    """

    def __init__(self, arith, optimizer):
        from precision import optim as _optim       # the settings only (module docstring)
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"expected a precision.optim optimizer, got {type(optimizer).__name__}")
        self.arith = _formats.format(arith)
        if optimizer.state_format is not None and optimizer.state_format is not self.arith:
            raise ValueError(
                f"the optimizer keeps its state in {optimizer.state_format.name}; emulate that "
                f"format (emulate({optimizer.state_format.name!r}).optimizer(...)), not "
                f"{self.arith.name}")
        self.kind = type(optimizer).__name__
        self.convention = optimizer.convention
        self.hyperparameters = dict(optimizer.hyperparameters)
        self.update = optimizer.update
        self.master_weights = optimizer.master_weights
        self.seed = optimizer.seed
        self.E = emulate(self.arith)
        # stochastic rounding rounds theta + u only to the compute type W first
        self.W = emulate("float64" if self.arith.name == "float64" else "float32")
        self._direction = getattr(self, "_dir_" + self.kind.lower().replace("adamw", "adam"))
        self._slots = {}
        self._by_id = {}
        self._next_index = 0
        self._memo = {}
        self.iterations = 0         # step_all calls, as Optimizer.iterations

    @classmethod
    def from_name(cls, arith, name, **settings):
        """The twin of ``precision.optim.<Class>(**settings)``, the class named by ``name``
        (``OPTIMIZER_NAMES``: "sgd", "adam", ..., any case)."""
        from precision import optim as _optim
        try:
            class_name = OPTIMIZER_NAMES[str(name).lower()]
        except KeyError:
            raise ValueError(f"unknown optimizer {name!r}; expected one of "
                             f"{sorted(OPTIMIZER_NAMES)}") from None
        return cls(arith, getattr(_optim, class_name)(**settings))

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return (f"emulate({self.arith.name!r}).optimizer({self.kind.lower()!r}, {hp}, "
                f"convention={self.convention!r}, update={self.update!r})")

    # ------------------------------------------------------------------ scalars
    def _r(self, x):
        """An exact value (float, int, Fraction, mpf) rounded once into A (memoized)."""
        key = (type(x).__name__, x)
        out = self._memo.get(key)
        if out is None:
            if isinstance(x, mpmath.mpf):
                out = float(self.arith.round(x))
            else:
                out = self.E.round(Fraction(x))
            self._memo[key] = out
        return out

    def _once(self, name, t, compute):
        """A per-step scalar, computed once per (step, hyperparameters)."""
        key = (name, t, tuple(sorted(self.hyperparameters.items())))
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _lerp(self, a, b, w):
        """torch.lerp(a, b, w) as torch's vectorised CPU kernel evaluates it (its scalar tail
        writes b - (b - a)(1 - w), the same value but +0 where this gives -0)."""
        E = self.E
        if abs(w) < 0.5:
            return E.add(a, E.mul(w, E.sub(b, a)))
        return E.add(b, E.mul(self._r(Fraction(w) - 1), E.sub(b, a)))

    # ------------------------------------------------------------------ state
    def _state_names(self):
        hp = self.hyperparameters
        if self.kind == "SGD":
            return ["momentum_buffer"] if hp["momentum"] != 0 else []
        if self.kind == "Adagrad":
            return ["sum"]
        if self.kind == "Adadelta":
            return ["square_avg", "acc_delta"]
        if self.kind == "RMSprop":
            return (["square_avg"] + (["grad_avg"] if hp["centered"] else [])
                    + (["momentum_buffer"] if hp["momentum"] != 0 else []))
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if hp["amsgrad"] else [])

    def _init_value(self, name):
        if name == "sum":
            return self._r(self.hyperparameters["initial_accumulator_value"])
        if name == "square_avg" and self.kind == "RMSprop":
            return self._r(self.hyperparameters["initial_scale"])
        return 0.0

    def _rule(self, S):
        A = self.arith
        if self.update == "nearest":
            return "master" if self.master_weights and A is not S else "nearest"
        if self.update == "kahan":
            return "kahan"
        if S.name in ("float16", "bfloat16") or (S.name == "float32" and A.name == "float64"):
            return "stochastic"
        return "nearest"

    def _slot(self, param, key):
        if key is None:
            k = self._by_id.get(id(param))
            slot = self._slots.get(k) if k is not None else None
            if slot is not None and slot.param is param:
                return slot
            slot = _TwinSlot(self._next_index, param, _formats.of(param),
                             _stream_of(self._next_index))
            self._by_id[id(param)] = slot.key
            self._next_index += 1
        else:
            slot = self._slots.get(key)
            if slot is not None:
                return slot
            slot = _TwinSlot(key, None, _formats.of(param), _stream_of(key))
        self._slots[slot.key] = slot
        return slot

    def state_of(self, param=None, *, key=None) -> dict:
        """``{"step": t, name: array, ...}`` as :meth:`precision.optim.Optimizer.state_of`
        returns it (copies: state arrays and ``"master"`` in A, ``"compensation"`` in S)."""
        if key is None:
            k = self._by_id.get(id(param))
            slot = self._slots.get(k) if k is not None else None
            if slot is None or slot.param is not param:
                raise KeyError("this twin has no state for that array (not stepped yet?)")
        else:
            slot = self._slots.get(key)
            if slot is None:
                raise KeyError(f"no state for key {key!r}")

        def array(values, fmt):
            return np.array(values, dtype=np.float64).astype(fmt.dtype).reshape(slot.shape)

        out = {"step": slot.t}
        for name, values in slot.state.items():
            out[name] = array(values, self.arith)
        if slot.master is not None:
            out["master"] = array(slot.master, self.arith)
        if slot.comp is not None:
            out["compensation"] = array(slot.comp, slot.S)
        return out

    # ------------------------------------------------------------------ one step
    def step_all(self, items) -> None:
        """One emulated step over several parameters, with the step numbers of
        :meth:`precision.optim.Optimizer.step_all`: t = ``iterations + 1`` for every parameter
        in the keras and optax conventions, each parameter's own count in torch's; items with a
        ``None`` gradient are skipped; then ``iterations`` increases by one."""
        items = list(items)
        if not items or all(item[1] is None for item in items):
            raise ValueError("step_all needs at least one (param, grad) pair with a gradient")
        shared_t = self.iterations + 1 if self.convention != "torch" else None
        for item in items:
            if item[1] is not None:
                self.step(item[0], item[1], item[2] if len(item) == 3 else None, _t=shared_t)
        self.iterations += 1

    def step(self, param: np.ndarray, grad: np.ndarray, key=None, *, _t=None) -> np.ndarray:
        """Update ``param`` in place by one emulated step with gradient ``grad`` (same dtype and
        shape); returns ``param``.  t is the parameter's own count (``step_all`` for a shared
        one)."""
        if not isinstance(param, np.ndarray) or not isinstance(grad, np.ndarray):
            raise TypeError("param and grad must be numpy arrays")
        S = _formats.of(param)
        if grad.dtype != param.dtype or grad.shape != param.shape:
            raise ValueError(f"grad ({grad.dtype}, {grad.shape}) must match param "
                             f"({param.dtype}, {param.shape})")
        if not param.flags.writeable:
            raise ValueError("param is read-only: the step updates it in place")
        check_storage(S, self.arith)
        slot = self._slot(param, key)
        if slot.shape != param.shape or slot.S is not S:
            raise ValueError(f"parameter {slot.key!r} changed shape or format since its state "
                             "was created")
        with np.errstate(invalid="ignore"):
            theta = param.astype(np.float64).reshape(-1).tolist()
            g_all = grad.astype(np.float64).reshape(-1).tolist()
        n = len(theta)
        rule = self._rule(S)
        for name in self._state_names():     # created lazily, as the optimizer does
            if name not in slot.state:
                slot.state[name] = [self._init_value(name)] * n
        if rule == "master" and slot.master is None:
            slot.master = list(theta)
        if rule == "kahan" and slot.comp is None:
            slot.comp = [0.0] * n
        slot.t = slot.t + 1 if _t is None else _t
        key64 = stochastic_round_key(self.seed, slot.stream, slot.t)
        maximize = self.hyperparameters["maximize"]
        for i in range(n):
            g = -g_all[i] if maximize else g_all[i]
            th = slot.master[i] if rule == "master" else theta[i]
            th, u = self._direction(slot, i, th, g)
            theta[i] = self._write(slot, rule, i, th, u, key64)
        new = np.array(theta, dtype=np.float64).astype(S.dtype).reshape(param.shape)
        param[...] = new
        return param

    def _write(self, slot, rule, i, th, u, key64):
        """The new parameter value (a value of S) by the update rule."""
        E, ES = self.E, emulate(slot.S)
        if rule in ("nearest", "master"):
            x = E.add(th, u)
            if rule == "master":
                slot.master[i] = x
            return ES.round(x)
        if rule == "kahan":
            y = E.sub(u, slot.comp[i])
            s = ES.round(E.add(th, y))
            slot.comp[i] = ES.round(E.sub(E.sub(s, th), y))
            return s
        x = self.W.add(th, u)
        return stochastic_round(x, stochastic_round_bits(i, key64), slot.S)

    # ------------------------------------------------------------------ directions
    def _decay_keras(self, th):
        E, hp = self.E, self.hyperparameters
        return E.sub(th, E.mul(E.mul(th, self._r(hp["weight_decay"])), self._r(hp["lr"])))

    def _dir_sgd(self, slot, i, th, g):
        E, hp, conv = self.E, self.hyperparameters, self.convention
        lr = self._r(hp["lr"])
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self._decay_keras(th)
            else:
                g = E.add(g, E.mul(self._r(hp["weight_decay"]), th))
        if hp["momentum"] == 0:
            return th, E.mul(-lr, g)
        mu = self._r(hp["momentum"])
        b = slot.state["momentum_buffer"][i]
        if conv == "torch":
            b = g if slot.t == 1 else E.add(E.mul(mu, b),
                                             E.mul(self._r(1 - Fraction(hp["dampening"])), g))
            d = E.add(g, E.mul(mu, b)) if hp["nesterov"] else b
            u = E.mul(-lr, d)
        elif conv == "keras":
            b = E.sub(E.mul(b, mu), E.mul(g, lr))
            u = E.sub(E.mul(b, mu), E.mul(g, lr)) if hp["nesterov"] else b
        else:
            b = E.add(g, E.mul(mu, b))
            d = E.add(g, E.mul(mu, b)) if hp["nesterov"] else b
            u = E.mul(-lr, d)
        slot.state["momentum_buffer"][i] = b
        return th, u

    def _dir_adagrad(self, slot, i, th, g):
        E, hp, conv = self.E, self.hyperparameters, self.convention
        lr, eps = self._r(hp["lr"]), self._r(hp["eps"])
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self._decay_keras(th)
            else:
                g = E.add(g, E.mul(self._r(hp["weight_decay"]), th))
        s = slot.state["sum"][i]
        if conv == "torch":
            s = E.add(s, E.mul(g, g))
            clr = self._r(Fraction(hp["lr"]) / (1 + (slot.t - 1) * Fraction(hp["lr_decay"])))
            u = E.div(E.mul(-clr, g), E.add(E.sqrt(s), eps))
        elif conv == "keras":
            s = E.add(s, E.mul(g, g))
            u = -E.div(E.mul(lr, g), E.sqrt(E.add(s, eps)))
        else:
            s = E.add(E.mul(g, g), s)
            k = E.div(1.0, E.sqrt(E.add(s, eps))) if s > 0 else 0.0
            u = E.mul(-lr, E.mul(k, g))
        slot.state["sum"][i] = s
        return th, u

    def _dir_adadelta(self, slot, i, th, g):
        E, hp, conv = self.E, self.hyperparameters, self.convention
        lr, eps, rho = self._r(hp["lr"]), self._r(hp["eps"]), self._r(hp["rho"])
        c = self._r(1 - Fraction(hp["rho"]))
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self._decay_keras(th)
            else:
                g = E.add(g, E.mul(self._r(hp["weight_decay"]), th))
        v, a = slot.state["square_avg"][i], slot.state["acc_delta"][i]
        if conv == "torch":
            v = E.add(E.mul(rho, v), E.mul(E.mul(c, g), g))
            d = E.mul(E.div(E.sqrt(E.add(a, eps)), E.sqrt(E.add(v, eps))), g)
            a = E.add(E.mul(rho, a), E.mul(E.mul(c, d), d))
            u = E.mul(-lr, d)
        elif conv == "keras":
            v = E.add(E.mul(rho, v), E.mul(c, E.mul(g, g)))
            d = -E.div(E.mul(E.sqrt(E.add(a, eps)), g), E.sqrt(E.add(v, eps)))
            a = E.add(E.mul(rho, a), E.mul(c, E.mul(d, d)))
            u = E.mul(lr, d)
        else:
            v = E.add(E.mul(c, E.mul(g, g)), E.mul(rho, v))
            d = E.mul(E.div(E.sqrt(E.add(a, eps)), E.sqrt(E.add(v, eps))), g)
            a = E.add(E.mul(c, E.mul(d, d)), E.mul(rho, a))
            u = E.mul(-lr, d)
        slot.state["square_avg"][i], slot.state["acc_delta"][i] = v, a
        return th, u

    def _dir_rmsprop(self, slot, i, th, g):
        E, hp, conv = self.E, self.hyperparameters, self.convention
        lr, eps, alpha = self._r(hp["lr"]), self._r(hp["eps"]), self._r(hp["alpha"])
        c = self._r(1 - Fraction(hp["alpha"]))
        mu = self._r(hp["momentum"])
        centered, mom = hp["centered"], hp["momentum"] != 0
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self._decay_keras(th)
            else:
                g = E.add(g, E.mul(self._r(hp["weight_decay"]), th))
        state = slot.state
        v = state["square_avg"][i]
        if conv == "torch":
            v = E.add(E.mul(alpha, v), E.mul(E.mul(c, g), g))
            if centered:
                gbar = self._lerp(state["grad_avg"][i], g, c)
                state["grad_avg"][i] = gbar
                den = E.add(E.sqrt(E.sub(v, E.mul(gbar, gbar))), eps)
            else:
                den = E.add(E.sqrt(v), eps)
            if mom:
                b = E.add(E.mul(mu, state["momentum_buffer"][i]), E.div(g, den))
                state["momentum_buffer"][i] = b
                u = E.mul(-lr, b)
            else:
                u = E.div(E.mul(-lr, g), den)
        elif conv == "keras":
            v = E.add(E.mul(alpha, v), E.mul(c, E.mul(g, g)))
            if centered:
                gbar = E.add(E.mul(alpha, state["grad_avg"][i]), E.mul(c, g))
                state["grad_avg"][i] = gbar
                den = E.add(E.sub(v, E.mul(gbar, gbar)), eps)
            else:
                den = E.add(v, eps)
            inc = E.div(E.mul(lr, g), E.sqrt(den))
            if mom:
                b = E.add(E.mul(mu, state["momentum_buffer"][i]), inc)
                state["momentum_buffer"][i] = b
                u = -b
            else:
                u = -inc
        else:
            v = E.add(E.mul(c, E.mul(g, g)), E.mul(alpha, v))
            s = v
            if hp["bias_correction"]:       # scale_by_rms / scale_by_stddev: v / (1 - alpha^t)
                bc = self._r(1 - Fraction(hp["alpha"]) ** slot.t)
                s = E.div(v, bc)
            if centered:
                gbar = E.add(E.mul(c, g), E.mul(alpha, state["grad_avg"][i]))
                state["grad_avg"][i] = gbar
                gh = E.div(gbar, bc) if hp["bias_correction"] else gbar
                s = E.sub(s, E.mul(gh, gh))
            if hp["eps_in_sqrt"]:
                k = E.div(1.0, E.sqrt(E.add(s, eps)))
            else:
                k = E.div(1.0, E.add(E.sqrt(s), eps))
            d = E.mul(-lr, E.mul(k, g))
            if mom:
                b = E.add(d, E.mul(mu, state["momentum_buffer"][i]))
                state["momentum_buffer"][i] = b
                u = E.add(d, E.mul(mu, b)) if hp["nesterov"] else b
            else:
                u = d
        state["square_avg"][i] = v
        return th, u

    def _dir_adam(self, slot, i, th, g):
        E, hp, conv = self.E, self.hyperparameters, self.convention
        b1, b2 = hp["betas"]
        lr, eps, wd = self._r(hp["lr"]), self._r(hp["eps"]), hp["weight_decay"]
        decoupled = hp["decoupled_weight_decay"]
        c1, c2 = self._r(1 - Fraction(b1)), self._r(1 - Fraction(b2))
        state, t = slot.state, slot.t
        m, v = state["exp_avg"][i], state["exp_avg_sq"][i]
        ams = hp["amsgrad"]
        th0 = th
        if wd != 0:
            if conv == "keras":
                th = self._decay_keras(th)
            elif conv == "torch" and decoupled:
                th = E.mul(th, self._r(1 - Fraction(hp["lr"]) * Fraction(wd)))
            elif not decoupled:
                g = E.add(g, E.mul(self._r(wd), th))
        bc1 = 1 - Fraction(b1) ** t          # 1 - beta^t, exact
        bc2 = 1 - Fraction(b2) ** t
        if conv == "torch":
            m = self._lerp(m, g, c1)
            v = E.add(E.mul(self._r(b2), v), E.mul(E.mul(c2, g), g))
            vv = v
            if ams:
                vv = state["max_exp_avg_sq"][i] = _maxnan(state["max_exp_avg_sq"][i], v)
            step_size = self._r(Fraction(hp["lr"]) / bc1)

            def sqrt_bc2():
                with mpmath.workprec(_WIDE_BITS):
                    return self._r(mpmath.sqrt(_wide(bc2)))
            bc2_sqrt = self._once("bc2_sqrt", t, sqrt_bc2)
            u = E.div(E.mul(-step_size, m), E.add(E.div(E.sqrt(vv), bc2_sqrt), eps))
        elif conv == "keras":
            m = E.add(m, E.mul(E.sub(g, m), c1))
            v = E.add(v, E.mul(E.sub(E.mul(g, g), v), c2))
            vv = v
            if ams:
                vv = state["max_exp_avg_sq"][i] = _maxnan(state["max_exp_avg_sq"][i], v)

            def alpha_t():
                with mpmath.workprec(_WIDE_BITS):
                    return self._r(Fraction(hp["lr"]) * mpmath.sqrt(_wide(bc2)) / _wide(bc1))
            alpha = self._once("alpha_t", t, alpha_t)
            u = -E.div(E.mul(m, alpha), E.add(E.sqrt(vv), eps))
        else:
            M = hp["mu_dtype"]
            if M is None or M == self.arith.name:
                m = E.add(E.mul(c1, g), E.mul(self._r(b1), m))
            else:       # beta1 * m in mu_dtype M (beta1 rounded into M), the sum in A
                EM = emulate(M)
                m = E.add(E.mul(c1, g), EM.round(E.mul(EM.round(Fraction(b1)), m)))
            v = E.add(E.mul(c2, E.mul(g, g)), E.mul(self._r(b2), v))
            if hp["nesterov"]:          # NAdam: beta1 m / (1 - beta1^(t+1)) + (1 - beta1) g / bc1
                bc1_next = 1 - Fraction(b1) ** (t + 1)
                mh = E.add(E.mul(self._r(b1), E.div(m, self._r(bc1_next))),
                           E.mul(c1, E.div(g, self._r(bc1))))
            else:
                mh = E.div(m, self._r(bc1))
            vh = E.div(v, self._r(bc2))
            if ams:
                vh = state["max_exp_avg_sq"][i] = _maxnan(state["max_exp_avg_sq"][i], vh)
            d = E.div(mh, E.add(E.sqrt(E.add(vh, self._r(hp["eps_root"]))), eps))
            if wd != 0 and decoupled:
                d = E.add(d, E.mul(self._r(wd), th0))
            u = E.mul(-lr, d)
            if M is not None and M != self.arith.name:
                m = EM.round(m)         # stored cast to M; this step used the A value
        state["exp_avg"][i], state["exp_avg_sq"][i] = m, v
        return th, u
