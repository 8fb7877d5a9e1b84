"""precision.optim rejects bad input with a clear error and leaves the parameter (and the
optimizer's state) exactly as they were."""
import ml_dtypes
import numpy as np
import pytest

from precision import optim
from tests.helpers import same_bits

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")


def fresh(dtype=np.float32, n=6):
    return np.linspace(-1, 1, n).astype(dtype)


def stepped_optimizer(param, cls=optim.Adam, **kw):
    """An optimizer that has already taken a step on ``param`` (so state exists)."""
    opt = cls(**kw)
    opt.step(param, np.full_like(param, 0.5))
    return opt


def snapshot(opt, param):
    try:
        live = opt.state_of(param)
    except KeyError:
        live = {}
    return param.copy(), {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in live.items()}


def assert_untouched(opt, param, before):
    p0, s0 = before
    assert same_bits(param, p0).all()
    try:
        live = opt.state_of(param)
    except KeyError:
        live = {}
    assert set(live) == set(s0)
    for k, v in s0.items():
        if isinstance(v, np.ndarray):
            assert same_bits(live[k], v).all(), k
        else:
            assert live[k] == v, k


def check_rejected(opt, param, grad, exc, match, **kw):
    before = snapshot(opt, param)
    with pytest.raises(exc, match=match):
        opt.step(param, grad, **kw)
    assert_untouched(opt, param, before)


# ------------------------------------------------------------------ the arrays
@pytest.mark.parametrize("fresh_state", [True, False])
def test_shape_mismatch(fresh_state):
    p = fresh()
    opt = optim.Adam() if fresh_state else stepped_optimizer(p)
    check_rejected(opt, p, np.ones(5, np.float32), ValueError, "shape")
    check_rejected(opt, p, np.ones((6, 1), np.float32), ValueError, "shape")


@pytest.mark.parametrize("fresh_state", [True, False])
def test_dtype_mismatch(fresh_state):
    p = fresh()
    opt = optim.SGD(lr=0.1) if fresh_state else stepped_optimizer(p, optim.SGD, lr=0.1)
    for dt in (np.float64, np.float16, ml_dtypes.bfloat16):
        check_rejected(opt, p, np.ones(6, dt), TypeError, "must match")


def test_integer_and_other_arrays():
    opt = optim.Adam()
    p = np.arange(6)
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        opt.step(p, np.ones(6, np.int64))
    assert (p == np.arange(6)).all()
    p = fresh()
    check_rejected(opt, p, np.ones(6, np.int32), TypeError, "must match")
    check_rejected(opt, p, [1.0] * 6, TypeError, "numpy array")
    with pytest.raises(TypeError, match="numpy array"):
        opt.step([1.0, 2.0], np.ones(2, np.float32))
    c = np.ones(3, np.complex64)
    with pytest.raises(TypeError):
        opt.step(c, c.copy())


@pytest.mark.parametrize("fresh_state", [True, False])
def test_grad_aliasing_param(fresh_state):
    p = fresh(n=8)
    opt = optim.Adam() if fresh_state else stepped_optimizer(p)
    check_rejected(opt, p, p, ValueError, "shares memory with param")
    overlapping = np.arange(16, dtype=np.float32)       # grad overlaps half of param
    check_rejected(optim.SGD(lr=0.1), overlapping[:8], overlapping[4:12], ValueError,
                   "shares memory with param")


@pytest.mark.parametrize("name,opt_factory", [
    ("exp_avg", lambda: optim.Adam()),
    ("max_exp_avg_sq", lambda: optim.Adam(amsgrad=True)),
    ("momentum_buffer", lambda: optim.SGD(lr=0.1, momentum=0.9)),
    ("master", lambda: optim.Adam(state_format="float64", master_weights=True)),
    ("compensation", lambda: optim.SGD(lr=0.1, update="kahan")),
])
def test_grad_aliasing_the_state(name, opt_factory):
    p = fresh()
    opt = opt_factory()
    opt.step(p, np.full_like(p, 0.5))
    state_array = opt.state_of(p)[name]
    # a grad of the right dtype and shape over the state's memory (the master copy is wider)
    alias = state_array.reshape(-1).view(p.dtype)[:p.size].reshape(p.shape)
    check_rejected(opt, p, alias, ValueError, f"optimizer state '{name}'")


def test_read_only_and_non_contiguous_param():
    opt = optim.Adam()
    p = fresh()
    p.flags.writeable = False
    check_rejected(opt, p, np.ones(6, np.float32), ValueError, "read-only")
    base = np.linspace(0, 1, 12).astype(np.float32)
    strided = base[::2]
    before = base.copy()
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step(strided, np.ones(6, np.float32))
    assert same_bits(base, before).all()
    fortran = np.asfortranarray(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step(fortran, np.ones((3, 4), np.float32))


def test_non_contiguous_grad_is_fine():
    p, q = fresh(n=4), fresh(n=4)
    g = np.arange(8, dtype=np.float32)[::2]
    optim.Adam().step(p, g)
    optim.Adam().step(q, g.copy())
    assert same_bits(p, q).all()


def test_shape_changed_since_the_state_was_created():
    p = fresh(n=6)
    opt = stepped_optimizer(p)
    p.shape = (2, 3)                                    # same object, new shape
    check_rejected(opt, p, np.ones((2, 3), np.float32), ValueError, "shape changed")
    opt2 = optim.SGD(lr=0.1, momentum=0.9)
    opt2.step(np.ones(3), np.ones(3), key="w")
    q = np.ones(4)
    with pytest.raises(ValueError, match="shape changed"):
        opt2.step(q, np.ones(4), key="w")
    assert (q == 1).all()


def test_state_format_narrower_than_the_parameter():
    p = fresh(np.float64)
    check_rejected(optim.Adam(state_format="float32"), p, np.ones(6), ValueError, "state_format")
    b = fresh(ml_dtypes.bfloat16)
    check_rejected(optim.Adam(state_format="float16"), b, np.ones(6, ml_dtypes.bfloat16),
                   ValueError, "state_format")


def test_bad_keys():
    p = fresh()
    opt = optim.Adam()
    check_rejected(opt, p, np.ones(6, np.float32), TypeError, "hashable", key=["list"])
    check_rejected(opt, p, np.ones(6, np.float32), TypeError, "integer", key=3)


# ------------------------------------------------------------------ hyperparameters
@pytest.mark.parametrize("make,match", [
    (lambda: optim.Adam(lr=-1e-3), "lr must be >= 0"),
    (lambda: optim.Adam(eps=-1e-8), "eps must be >= 0"),
    (lambda: optim.Adam(betas=(1.0, 0.999)), r"beta1 must be in \[0, 1\)"),
    (lambda: optim.Adam(betas=(0.9, -0.1)), r"beta2 must be in \[0, 1\)"),
    (lambda: optim.Adam(betas=(0.9, float("nan"))), "finite"),
    (lambda: optim.Adam(weight_decay=-0.1), "weight_decay must be >= 0"),
    (lambda: optim.AdamW(lr=float("inf")), "finite"),
    (lambda: optim.SGD(lr=0.1, momentum=-0.5), "momentum must be >= 0"),
    (lambda: optim.SGD(lr=0.1, nesterov=True), "Nesterov"),
    (lambda: optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda: optim.SGD(lr=0.1, dampening=0.5, convention="keras"), "torch option"),
    (lambda: optim.Adagrad(lr_decay=-1.0), "lr_decay must be >= 0"),
    (lambda: optim.Adagrad(lr_decay=0.1, convention="keras"), "torch option"),
    (lambda: optim.Adagrad(initial_accumulator_value=-1.0), ">= 0"),
    (lambda: optim.Adadelta(rho=1.5), r"rho must be in \[0, 1\]"),
    (lambda: optim.RMSprop(alpha=-0.1), "alpha must be >= 0"),
    (lambda: optim.Adam(eps_root=1e-8), "optax option"),
    (lambda: optim.Adam(convention="pytorch"), "convention must be one of"),
    (lambda: optim.Adam(update="round"), "update must be one of"),
    (lambda: optim.Adam(update="kahan", master_weights=True), "alternative to master weights"),
    (lambda: optim.Adam(num_threads=0), "num_threads"),
    (lambda: optim.Adam(num_threads=65536), "num_threads"),   # would crash OpenMP
    (lambda: optim.Adam(num_threads=2**31), "num_threads"),   # would overflow a C int
    (lambda: optim.Adam(lr=10**400), "lr"),                   # float() would raise OverflowError
    (lambda: optim.Adam(seed=-1), "seed"),
    (lambda: optim.Adam(state_format="float8"), "unknown format"),
    # optax's options exist in the optax convention only, and need what they act on
    (lambda: optim.RMSprop(initial_scale=1.0), "optax option"),
    (lambda: optim.RMSprop(bias_correction=True, convention="keras"), "optax option"),
    (lambda: optim.RMSprop(momentum=0.9, nesterov=True), "optax option"),
    (lambda: optim.RMSprop(eps_in_sqrt=True), "eps outside"),
    (lambda: optim.RMSprop(eps_in_sqrt=False, convention="keras"), "eps inside"),
    (lambda: optim.RMSprop(lr=0.1, nesterov=True, convention="optax"), "momentum > 0"),
    (lambda: optim.RMSprop(lr=0.1, initial_scale=-1.0, convention="optax"), ">= 0"),
    (lambda: optim.RMSprop(lr=0.1, initial_scale=float("nan"), convention="optax"), "finite"),
    (lambda: optim.RMSprop(lr=0.1, alpha=1.0, bias_correction=True, convention="optax"),
     "alpha < 1"),
    (lambda: optim.Adam(nesterov=True), "optax option"),
    (lambda: optim.Adam(mu_dtype="bfloat16", convention="keras"), "optax option"),
    (lambda: optim.Adam(lr=0.1, nesterov=True, amsgrad=True, convention="optax"), "amsgrad"),
    (lambda: optim.Adam(lr=0.1, mu_dtype="float8", convention="optax"), "mu_dtype"),
    (lambda: optim.Adam(lr=0.1, mu_dtype=3, convention="optax"), "mu_dtype"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,exc", [
    (lambda: optim.Adam(lr="0.1"), TypeError),
    (lambda: optim.Adam(betas=0.9), TypeError),
    (lambda: optim.Adam(amsgrad=1), TypeError),
    (lambda: optim.SGD(lr=0.1, nesterov="yes"), TypeError),
    (lambda: optim.Adam(convention="optax"), TypeError),          # optax has no default lr
])
def test_bad_hyperparameter_types(make, exc):
    with pytest.raises(exc):
        make()


def test_setting_a_bad_hyperparameter_keeps_the_old_one():
    opt = optim.Adam(lr=0.01)
    for name, value in (("lr", -1.0), ("betas", (0.9, 1.0)), ("eps", float("nan"))):
        old = getattr(opt, name)
        with pytest.raises(ValueError):
            setattr(opt, name, value)
        assert getattr(opt, name) == old


def test_settings_are_fixed_after_construction():
    opt = optim.Adam()
    for name, value in (("convention", "keras"), ("state_format", "float64"),
                        ("master_weights", True), ("update", "kahan"), ("seed", 3)):
        with pytest.raises(AttributeError, match="fixed"):
            setattr(opt, name, value)
    with pytest.raises(ValueError, match="num_threads"):
        opt.num_threads = 0
    opt.num_threads = 1
    assert opt.convention == "torch" and opt.update == "nearest" and opt.num_threads == 1


# ------------------------------------------------------------------ state dicts
def test_bad_state_dicts_change_nothing():
    p = fresh()
    opt = stepped_optimizer(p)
    good = opt.state_dict()
    for bad, exc in (
        ({**good, "optimizer": "SGD"}, ValueError),
        ({k: v for k, v in good.items() if k != "state"}, ValueError),
        ({**good, "convention": "jax"}, ValueError),
        ({**good, "state": {0: {**good["state"][0], "exp_avg": np.zeros(5, np.float32)}}}, ValueError),
        ({**good, "state": {0: {**good["state"][0], "step": -1}}}, ValueError),
        ("not a dict", TypeError),
    ):
        before = snapshot(opt, p)
        with pytest.raises(exc):
            opt.load_state_dict(bad)
        assert_untouched(opt, p, before)


def test_loaded_state_for_another_shape_is_rejected_at_the_step():
    p = fresh(n=6)
    saved = stepped_optimizer(p).state_dict()
    opt = optim.Adam()
    opt.load_state_dict(saved)
    q = fresh(n=7)
    with pytest.raises(ValueError, match="shape"):
        opt.step(q, np.ones(7, np.float32))
    assert same_bits(q, fresh(n=7)).all()
    r = fresh(np.float64, n=6)
    with pytest.raises(TypeError, match="float32"):
        opt.step(r, np.ones(6))


# ------------------------------------------------------------------ special values never crash
@pytest.mark.parametrize("dt", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_nan_and_inf_never_crash(dt):
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0], dtype=np.float64).astype(dt)
    for opt in (optim.Adam(amsgrad=True), optim.RMSprop(centered=True, momentum=0.9),
                optim.Adagrad(convention="optax", lr=0.1), optim.Adadelta(convention="keras"),
                optim.SGD(lr=0.1, momentum=0.9, nesterov=True), optim.AdamW(update="kahan")):
        p = vals.copy()
        for _ in range(3):
            opt.step(p, vals[::-1].copy())
        assert p.dtype == vals.dtype


# ------------------------------------------------------------------ state arrays as param
@pytest.mark.parametrize("name,opt_factory", [
    ("exp_avg", lambda: optim.Adam()),
    ("exp_avg_sq", lambda: optim.AdamW()),
    ("max_exp_avg_sq", lambda: optim.Adam(amsgrad=True)),
    ("momentum_buffer", lambda: optim.SGD(lr=0.1, momentum=0.9)),
    ("sum", lambda: optim.Adagrad()),
    ("master", lambda: optim.Adam(state_format="float64", master_weights=True)),
    ("compensation", lambda: optim.SGD(lr=0.1, update="kahan")),
])
@pytest.mark.parametrize("keyed", [False, True])
def test_another_parameters_state_is_refused_as_param(name, opt_factory, keyed):
    """Another parameter's state array (or a view of its memory) passed as ``param`` would be
    overwritten by the step: refused before anything is written, and no state is created."""
    p = fresh()
    opt = opt_factory()
    opt.step(p, np.full_like(p, 0.5))
    before = snapshot(opt, p)
    state_array = opt.state_of(p)[name]
    alias = state_array.reshape(-1).view(p.dtype)[:p.size].reshape(p.shape)   # master is wider
    for victim in (alias, alias[1:4]):
        kw = {"key": "other"} if keyed else {}
        with pytest.raises(ValueError, match=f"optimizer state '{name}' of parameter 0"):
            opt.step(victim, np.ones_like(victim), **kw)
        assert_untouched(opt, p, before)
        with pytest.raises(KeyError):
            opt.state_of(victim) if not keyed else opt.state_of(key="other")


def test_state_of_a_keyed_parameter_is_refused_too():
    opt = optim.RMSprop(momentum=0.9, centered=True)
    w = fresh()
    opt.step(w, np.full_like(w, 0.5), key="fc.weight")
    before = {k: v.copy() for k, v in opt.state_of(key="fc.weight").items() if k != "step"}
    for name in ("square_avg", "grad_avg", "momentum_buffer"):
        buffer = opt.state_of(key="fc.weight")[name]
        with pytest.raises(ValueError, match=f"'{name}' of parameter 'fc.weight'"):
            opt.step(buffer, np.ones_like(buffer))
    for k, v in before.items():
        assert same_bits(opt.state_of(key="fc.weight")[k], v).all()


def test_parameters_and_copies_of_the_state_are_still_fine():
    """The check is about memory, not values: a copy of a state array is an ordinary array."""
    p, q = fresh(), fresh()
    opt = stepped_optimizer(p)
    copy = opt.state_of(p)["exp_avg"].copy()
    opt.step(copy, np.ones_like(copy))
    opt.step(q, np.ones_like(q))
    assert opt.state_of(copy)["step"] == 1 and opt.state_of(q)["step"] == 1


# ------------------------------------------------------------------ optax options at the step
@pytest.mark.parametrize("S,M", [("float32", "float64"), ("float16", "bfloat16"),
                                 ("bfloat16", "float16"), ("float16", "float32")])
def test_mu_dtype_wider_than_the_arithmetic_is_refused_at_the_step(S, M):
    p = fresh(ml_dtypes.bfloat16 if S == "bfloat16" else np.dtype(S))
    opt = optim.Adam(lr=0.1, mu_dtype=M, convention="optax")
    check_rejected(opt, p, np.ones_like(p), ValueError, "not narrower")


def test_scalars_of_the_optax_options_warn_when_they_round():
    from precision.formats import PrecisionWarning
    p = fresh(np.float16)
    opt = optim.RMSprop(lr=0.1, initial_scale=1e-9, convention="optax")
    with pytest.warns(PrecisionWarning, match="initial_scale"):
        opt.step(p, np.ones_like(p))
    p = fresh(np.float32)
    opt = optim.Adam(lr=0.1, mu_dtype="bfloat16", betas=(0.999, 0.999), convention="optax")
    with pytest.warns(PrecisionWarning, match="beta1 \\(in mu_dtype\\)"):
        opt.step(p, np.ones_like(p))


# ------------------------------------------------------------------ step_all
def check_step_all_rejected(opt, items, exc, match):
    befores = [(p, snapshot(opt, p)) for p in {id(it[0]): it[0] for it in items
                                                 if isinstance(it, tuple) and
                                                 isinstance(it[0], np.ndarray)}.values()]
    iterations = opt.iterations
    with pytest.raises(exc, match=match):
        opt.step_all(items)
    for p, before in befores:
        assert_untouched(opt, p, before)
    assert opt.iterations == iterations


@pytest.mark.parametrize("convention", ["torch", "keras"])
def test_step_all_validates_every_item_before_writing_any(convention):
    a, b = fresh(), fresh()
    opt = stepped_optimizer(a, convention=convention)
    g = np.full_like(a, 0.25)
    check_step_all_rejected(opt, [], ValueError, "at least one")
    check_step_all_rejected(opt, [(a, None), (b, None)], ValueError, "no gradient")
    check_step_all_rejected(opt, [(a, g), (b, np.ones(5, np.float32))], ValueError, "shape")
    check_step_all_rejected(opt, [(a, g), (b, g.astype(np.float64))], TypeError, "must match")
    check_step_all_rejected(opt, [(a, g), (a, g)], ValueError, "earlier item")
    check_step_all_rejected(opt, [(a, g), (a[:3], g[:3])], ValueError, "earlier item")
    check_step_all_rejected(opt, [(a, g), (b, a)], ValueError, "grad shares memory with the param")
    check_step_all_rejected(opt, [(a, b), (b, g)], ValueError, "param shares memory with the grad")
    check_step_all_rejected(opt, [(a, g), (b, g, "w"), (fresh(), g, "w")], ValueError, "twice")
    check_step_all_rejected(opt, [(a, g), (b, g, ["w"])], TypeError, "hashable")
    check_step_all_rejected(opt, [(a, g), a], TypeError, "items\\[1\\]")
    check_step_all_rejected(opt, [(a, g), (b, g, "k", 1)], TypeError, "items\\[1\\]")
    check_step_all_rejected(opt, [(a, g), (b, opt.state_of(a)["exp_avg"])], ValueError,
                            "shares memory")
    with pytest.raises(TypeError, match="sequence"):
        opt.step_all(5)


def test_bad_iterations():
    opt = optim.Adam()
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="iterations"):
            opt.iterations = bad
    assert opt.iterations == 0
    state = opt.state_dict()
    state["iterations"] = -2
    with pytest.raises(ValueError, match="iterations"):
        opt.load_state_dict(state)


def test_misaligned_arrays():
    """A grad viewed at an odd byte offset is read through an aligned copy (same result); a
    misaligned param, updated in place, is refused before anything is written."""
    n = 64
    values = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    raw = bytearray(4 * n + 1)
    view = np.ndarray((n,), np.float32, buffer=raw, offset=1)
    assert not view.flags.aligned
    view[...] = values
    expected, got = values.copy(), values.copy()
    optim.Adam().step(expected, values.copy())
    optim.Adam().step(got, view)                       # misaligned grad: fine
    assert np.array_equal(expected, got)
    before = bytes(raw)
    with pytest.raises(ValueError, match="aligned"):
        optim.Adam().step(view, values.copy())          # misaligned param: refused
    assert bytes(raw) == before
