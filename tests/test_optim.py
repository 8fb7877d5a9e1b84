"""precision.optim: every step kernel is bit-identical to its emulated twin.

The twin (class ``Twin`` below) is the documented algorithm of each optimizer, written a second
time in the frameworks' own operation order (``theta - lr * g`` where torch adds ``-lr * g``,
``lerp`` as torch evaluates it, ...), with every operation run through
``precision.exact.emulate(A)`` and every scalar derived here again from the hyperparameters
(exactly, with Fractions and mpmath).  Kernels and twin must agree to the bit (any NaN equal to
any NaN) in the parameter and in every state array, after every step, in every policy and
update rule.
"""
import math
import warnings
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import precision as pr
from precision import optim
from precision._kernels import load, load_baseline, uses_v3
from precision.exact import emulate
from precision.formats import PrecisionWarning
from tests.helpers import same_bits

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")

POLICIES = [("float16", "float16"), ("float16", "float32"), ("float16", "float64"),
            ("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("bfloat16", "float64"),
            ("float32", "float32"), ("float32", "float64"), ("float64", "float64")]
OPTIMIZERS = [optim.SGD, optim.Adagrad, optim.Adadelta, optim.RMSprop, optim.Adam, optim.AdamW]
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


# ============================================================================ the twin
def _sm64(x):
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _mix32(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def sr_bits(i, key):
    """The 32 random bits of element i (hash of the index and the step's key)."""
    return _mix32(_mix32((i & M32) ^ (key & M32)) ^ (i >> 32) ^ (key >> 32))


def stochastic_round(x, r, S):
    """x (a float of the compute type) rounded into S: to the nearest value n, or to the other
    neighbour o when U = (r >> 8) / 2^24 < |x - n| / |o - n| (exact rational arithmetic)."""
    if math.isnan(x) or math.isinf(x):
        return x
    n = float(S.round(np.float64(x)))
    if n == x or math.isinf(n):
        return n
    arr = np.asarray(n, dtype=S.dtype)
    o = float(S.next_up(arr) if x > n else S.next_down(arr))
    o = math.copysign(o, x) if o == 0 else o       # rounding keeps x's sign, also at zero
    if math.isinf(o):
        return n
    q = abs(Fraction(x) - Fraction(n)) / abs(Fraction(o) - Fraction(n))
    return o if Fraction(r >> 8, 1 << 24) < q else n


def maxnan(a, b):
    if math.isnan(a):
        return a
    if math.isnan(b):
        return b
    return a if a >= b else b


class Twin:
    """One parameter array stepped by the emulated algorithm (Python floats, exact)."""

    def __init__(self, opt, param, key_stream=0):
        self.opt = opt
        self.kind = type(opt).__name__
        self.conv = opt.convention
        self.hp = opt.hyperparameters
        self.S = pr.format(param.dtype)
        self.A = opt.state_format or self.S
        self.E = emulate(self.A)
        self.ES = emulate(self.S)
        self.W = emulate("float64" if self.A.name == "float64" else "float32")
        self.theta = [float(v) for v in param.astype(np.float64).reshape(-1)]
        self.n = len(self.theta)
        self.t = 0
        self.stream = key_stream
        rule = opt.update
        if rule == "nearest" and opt.master_weights and self.A is not self.S:
            rule = "master"
        if rule == "stochastic" and not (self.S.name in ("float16", "bfloat16")
                                         or (self.S.name == "float32" and self.A.name == "float64")):
            rule = "nearest"
        self.rule = rule
        self.master = list(self.theta) if rule == "master" else None
        self.comp = [0.0] * self.n if rule == "kahan" else None
        self._memo = {}
        self.state = {name: [self.init_value(name)] * self.n for name in self.state_names()}

    # ------------------------------------------------------------------ scalars
    def r(self, x):
        """An exact value (float, int, Fraction, mpf) rounded once into A (memoized)."""
        key = (type(x).__name__, x)
        out = self._memo.get(key)
        if out is None:
            out = float(self.A.round(x)) if isinstance(x, mpmath.mpf) else self.E.round(Fraction(x))
            self._memo[key] = out
        return out

    def once(self, name, compute):
        """A per-step scalar computed once per step."""
        key = (name, self.t)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def bc(self, beta):
        """1 - beta^t, exact."""
        return 1 - Fraction(beta) ** self.t

    def wide(self, q):
        with mpmath.workprec(600):
            return mpmath.mpf(q.numerator) / q.denominator

    def lerp(self, a, b, w):
        """torch.lerp(a, b, w) as torch's vectorised CPU kernel evaluates it (its scalar tail
        writes b - (b - a)(1 - w), the same value but +0 where this gives -0)."""
        E = self.E
        if abs(w) < 0.5:
            return E.add(a, E.mul(w, E.sub(b, a)))
        return E.add(b, E.mul(self.r(Fraction(w) - 1), E.sub(b, a)))

    # ------------------------------------------------------------------ state
    def state_names(self):
        hp = self.hp
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

    def init_value(self, name):
        if name == "sum":
            return self.r(self.hp["initial_accumulator_value"])
        return 0.0

    # ------------------------------------------------------------------ one step
    def step(self, grad):
        self.t += 1
        g_all = [float(v) for v in grad.astype(np.float64).reshape(-1)]
        key = _sm64(_sm64(_sm64(self.opt.seed) ^ self.stream) ^ self.t)
        direction = getattr(self, "dir_" + self.kind.lower().replace("adamw", "adam"))
        for i in range(self.n):
            g = g_all[i]
            if self.hp["maximize"]:
                g = -g
            th = self.master[i] if self.rule == "master" else self.theta[i]
            th, u = direction(i, th, g)
            self.write(i, th, u, key)

    def write(self, i, th, u, key):
        E, S = self.E, self.S
        if self.rule in ("nearest", "master"):
            x = E.add(th, u)
            if self.rule == "master":
                self.master[i] = x
            self.theta[i] = self.ES.round(x)
        elif self.rule == "kahan":
            y = E.sub(u, self.comp[i])
            s = self.ES.round(E.add(th, y))
            self.comp[i] = self.ES.round(E.sub(E.sub(s, th), y))
            self.theta[i] = s
        else:
            x = self.W.add(th, u)
            self.theta[i] = stochastic_round(x, sr_bits(i, key), S)

    # ------------------------------------------------------------------ directions
    def decay_keras(self, th):
        E = self.E
        return E.sub(th, E.mul(E.mul(th, self.r(self.hp["weight_decay"])), self.r(self.hp["lr"])))

    def dir_sgd(self, i, th, g):
        E, hp, conv = self.E, self.hp, self.conv
        lr = self.r(hp["lr"])
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self.decay_keras(th)
            else:
                g = E.add(g, E.mul(self.r(hp["weight_decay"]), th))
        if hp["momentum"] == 0:
            return th, E.mul(-lr, g)
        mu = self.r(hp["momentum"])
        b = self.state["momentum_buffer"][i]
        if conv == "torch":
            b = g if self.t == 1 else E.add(E.mul(mu, b), E.mul(self.r(1 - Fraction(hp["dampening"])), g))
            d = E.add(g, E.mul(mu, b)) if hp["nesterov"] else b
            u = E.mul(-lr, d)
        elif conv == "keras":
            b = E.sub(E.mul(b, mu), E.mul(g, lr))
            u = E.sub(E.mul(b, mu), E.mul(g, lr)) if hp["nesterov"] else b
        else:
            b = E.add(g, E.mul(mu, b))
            d = E.add(g, E.mul(mu, b)) if hp["nesterov"] else b
            u = E.mul(-lr, d)
        self.state["momentum_buffer"][i] = b
        return th, u

    def dir_adagrad(self, i, th, g):
        E, hp, conv = self.E, self.hp, self.conv
        lr, eps = self.r(hp["lr"]), self.r(hp["eps"])
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self.decay_keras(th)
            else:
                g = E.add(g, E.mul(self.r(hp["weight_decay"]), th))
        s = self.state["sum"][i]
        if conv == "torch":
            s = E.add(s, E.mul(g, g))
            clr = self.r(Fraction(hp["lr"]) / (1 + (self.t - 1) * Fraction(hp["lr_decay"])))
            u = E.div(E.mul(-clr, g), E.add(E.sqrt(s), eps))
        elif conv == "keras":
            s = E.add(s, E.mul(g, g))
            u = -E.div(E.mul(lr, g), E.sqrt(E.add(s, eps)))
        else:
            s = E.add(E.mul(g, g), s)
            k = E.div(1.0, E.sqrt(E.add(s, eps))) if s > 0 else 0.0
            u = E.mul(-lr, E.mul(k, g))
        self.state["sum"][i] = s
        return th, u

    def dir_adadelta(self, i, th, g):
        E, hp, conv = self.E, self.hp, self.conv
        lr, eps, rho = self.r(hp["lr"]), self.r(hp["eps"]), self.r(hp["rho"])
        c = self.r(1 - Fraction(hp["rho"]))
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self.decay_keras(th)
            else:
                g = E.add(g, E.mul(self.r(hp["weight_decay"]), th))
        v, a = self.state["square_avg"][i], self.state["acc_delta"][i]
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
        self.state["square_avg"][i], self.state["acc_delta"][i] = v, a
        return th, u

    def dir_rmsprop(self, i, th, g):
        E, hp, conv = self.E, self.hp, self.conv
        lr, eps, alpha = self.r(hp["lr"]), self.r(hp["eps"]), self.r(hp["alpha"])
        c = self.r(1 - Fraction(hp["alpha"]))
        mu = self.r(hp["momentum"])
        centered, mom = hp["centered"], hp["momentum"] != 0
        if hp["weight_decay"] != 0:
            if conv == "keras":
                th = self.decay_keras(th)
            else:
                g = E.add(g, E.mul(self.r(hp["weight_decay"]), th))
        st_ = self.state
        v = st_["square_avg"][i]
        if conv == "torch":
            v = E.add(E.mul(alpha, v), E.mul(E.mul(c, g), g))
            if centered:
                gbar = self.lerp(st_["grad_avg"][i], g, c)
                st_["grad_avg"][i] = gbar
                den = E.add(E.sqrt(E.sub(v, E.mul(gbar, gbar))), eps)
            else:
                den = E.add(E.sqrt(v), eps)
            if mom:
                b = E.add(E.mul(mu, st_["momentum_buffer"][i]), E.div(g, den))
                st_["momentum_buffer"][i] = b
                u = E.mul(-lr, b)
            else:
                u = E.div(E.mul(-lr, g), den)
        elif conv == "keras":
            v = E.add(E.mul(alpha, v), E.mul(c, E.mul(g, g)))
            if centered:
                gbar = E.add(E.mul(alpha, st_["grad_avg"][i]), E.mul(c, g))
                st_["grad_avg"][i] = gbar
                den = E.add(E.sub(v, E.mul(gbar, gbar)), eps)
            else:
                den = E.add(v, eps)
            inc = E.div(E.mul(lr, g), E.sqrt(den))
            if mom:
                b = E.add(E.mul(mu, st_["momentum_buffer"][i]), inc)
                st_["momentum_buffer"][i] = b
                u = -b
            else:
                u = -inc
        else:
            v = E.add(E.mul(c, E.mul(g, g)), E.mul(alpha, v))
            if centered:
                gbar = E.add(E.mul(c, g), E.mul(alpha, st_["grad_avg"][i]))
                st_["grad_avg"][i] = gbar
                k = E.div(1.0, E.sqrt(E.add(E.sub(v, E.mul(gbar, gbar)), eps)))
            else:
                k = E.div(1.0, E.sqrt(E.add(v, eps)))
            d = E.mul(-lr, E.mul(k, g))
            if mom:
                b = E.add(d, E.mul(mu, st_["momentum_buffer"][i]))
                st_["momentum_buffer"][i] = b
                u = b
            else:
                u = d
        st_["square_avg"][i] = v
        return th, u

    def dir_adam(self, i, th, g):
        E, hp, conv = self.E, self.hp, self.conv
        b1, b2 = hp["betas"]
        lr, eps, wd = self.r(hp["lr"]), self.r(hp["eps"]), hp["weight_decay"]
        decoupled = hp["decoupled_weight_decay"]
        c1, c2 = self.r(1 - Fraction(b1)), self.r(1 - Fraction(b2))
        st_ = self.state
        m, v = st_["exp_avg"][i], st_["exp_avg_sq"][i]
        ams = hp["amsgrad"]
        th0 = th
        if wd != 0:
            if conv == "keras":
                th = self.decay_keras(th)
            elif conv == "torch" and decoupled:
                th = E.mul(th, self.r(1 - Fraction(hp["lr"]) * Fraction(wd)))
            elif not decoupled:
                g = E.add(g, E.mul(self.r(wd), th))
        bc1 = self.once("bc1", lambda: self.bc(b1))
        bc2 = self.once("bc2", lambda: self.bc(b2))
        if conv == "torch":
            m = self.lerp(m, g, c1)
            v = E.add(E.mul(self.r(b2), v), E.mul(E.mul(c2, g), g))
            vv = v
            if ams:
                vv = st_["max_exp_avg_sq"][i] = maxnan(st_["max_exp_avg_sq"][i], v)
            step_size = self.r(Fraction(hp["lr"]) / bc1)

            def sqrt_bc2():
                with mpmath.workprec(600):
                    return self.r(mpmath.sqrt(self.wide(bc2)))
            bc2_sqrt = self.once("bc2_sqrt", sqrt_bc2)
            u = E.div(E.mul(-step_size, m), E.add(E.div(E.sqrt(vv), bc2_sqrt), eps))
        elif conv == "keras":
            m = E.add(m, E.mul(E.sub(g, m), c1))
            v = E.add(v, E.mul(E.sub(E.mul(g, g), v), c2))
            vv = v
            if ams:
                vv = st_["max_exp_avg_sq"][i] = maxnan(st_["max_exp_avg_sq"][i], v)
            def alpha_t():
                with mpmath.workprec(600):
                    return self.r(Fraction(hp["lr"]) * mpmath.sqrt(self.wide(bc2)) / self.wide(bc1))
            alpha = self.once("alpha_t", alpha_t)
            u = -E.div(E.mul(m, alpha), E.add(E.sqrt(vv), eps))
        else:
            m = E.add(E.mul(c1, g), E.mul(self.r(b1), m))
            v = E.add(E.mul(c2, E.mul(g, g)), E.mul(self.r(b2), v))
            mh = E.div(m, self.r(bc1))
            vh = E.div(v, self.r(bc2))
            if ams:
                vh = st_["max_exp_avg_sq"][i] = maxnan(st_["max_exp_avg_sq"][i], vh)
            d = E.div(mh, E.add(E.sqrt(E.add(vh, self.r(hp["eps_root"]))), eps))
            if wd != 0 and decoupled:
                d = E.add(d, E.mul(self.r(wd), th0))
            u = E.mul(-lr, d)
        st_["exp_avg"][i], st_["exp_avg_sq"][i] = m, v
        return th, u

    # ------------------------------------------------------------------ comparison
    def check(self, opt, param):
        """Assert the optimizer's param and state are the twin's, bit for bit."""
        expect = np.array(self.theta, dtype=np.float64).astype(self.S.dtype).reshape(param.shape)
        assert same_bits(param, expect).all(), (param, expect)
        live = opt.state_of(param)
        assert live["step"] == self.t
        for name, values in self.state.items():
            want = np.array(values, dtype=np.float64).astype(self.A.dtype).reshape(param.shape)
            assert same_bits(live[name], want).all(), (name, live[name], want)
        if self.master is not None:
            want = np.array(self.master, dtype=np.float64).astype(self.A.dtype).reshape(param.shape)
            assert same_bits(live["master"], want).all(), ("master", live["master"], want)
        if self.comp is not None:
            want = np.array(self.comp, dtype=np.float64).astype(self.S.dtype).reshape(param.shape)
            assert same_bits(live["compensation"], want).all(), ("comp", live["compensation"], want)


# ============================================================================ inputs
def special_values(fmt):
    f = pr.format(fmt)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, f.max, -f.max, f.tiny, -f.tiny, f.smallest_subnormal,
            -f.smallest_subnormal, 2 * f.smallest_subnormal, math.inf, -math.inf, math.nan,
            f.u, 1e-3, -2.5e-2]
    return [float(f.round(np.float64(v))) for v in vals]


def format_values(fmt, allow_nan=True):
    """Values of a format: specials, random finite ones, tiny and huge magnitudes."""
    f = pr.format(fmt)
    width = {"float16": 16, "float32": 32, "float64": 64}.get(f.name, 32)
    finite = st.floats(width=width, allow_nan=False, allow_infinity=False)
    scaled = st.builds(lambda m, e: m * 2.0 ** e, st.floats(-2, 2, width=32), st.integers(-30, 10))
    specials = special_values(fmt) if allow_nan else [v for v in special_values(fmt) if not math.isnan(v)]
    raw = st.one_of(st.sampled_from(specials), finite, scaled)
    return raw.map(lambda v: float(f.round(np.float64(v))))


def as_array(values, fmt):
    return np.array(values, dtype=np.float64).astype(pr.format(fmt).dtype)


LRS = [1e-3, 0.1, 1.0, 0.0, 3e-5, 2.0]
EPS = [1e-8, 1e-3, 0.0, 1e-45, 0.1, 1e-6]
DECAYS = [0.9, 0.999, 0.0, 0.5, 0.3, 0.99]
WDS = [0.0, 0.01, 0.5]


@st.composite
def configs(draw, cls):
    """(constructor kwargs) for an optimizer class, over its conventions and options."""
    conv = draw(st.sampled_from(optim.CONVENTIONS))
    kw = {"convention": conv, "lr": draw(st.sampled_from(LRS)), "maximize": draw(st.booleans())}
    if conv != "optax" and draw(st.booleans()):
        del kw["lr"]                                    # the convention's default
    wd = draw(st.sampled_from(WDS))
    if cls is optim.SGD:
        kw["momentum"] = draw(st.sampled_from([0.0, 0.9, 0.5]))
        kw["weight_decay"] = wd
        if conv == "torch":
            kw["dampening"] = draw(st.sampled_from([0.0, 0.1]))
        kw["nesterov"] = kw["momentum"] > 0 and kw.get("dampening", 0.0) == 0 and draw(st.booleans())
    elif cls is optim.Adagrad:
        kw.update(eps=draw(st.sampled_from(EPS)), weight_decay=wd,
                  initial_accumulator_value=draw(st.sampled_from([0.0, 0.1, 1e-9])))
        if conv == "torch":
            kw["lr_decay"] = draw(st.sampled_from([0.0, 0.01]))
    elif cls is optim.Adadelta:
        kw.update(eps=draw(st.sampled_from(EPS)), weight_decay=wd, rho=draw(st.sampled_from(DECAYS)))
    elif cls is optim.RMSprop:
        kw.update(eps=draw(st.sampled_from(EPS)), weight_decay=wd, alpha=draw(st.sampled_from(DECAYS)),
                  momentum=draw(st.sampled_from([0.0, 0.9])), centered=draw(st.booleans()))
    else:
        kw.update(eps=draw(st.sampled_from(EPS)), weight_decay=wd, amsgrad=draw(st.booleans()),
                  betas=(draw(st.sampled_from(DECAYS)), draw(st.sampled_from(DECAYS))))
        if conv == "optax":
            kw["eps_root"] = draw(st.sampled_from([0.0, 1e-8]))
        if cls is optim.Adam and conv != "keras":
            kw["decoupled_weight_decay"] = draw(st.booleans())
    return kw


def run_against_twin(cls, kw, S, A, rule, values, grads, seed=0):
    master = rule == "master"
    opt = cls(**kw, state_format=A, master_weights=master,
              update="nearest" if master else rule, seed=seed)
    param = as_array(values, S)
    twin = Twin(opt, param)
    for g in grads:
        opt.step(param, as_array(g, S))
        twin.step(as_array(g, S))
        twin.check(opt, param)
    return opt, param


# ============================================================================ bit-exactness
@pytest.mark.parametrize("S,A", POLICIES)
@given(data=st.data())
def test_kernels_match_the_emulated_twin(S, A, data):
    """Random optimizer, convention, options, hyperparameters (eps below the smallest subnormal
    included), update rule, and parameters/gradients with zeros, subnormals, huge values, inf
    and NaN, over a few steps."""
    cls = data.draw(st.sampled_from(OPTIMIZERS), label="optimizer")
    kw = data.draw(configs(cls), label="config")
    rule = data.draw(st.sampled_from(["nearest", "kahan", "stochastic", "master"]), label="rule")
    n = data.draw(st.integers(1, 19), label="n")
    steps = data.draw(st.integers(1, 3), label="steps")
    values = data.draw(st.lists(format_values(S), min_size=n, max_size=n), label="param")
    grads = [data.draw(st.lists(format_values(S), min_size=n, max_size=n), label=f"grad{k}")
             for k in range(steps)]
    run_against_twin(cls, kw, S, A, rule, values, grads, seed=data.draw(st.integers(0, 3)))


def kernel_configs():
    """One optimizer configuration per direction kernel of the module (all 58 are covered)."""
    found = {}
    for cls in OPTIMIZERS:
        for conv in optim.CONVENTIONS:
            for wd in (0.0, 0.01):
                for a in (False, True):
                    for b in (False, True):
                        kw = {"convention": conv, "lr": 0.1, "weight_decay": wd}
                        if cls is optim.SGD:
                            kw.update(momentum=0.9 if a else 0.0, nesterov=a and b)
                        elif cls is optim.RMSprop:
                            kw.update(momentum=0.9 if a else 0.0, centered=b)
                        elif cls in (optim.Adam, optim.AdamW):
                            kw.update(amsgrad=a)
                            if cls is optim.Adam and conv != "keras":
                                kw["decoupled_weight_decay"] = b
                        opt = cls(**kw)
                        found.setdefault(opt._kernel(), (cls, kw))
    return found


def test_every_kernel_has_a_configuration():
    assert set(kernel_configs()) == set(load("optim").KERNEL_NAMES)


@pytest.mark.parametrize("S,A", POLICIES)
def test_every_kernel_and_rule_matches_the_twin(S, A):
    """Deterministic sweep: each of the 58 direction kernels under each update rule, 11
    elements (the 8-lane float16 path and its scalar tail), 2 steps, special values inside."""
    rng = np.random.default_rng(7)
    specials = special_values(S)
    for name, (cls, kw) in sorted(kernel_configs().items()):
        for rule in ("nearest", "kahan", "stochastic", "master"):
            vals = [float(pr.format(S).round(v)) for v in rng.standard_normal(11)]
            grads = [[float(pr.format(S).round(v)) for v in rng.standard_normal(11) * 0.1]
                     for _ in range(2)]
            grads[1][int(rng.integers(11))] = specials[int(rng.integers(len(specials)))]
            run_against_twin(cls, kw, S, A, rule, vals, grads)


@pytest.mark.parametrize("S,A", [("float16", "float16"), ("bfloat16", "bfloat16"),
                                 ("float16", "float32"), ("float32", "float32")])
def test_many_steps_match_the_twin(S, A):
    """200 Adam steps (torch convention) and 200 momentum-SGD steps (keras) stay bit-identical."""
    rng = np.random.default_rng(3)
    for cls, kw in ((optim.Adam, {"lr": 1e-2, "eps": 1e-4}),
                    (optim.SGD, {"lr": 0.05, "momentum": 0.9, "convention": "keras"})):
        vals = list(rng.standard_normal(8))
        grads = [list(rng.standard_normal(8) * 10.0 ** rng.integers(-6, 1)) for _ in range(200)]
        grads = [[float(pr.format(S).round(v)) for v in g] for g in grads]
        run_against_twin(cls, kw, S, A, "nearest", [float(pr.format(S).round(v)) for v in vals], grads)


def test_all_float16_bit_patterns_survive_a_zero_step():
    """lr = 0: every float16 pattern (subnormals, inf, NaN) is loaded, stepped and stored back
    unchanged, through the scalar and the 8-lane paths and every update rule."""
    everything = pr.float16.all_bit_patterns()
    for rule in ("nearest", "kahan", "stochastic"):
        for A in ("float16", "float32"):
            param = everything.copy()
            opt = optim.SGD(lr=0.0, momentum=0.9, state_format=A, update=rule)
            opt.step(param, np.zeros_like(param))
            assert same_bits(param, everything).all()


# ============================================================================ threads and builds
@pytest.fixture
def parallel_always(monkeypatch):
    monkeypatch.setattr(optim, "_PARALLEL_MIN", 0)


@pytest.mark.parametrize("S,A", POLICIES)
def test_results_do_not_depend_on_the_thread_count(S, A, parallel_always):
    rng = np.random.default_rng(11)
    n = 5 * 1024 + 37                       # several blocks and a partial one
    p0 = as_array(rng.standard_normal(n), S)
    grads = [as_array(rng.standard_normal(n) * 0.1, S) for _ in range(2)]
    for cls, kw, rule in ((optim.Adam, {"amsgrad": True}, "nearest"),
                          (optim.RMSprop, {"centered": True, "momentum": 0.9}, "kahan"),
                          (optim.SGD, {"lr": 0.1, "momentum": 0.9}, "stochastic")):
        results = []
        for threads in (1, 2, 3):
            param = p0.copy()
            opt = cls(**kw, state_format=A, update=rule, num_threads=threads, seed=5)
            for g in grads:
                opt.step(param, g)
            results.append(param)
        assert same_bits(results[0], results[1]).all() and same_bits(results[0], results[2]).all()


@pytest.mark.skipif(not uses_v3, reason="this CPU does not run the x86-64-v3 build")
@pytest.mark.parametrize("S,A", POLICIES)
def test_the_v3_build_computes_the_same_bits(S, A, monkeypatch):
    rng = np.random.default_rng(13)
    n = 3 * 1024 + 5
    p0 = np.concatenate([as_array(rng.standard_normal(n), S), as_array(special_values(S), S)])
    g0 = np.concatenate([as_array(rng.standard_normal(n) * 1e-3, S),
                         as_array(special_values(S)[::-1], S)])
    for name, (cls, kw) in sorted(kernel_configs().items()):
        for rule in ("nearest", "kahan", "stochastic"):
            out = []
            for module in (load("optim"), load_baseline("optim")):
                monkeypatch.setattr(optim, "_kernels", lambda m=module: m)
                param = p0.copy()
                opt = cls(**kw, state_format=A, update=rule)
                opt.step(param, g0)
                opt.step(param, g0[::-1].copy())
                out.append(param)
            assert same_bits(out[0], out[1]).all(), (name, rule)


# ============================================================================ scalars
def exact_one_minus_pow(beta, t):
    return 1 - Fraction(beta) ** t


def ulps_off(value, exact, fmt="float64"):
    f = pr.format(fmt)
    return abs(Fraction(value) - exact) / Fraction(float(f.ulp(float(exact))))


def test_bias_correction_is_correctly_rounded_where_the_naive_formula_is_not():
    worst_naive = Fraction(0)
    for beta in (0.9, 0.999, 0.9999):
        for t in list(range(1, 60)) + [100, 1000, 12345]:
            exact = exact_one_minus_pow(beta, t)
            ours = optim.bias_correction(beta, t)
            assert ours == float(pr.float64.round(exact))            # correctly rounded
            assert ulps_off(ours, exact) <= Fraction(1, 2)
            worst_naive = max(worst_naive, ulps_off(1 - beta ** t, exact))
    assert worst_naive > 4                                           # cancellation
    # the number quoted in the docs: torch's sqrt(1 - beta2^t) at t = 10
    exact = exact_one_minus_pow(0.999, 10)
    with mpmath.workprec(400):
        exact_sqrt = mpmath.sqrt(mpmath.mpf(exact.numerator) / exact.denominator)
        torch_style = (1 - 0.999 ** 10) ** 0.5
        err = abs(mpmath.mpf(torch_style) - exact_sqrt) / mpmath.mpf(float(pr.float64.ulp(torch_style)))
    assert err > 5
    assert optim.bias_correction(0.999, 10, "float32") == float(pr.float32.round(exact))


def test_hyperparameters_round_into_the_arithmetic_with_a_warning():
    param = np.ones(4, np.float16)
    with pytest.warns(PrecisionWarning, match="eps=1e-08 rounds to 0 in float16"):
        optim.Adam().step(param, np.ones(4, np.float16))
    with pytest.warns(PrecisionWarning, match="beta2=0.999 rounds to 1 in bfloat16"):
        optim.Adam().step(np.ones(4, ml_dtypes.bfloat16), np.ones(4, ml_dtypes.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.Adam(state_format="float32").step(np.ones(4, np.float16), np.ones(4, np.float16))


def test_float16_adam_turns_a_zero_gradient_into_nan():
    """eps = 1e-8 is 0 in float16: m = v = 0 gives 0/0.  A representable eps or float32 state
    keeps the step finite (and zero)."""
    grad = np.zeros(4, np.float16)
    param = np.ones(4, np.float16)
    optim.Adam().step(param, grad)
    assert np.isnan(param.astype(np.float32)).all()
    for opt in (optim.Adam(eps=1e-4), optim.Adam(state_format="float32"),
                optim.Adam(convention="keras")):          # keras's 1e-7 survives in float16
        param = np.ones(4, np.float16)
        opt.step(param, grad)
        assert (param == 1).all()


def test_nan_and_inf_gradients_propagate():
    for dt in (np.float16, np.float32, np.float64):
        param = np.ones(3, dt)
        optim.Adam().step(param, np.array([np.nan, np.inf, 1], dt))
        assert np.isnan(param[0]) and np.isnan(param[1]) and np.isfinite(param[2])
        param = np.ones(2, dt)
        optim.SGD(lr=0.1).step(param, np.array([np.inf, -np.inf], dt))
        assert param[0] == -np.inf and param[1] == np.inf


# ============================================================================ remedies
def test_stochastic_rounding_is_unbiased_and_reproducible(parallel_always):
    """1 + 2^-12 lies a quarter of the way from 1 to the next float16 (1 + 2^-10): stochastic
    rounding picks the upper one a quarter of the time; nearest never moves."""
    n = 1 << 16
    grad = np.full(n, -2.0 ** -12, np.float16)
    near = np.ones(n, np.float16)
    optim.SGD(lr=1.0, state_format="float32").step(near, grad)
    assert (near == 1).all()
    runs = []
    for seed, threads in ((1, 1), (1, 2), (2, 1)):
        p = np.ones(n, np.float16)
        optim.SGD(lr=1.0, state_format="float32", update="stochastic", seed=seed,
                  num_threads=threads).step(p, grad)
        assert set(np.unique(p.astype(np.float64))) <= {1.0, 1 + 2.0 ** -10}
        runs.append(p)
    up = np.mean(runs[0] != 1)
    assert abs(up - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    assert same_bits(runs[0], runs[1]).all()            # the thread count changes nothing
    assert not same_bits(runs[0], runs[2]).all()        # the seed does


def test_kahan_recovers_updates_that_round_away():
    """10000 steps of +2^-13 on 1.0 in pure float16: each is below half an ulp (2^-11), so
    round-to-nearest never moves; the compensated update ends within an ulp of the exact sum."""
    steps = 10000
    grad = np.full(4, -2.0 ** -13, np.float16)
    exact = 1 + steps * 2.0 ** -13
    results = {}
    for rule in ("nearest", "kahan"):
        p = np.ones(4, np.float16)
        opt = optim.SGD(lr=1.0, update=rule)
        for _ in range(steps):
            opt.step(p, grad)
        results[rule] = float(p[0])
    assert results["nearest"] == 1.0
    assert abs(results["kahan"] - exact) <= float(pr.float16.ulp(exact))


def test_master_weights_accumulate_what_the_parameter_cannot_hold():
    p = np.ones(4, ml_dtypes.bfloat16)
    opt = optim.SGD(lr=1.0, state_format="float32", master_weights=True)
    g = np.full(4, -2.0 ** -10, ml_dtypes.bfloat16)
    for _ in range(64):
        opt.step(p, g)
    master = opt.state_of(p)["master"]
    assert master.dtype == np.float32 and (master == 1 + 64 * 2.0 ** -10).all()
    assert (p.astype(np.float32) == np.float32(pr.bfloat16.round(1 + 64 * 2.0 ** -10))).all()


# ============================================================================ API
def test_convention_defaults():
    assert optim.Adam().eps == 1e-8 and optim.Adam(convention="keras").eps == 1e-7
    assert optim.AdamW().weight_decay == 1e-2
    assert optim.AdamW(convention="keras").weight_decay == 4e-3
    assert optim.AdamW(convention="optax", lr=1e-3).weight_decay == 1e-4
    assert optim.RMSprop().alpha == 0.99 and optim.RMSprop(convention="keras").alpha == 0.9
    assert optim.Adagrad(convention="keras").initial_accumulator_value == 0.1
    assert optim.Adadelta().lr == 1.0 and optim.Adadelta(convention="keras").rho == 0.95
    assert optim.SGD().lr == 1e-3 and optim.SGD(convention="keras").lr == 0.01
    with pytest.raises(TypeError, match="lr"):
        optim.Adam(convention="optax")
    assert optim.Adam(lr=0.5).lr == 0.5


def test_state_is_per_parameter_and_survives_a_state_dict_round_trip():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), ()]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(6)]
    opt = optim.Adam(lr=0.01, amsgrad=True)
    for k in range(3):
        for p, g in zip(params, grads[k]):
            opt.step(p, g)
    saved = opt.state_dict()
    resumed_params = [p.copy() for p in params]
    resumed = optim.Adam()
    resumed.load_state_dict(saved)
    assert resumed.lr == 0.01 and resumed.amsgrad
    for k in range(3, 6):
        for p, q, g in zip(params, resumed_params, grads[k]):
            opt.step(p, g)
            resumed.step(q, g)
    for p, q in zip(params, resumed_params):
        assert same_bits(p, q).all()
    assert resumed.state_of(resumed_params[0])["step"] == 6


def test_stochastic_rounding_resumes_identically_from_a_state_dict():
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(100).astype(ml_dtypes.bfloat16)
    grads = [rng.standard_normal(100).astype(ml_dtypes.bfloat16) for _ in range(4)]
    a, b = p0.copy(), p0.copy()
    opt = optim.AdamW(lr=1e-2, state_format="float32", update="stochastic", seed=9)
    for g in grads[:2]:
        opt.step(a, g)
        opt.step(b, g)        # the same values, a second parameter: its own random stream
    assert not same_bits(a, b).all()
    resumed = optim.AdamW()
    resumed.load_state_dict(opt.state_dict())
    a2, b2 = a.copy(), b.copy()
    for g in grads[2:]:
        opt.step(a, g)
        opt.step(b, g)
        resumed.step(a2, g)
        resumed.step(b2, g)
    assert same_bits(a, a2).all() and same_bits(b, b2).all()


def test_empty_and_zero_dimensional_parameters():
    for shape in ((0,), (3, 0), ()):
        p = np.ones(shape, np.float32)
        opt = optim.SGD(lr=0.5, momentum=0.9)
        opt.step(p, np.ones(shape, np.float32))
        assert opt.state_of(p)["step"] == 1 and opt.state_of(p)["momentum_buffer"].shape == shape
        assert (p == 0.5).all()


def test_keyed_parameters_and_reset():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    a = np.ones(3, np.float64)
    opt.step(a, np.ones(3), key="layer.w")
    opt.step(a.copy(), np.ones(3), key="layer.w")        # another object, same key: same state
    assert opt.state_of(key="layer.w")["step"] == 2
    with pytest.raises(KeyError):
        opt.state_of(a)                                   # keyed, not identity-keyed
    opt.reset()
    with pytest.raises(KeyError):
        opt.state_of(key="layer.w")


def test_learning_rate_can_change_between_steps():
    opt = optim.SGD(lr=0.5)
    p = np.ones(2)
    opt.step(p, np.ones(2))
    opt.lr = 0.25
    opt.step(p, np.ones(2))
    assert (p == 0.25).all()
    with pytest.raises(ValueError):
        opt.lr = -1.0
    assert opt.lr == 0.25
