"""Optimizer state survives pickling and copying: bound to the same parameters, bit for bit.

An optimizer keys unkeyed state by the identity of the parameter array.  Pickled or
deep-copied together with its parameters (one object graph), the restored optimizer must be
bound to the restored arrays, with every moment, step counter t and stochastic-rounding stream,
so that stepping them continues exactly the trajectory the original takes (checked against the
original, continued side by side).  Pickled apart from them, it says so (a UserWarning) instead
of silently starting fresh state.
"""
import copy
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from precision import optim
from tests.helpers import same_bits
from tests.test_optim import OPTIMIZERS, POLICIES, as_array, configs, format_values

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")

ROUND_TRIPS = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}


def assert_same_state(opt_a, opt_b, param_a, param_b, **kw):
    assert same_bits(param_a, param_b).all()
    a = opt_a.state_of(param_a, **kw) if not kw else opt_a.state_of(**kw)
    b = opt_b.state_of(param_b, **kw) if not kw else opt_b.state_of(**kw)
    assert set(a) == set(b)
    for name, value in a.items():
        if isinstance(value, np.ndarray):
            assert same_bits(value, b[name]).all(), name
            assert not np.shares_memory(value, b[name])        # a copy, not the same state
        else:
            assert value == b[name], name


@pytest.mark.parametrize("S,A", POLICIES)
@given(data=st.data())
def test_a_round_trip_with_the_parameters_continues_bit_identically(S, A, data):
    """Random optimizer, convention, options, update rule; two unkeyed parameters and a keyed
    one; a few steps, a round trip of (params, opt), then the same gradients to both."""
    cls = data.draw(st.sampled_from(OPTIMIZERS), label="optimizer")
    kw = data.draw(configs(cls), label="config")
    rule = data.draw(st.sampled_from(["nearest", "kahan", "stochastic", "master"]), label="rule")
    trip = data.draw(st.sampled_from(sorted(ROUND_TRIPS)), label="round trip")
    before = data.draw(st.integers(1, 3), label="steps before")
    n = data.draw(st.integers(1, 9), label="n")
    values = st.lists(format_values(S, allow_nan=False), min_size=n, max_size=n)
    master = rule == "master"
    opt = cls(**kw, state_format=A, master_weights=master, update="nearest" if master else rule,
              seed=data.draw(st.integers(0, 3)))
    params = [as_array(data.draw(values, label=f"param{k}"), S) for k in range(3)]

    def step(o, ps, grads):
        o.step(ps[0], grads[0])
        o.step(ps[1], grads[1])
        o.step(ps[2], grads[2], key="keyed")

    def draw_grads(k):
        return [as_array(data.draw(values, label=f"grad{k}.{j}"), S) for j in range(3)]

    for k in range(before):
        step(opt, params, draw_grads(k))
    restored_params, restored = ROUND_TRIPS[trip]((params, opt))
    for k in range(2):
        grads = draw_grads(before + k)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)        # no "state starts fresh"
            step(restored, restored_params, [g.copy() for g in grads])
        step(opt, params, grads)
        for p, q in zip(params[:2], restored_params[:2]):
            assert_same_state(opt, restored, p, q)
        assert_same_state(opt, restored, params[2], restored_params[2], key="keyed")
    assert restored.state_of(restored_params[0])["step"] == before + 2


@pytest.mark.parametrize("trip", sorted(ROUND_TRIPS))
def test_momentum_and_adam_step_counter_survive(trip):
    """The defect of issue 17: after the round trip the next step used to start fresh
    (momentum buffer zero, Adam's t back to 1)."""
    p = np.linspace(-1, 1, 5).astype(np.float32)
    g = np.full(5, 0.25, np.float32)
    for opt in (optim.SGD(lr=0.1, momentum=0.9), optim.Adam(lr=0.1)):
        q = p.copy()
        opt.step(q, g)
        opt.step(q, g)
        q2, opt2 = ROUND_TRIPS[trip]((q, opt))
        opt2.step(q2, g)
        assert opt2.state_of(q2)["step"] == 3
        opt.step(q, g)
        assert same_bits(q, q2).all()


@pytest.mark.parametrize("trip", sorted(ROUND_TRIPS))
def test_an_optimizer_restored_apart_from_its_parameters_warns(trip):
    p = np.linspace(-1, 1, 5).astype(np.float32)
    g = np.full(5, 0.25, np.float32)
    opt = optim.Adam()
    opt.step(p, g)
    alone = ROUND_TRIPS[trip](opt)                   # without p: the arrays no longer match
    other = ROUND_TRIPS[trip](p)
    with pytest.warns(UserWarning, match="unpickled or deep-copied .* starts fresh"):
        alone.step(other, g)
    assert alone.state_of(other)["step"] == 1
    with warnings.catch_warnings():                  # said once per array, not at every step
        warnings.simplefilter("error", UserWarning)
        alone.step(other, g)
        alone.step(np.ones(3, np.float32), np.ones(3, np.float32))   # another shape: no state
    # an array of another shape or format does not match the restored state: no warning
    opt2 = ROUND_TRIPS[trip](opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        opt2.step(np.ones(4, np.float32), np.ones(4, np.float32))
        opt2.step(np.ones(5, np.float64), np.ones(5, np.float64))


def test_keyed_state_survives_pickling_the_optimizer_alone():
    w = np.linspace(-1, 1, 6).astype(np.float16)
    g = np.full(6, 0.5, np.float16)
    opt = optim.Adam(state_format="float32", update="nearest", master_weights=True)
    opt.step(w, g, key="fc.weight")
    restored = pickle.loads(pickle.dumps(opt))
    w2 = w.copy()
    opt.step(w, g, key="fc.weight")
    restored.step(w2, g, key="fc.weight")
    assert_same_state(opt, restored, w, w2, key="fc.weight")
    assert restored.state_of(key="fc.weight")["step"] == 2


def test_aliasing_checks_hold_after_a_round_trip():
    p = np.linspace(-1, 1, 5).astype(np.float32)
    opt = optim.Adam()
    opt.step(p, np.ones_like(p))
    p2, opt2 = pickle.loads(pickle.dumps((p, opt)))
    with pytest.raises(ValueError, match="optimizer state 'exp_avg'"):
        opt2.step(opt2.state_of(p2)["exp_avg"], np.ones_like(p2))
    with pytest.raises(ValueError, match="grad shares memory with the optimizer state"):
        opt2.step(p2, opt2.state_of(p2)["exp_avg_sq"])
