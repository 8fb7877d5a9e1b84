"""precision.optim: every step kernel is bit-identical to its emulated twin.

The twin (``precision.exact.emulate(A).optimizer(opt)``, :mod:`precision.exact.optim`) is the
documented algorithm of each optimizer, written a second time in the frameworks' own operation
order (``theta - lr * g`` where torch adds ``-lr * g``, ``lerp`` as torch evaluates it, ...),
with every operation run through ``precision.exact.emulate(A)`` and every scalar derived there
again from the hyperparameters (exactly, with Fractions and mpmath).  Each optimizer class is
paired with it by name in ``precision.exact.registry``.  Kernels and twin must agree to the bit
(any NaN equal to any NaN) in the parameter and in every state array, after every step, in every
policy and update rule.
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
from precision.exact import registry
from precision.formats import PrecisionWarning
from tests.helpers import same_bits

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")

POLICIES = [("float16", "float16"), ("float16", "float32"), ("float16", "float64"),
            ("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("bfloat16", "float64"),
            ("float32", "float32"), ("float32", "float64"), ("float64", "float64")]
# every optimizer class with a registered twin (registry.pairings("optimizer"))
TWIN_OF = {p.fast(): p for p in registry.pairings("optimizer")}
OPTIMIZERS = list(TWIN_OF)


def test_every_optimizer_class_has_a_registered_twin():
    classes = {getattr(optim, name) for name in optim.__all__}
    classes = {c for c in classes if isinstance(c, type) and issubclass(c, optim.Optimizer)
               and c is not optim.Optimizer}
    assert classes == set(OPTIMIZERS)


# ============================================================================ the comparison
def assert_matches_twin(opt, param, twin, twin_param):
    """Assert the optimizer's param and state are the twin's, bit for bit."""
    assert same_bits(param, twin_param).all(), (param, twin_param)
    live = opt.state_of(param)
    want = twin.state_of(twin_param)
    assert live["step"] == want["step"]
    for name, values in want.items():
        if name != "step":
            assert same_bits(live[name], values).all(), (name, live[name], values)


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
        if conv == "optax":     # optax's own options (optax.rmsprop)
            kw.update(initial_scale=draw(st.sampled_from([0.0, 1.0, 0.1, 1e-30])),
                      eps_in_sqrt=draw(st.booleans()), bias_correction=draw(st.booleans()),
                      nesterov=kw["momentum"] > 0 and draw(st.booleans()))
    else:
        kw.update(eps=draw(st.sampled_from(EPS)), weight_decay=wd, amsgrad=draw(st.booleans()),
                  betas=(draw(st.sampled_from(DECAYS)), draw(st.sampled_from(DECAYS))))
        if conv == "optax":
            kw["eps_root"] = draw(st.sampled_from([0.0, 1e-8]))
            kw["nesterov"] = not kw["amsgrad"] and draw(st.booleans())       # NAdam
        if cls is optim.Adam and conv != "keras":
            kw["decoupled_weight_decay"] = draw(st.booleans())
    return kw


def run_against_twin(cls, kw, S, A, rule, values, grads, seed=0):
    master = rule == "master"
    opt = cls(**kw, state_format=A, master_weights=master,
              update="nearest" if master else rule, seed=seed)
    param = as_array(values, S)
    twin = TWIN_OF[cls].twin(A)(opt)
    twin_param = param.copy()
    for g in grads:
        opt.step(param, as_array(g, S))
        twin.step(twin_param, as_array(g, S))
        assert_matches_twin(opt, param, twin, twin_param)
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


def optax_option_configs():
    """The optax options that select no kernel of their own (runtime flags and scalars)."""
    out = []
    for centered in (False, True):
        for momentum in (0.0, 0.9):
            for eps_in_sqrt in (False, True):
                for debias in (False, True):
                    out.append((optim.RMSprop, dict(
                        convention="optax", lr=0.1, alpha=0.9, centered=centered,
                        momentum=momentum, nesterov=momentum > 0 and debias,
                        eps_in_sqrt=eps_in_sqrt, bias_correction=debias,
                        initial_scale=1.0 if debias else 0.0, eps=1e-3)))
    for cls in (optim.Adam, optim.AdamW):
        for wd in (0.0, 0.01):
            out.append((cls, dict(convention="optax", lr=0.1, nesterov=True, weight_decay=wd,
                                  betas=(0.8, 0.99), eps=1e-3)))
    return out


@pytest.mark.parametrize("S,A", POLICIES)
def test_optax_options_match_the_twin(S, A):
    """optax's RMSprop nesterov, initial_scale, eps_in_sqrt, bias_correction and Adam's
    nesterov (NAdam): every combination, every update rule, 11 elements, 3 steps."""
    rng = np.random.default_rng(11)
    specials = special_values(S)
    for cls, kw in optax_option_configs():
        for rule in ("nearest", "kahan", "stochastic", "master"):
            vals = [float(pr.format(S).round(v)) for v in rng.standard_normal(11)]
            grads = [[float(pr.format(S).round(v)) for v in rng.standard_normal(11) * 0.1]
                     for _ in range(3)]
            grads[2][int(rng.integers(11))] = specials[int(rng.integers(len(specials)))]
            run_against_twin(cls, kw, S, A, rule, vals, grads)


MU_DTYPES = [("float32", "float16"), ("float32", "bfloat16"), ("float64", "float32"),
             ("float64", "float16"), ("float64", "bfloat16"), ("float32", "float32")]


@pytest.mark.parametrize("A,M", MU_DTYPES)
@given(data=st.data())
def test_mu_dtype_matches_the_twin(A, M, data):
    """optax's mu_dtype: beta1 * m in M, the sum in A, m stored cast to M; every storage
    format under A, any update rule, Adam/AdamW/NAdam/AMSGrad, special values."""
    S = data.draw(st.sampled_from([s for s, a in POLICIES if a == A]), label="S")
    cls = data.draw(st.sampled_from([optim.Adam, optim.AdamW]), label="cls")
    amsgrad = data.draw(st.booleans(), label="amsgrad")
    kw = dict(convention="optax", lr=data.draw(st.sampled_from(LRS)), mu_dtype=M,
              amsgrad=amsgrad, nesterov=not amsgrad and data.draw(st.booleans()),
              betas=(data.draw(st.sampled_from(DECAYS)), data.draw(st.sampled_from(DECAYS))),
              eps=data.draw(st.sampled_from(EPS)), weight_decay=data.draw(st.sampled_from(WDS)))
    rule = data.draw(st.sampled_from(["nearest", "kahan", "stochastic", "master"]), label="rule")
    n = data.draw(st.integers(1, 19), label="n")
    values = data.draw(st.lists(format_values(S), min_size=n, max_size=n), label="param")
    grads = [data.draw(st.lists(format_values(S), min_size=n, max_size=n), label=f"grad{k}")
             for k in range(data.draw(st.integers(1, 3)))]
    opt, _ = run_against_twin(cls, kw, S, A, rule, values, grads)
    m = opt.state_of(next(iter(opt._slots.values())).param)["exp_avg"]
    stored = m.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        assert same_bits(pr.format(M).round(stored).astype(np.float64), stored).all()


def test_mu_dtype_rounds_the_stored_moment_not_the_step():
    """With mu_dtype the step uses the first moment in A, and only the stored m is cast (as
    optax's scale_by_adam does): the first step equals the step without mu_dtype."""
    g = np.array([0.1234567, -3.3e-3, 7.77], dtype=np.float32)
    p1, p2 = np.ones(3, np.float32), np.ones(3, np.float32)
    a = optim.Adam(lr=0.1, convention="optax", mu_dtype="bfloat16")
    b = optim.Adam(lr=0.1, convention="optax")
    a.step(p1, g)
    b.step(p2, g)
    assert same_bits(p1, p2).all()
    mb = b.state_of(p2)["exp_avg"]
    assert not same_bits(a.state_of(p1)["exp_avg"], mb).all()
    assert same_bits(a.state_of(p1)["exp_avg"],
                     mb.astype(ml_dtypes.bfloat16).astype(np.float32)).all()


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
    monkeypatch.setattr(optim.base, "_PARALLEL_MIN", 0)


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
                monkeypatch.setattr(optim.base, "_kernels", lambda m=module: m)
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


# ============================================================================ step_all
@pytest.mark.parametrize("convention", optim.CONVENTIONS)
@pytest.mark.parametrize("S,A", [("float32", "float32"), ("bfloat16", "float32"),
                                 ("float16", "float16")])
def test_step_all_matches_the_twin_and_shares_the_count(convention, S, A):
    """step_all is one Keras apply / one optax update: in keras and optax every parameter of a
    call takes t = iterations + 1 (a late parameter starts there, a skipped one jumps); torch
    counts per parameter.  Kernels and twin agree to the bit."""
    rng = np.random.default_rng(5)
    kw = dict(lr=0.01, convention=convention)
    for cls, extra in ((optim.Adam, {}), (optim.RMSprop, {"momentum": 0.9}),
                       (optim.Adam, {"nesterov": True} if convention == "optax" else {})):
        opt = cls(**kw, **extra, state_format=A)
        twin = TWIN_OF[cls].twin(A)(opt)
        ps = [as_array(rng.standard_normal(5), S) for _ in range(3)]
        tps = [p.copy() for p in ps]
        for call in range(6):
            gs = [as_array(rng.standard_normal(5), S) for _ in range(3)]
            active = [0, 1] + ([2] if call >= 2 else [])        # parameter 2 joins late
            if call == 4:
                active = [0, 2]                                  # parameter 1 has no grad
            items = [(ps[i], gs[i] if i in active else None) for i in range(3) if i < 2 or call >= 2]
            opt.step_all(items)
            twin.step_all([(tps[i], gs[i] if i in active else None)
                           for i in range(3) if i < 2 or call >= 2])
            for i in set(active) | {0, 1}:
                assert_matches_twin(opt, ps[i], twin, tps[i])
        assert opt.iterations == twin.iterations == 6
        steps = [opt.state_of(p)["step"] for p in ps]
        if convention == "torch":
            assert steps == [6, 5, 4]
        else:
            assert steps == [6, 6, 6]       # 2 joined at call 3 (t = 3), 1 skipped call 5


def test_step_all_equals_steps_with_keras_local_step():
    """In the keras convention, step_all over [p1, p2] is p1 and p2 each stepped at
    t = iterations + 1: a parameter that joins at the 3rd call starts with Keras's t = 3
    bias correction, which step() (t = 1) does not give."""
    g = np.array([0.3, -0.2], np.float32)
    late, alone = np.ones(2, np.float32), np.ones(2, np.float32)
    first = np.ones(2, np.float32)
    opt = optim.Adam(convention="keras")
    for _ in range(2):
        opt.step_all([(first, g)])
    opt.step_all([(first, g), (late, g)])
    optim.Adam(convention="keras").step(alone, g)
    assert opt.state_of(late)["step"] == 3
    assert not same_bits(late, alone).all()
    # the twin, with a first parameter it steps twice and the late one joining at the 3rd call
    twin = pr.exact.emulate("float32").optimizer(optim.Adam(convention="keras"))
    a, b = np.ones(2, np.float32), np.ones(2, np.float32)
    twin.step_all([(a, g), (b, None)])
    twin.step_all([(a, g), (b, None)])
    twin.step_all([(a, g), (b, g)])
    assert same_bits(b, late).all() and same_bits(a, first).all()


def test_iterations_persist_through_state_dict_and_pickle():
    import pickle
    p = np.ones(3, np.float32)
    opt = optim.Adam(lr=0.1, convention="optax")
    for _ in range(3):
        opt.step_all([(p, np.full(3, 0.5, np.float32), "w")])
    other = optim.Adam(lr=0.1, convention="optax")
    other.load_state_dict(opt.state_dict())
    q = p.copy()
    clone_p, clone = pickle.loads(pickle.dumps((p.copy(), opt)))
    assert other.iterations == clone.iterations == 3
    for o, x in ((opt, p), (other, q), (clone, clone_p)):
        o.step_all([(x, np.full(3, -0.25, np.float32), "w")])
        assert o.state_of(key="w")["step"] == 4
    assert same_bits(p, q).all() and same_bits(p, clone_p).all()
    opt.reset()
    assert opt.iterations == 0
