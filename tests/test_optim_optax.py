"""precision.optim (convention="optax") against real optax on JAX (CPU), float32 and float64.

Per optimizer and option set, from the same start and the same gradients (257 elements, 100
steps, gradient scales 1e-3 ... 1):

* per step: our state (parameter, moments) is set to optax's before the step, both take the same
  step, and the parameter must agree within ``STEP_ULPS`` ulps;
* trajectory: we run the 100 steps on our own; the parameter must stay within ``STEP_ULPS``
  ulps per step taken of optax's.

Ulps are counted at the magnitude of the step's operands (the larger of the value before the
step and the two results), as in tests/test_optim_peers.py.  optax runs under ``jax.jit`` (one
compiled update per case, reused for all steps), with ``jax_enable_x64`` so float64 is float64.

Why not bit for bit: XLA does not run optax's formulas as written, and we model the formulas.
Measured on XLA's CPU backend (see NOTES/docs):

* it rewrites a division by a broadcast scalar, ``m / (1 - b1**t)``, into ``m * (1 / (1 - b1**t))``
  (two roundings: ~7 % of float32 bias-corrected moments differ by an ulp);
* under ``jit`` it contracts ``a * b + c`` into fused multiply-adds (~5 % of float32 results);
* ``lax.rsqrt`` (optax's RMSprop with ``eps_in_sqrt=True``) is not a correctly rounded
  ``1 / sqrt``: about a third of float32 inputs differ by an ulp;
* the bias corrections ``1 - decay**count`` are computed in float64 (x64) with cancellation (up to
  hundreds of ulps of ``1 - b2**t`` at small t), then cast.

Each is an ulp or so of one intermediate; at the parameter they are a fraction of an ulp of the
operands per step, and never accumulate beyond ``STEP_ULPS`` per step.  ``mu_dtype`` is checked in
float32 and float64 arithmetic with a bfloat16 first moment, against optax run op by op (see
``EAGER``: under jit XLA does not round the bfloat16 product).
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

from precision import optim  # noqa: E402
from tests.helpers import ulps_apart

pytestmark = [pytest.mark.peers,
              pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")]

STEPS = 100
N = 257
DTYPES = ("float32", "float64")
# ulps per step, at the operands' magnitude (see the module docstring): in float32 the rewrites
# and contractions of XLA (measured worst: 7); in float64 also optax's bias corrections
# 1 - b**t evaluated in float64 with cancellation (measured worst: 49)
STEP_ULPS = {"float32": 8, "float64": 64}

# (name, optax factory, our constructor kwargs, our class, state map: ours -> optax state path)
CASES = [
    ("adam", lambda: optax.adam(1e-2), optim.Adam, dict(lr=1e-2)),
    ("adam-b", lambda: optax.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-10),
     optim.Adam, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, eps_root=1e-10)),
    ("nadam", lambda: optax.adam(1e-2, nesterov=True), optim.Adam, dict(lr=1e-2, nesterov=True)),
    ("nadamw", lambda: optax.nadamw(1e-2, weight_decay=0.1), optim.AdamW,
     dict(lr=1e-2, weight_decay=0.1, nesterov=True)),
    ("adamw", lambda: optax.adamw(1e-2, weight_decay=0.1), optim.AdamW,
     dict(lr=1e-2, weight_decay=0.1)),
    ("amsgrad", lambda: optax.amsgrad(1e-2), optim.Adam, dict(lr=1e-2, amsgrad=True)),
    ("adam-mu-bf16", lambda: optax.adam(1e-2, mu_dtype="bfloat16"), optim.Adam,
     dict(lr=1e-2, mu_dtype="bfloat16")),
    ("rmsprop", lambda: optax.rmsprop(1e-2), optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop-out", lambda: optax.rmsprop(1e-2, eps_in_sqrt=False, eps=1e-6), optim.RMSprop,
     dict(lr=1e-2, eps_in_sqrt=False, eps=1e-6)),
    ("rmsprop-debias", lambda: optax.rmsprop(1e-2, bias_correction=True, initial_scale=0.5,
                                             eps_in_sqrt=False),
     optim.RMSprop, dict(lr=1e-2, bias_correction=True, initial_scale=0.5, eps_in_sqrt=False)),
    ("rmsprop-nesterov", lambda: optax.rmsprop(1e-2, momentum=0.9, nesterov=True,
                                               centered=True, eps_in_sqrt=False),
     optim.RMSprop, dict(lr=1e-2, momentum=0.9, nesterov=True, centered=True,
                         eps_in_sqrt=False)),
    ("rmsprop-all", lambda: optax.rmsprop(1e-2, momentum=0.9, nesterov=True, centered=True,
                                          bias_correction=True, initial_scale=1.0),
     optim.RMSprop, dict(lr=1e-2, momentum=0.9, nesterov=True, centered=True,
                         bias_correction=True, initial_scale=1.0)),
]
# Run op by op, without jit: under jit XLA's CPU backend keeps bfloat16 intermediates in float32
# (beta1 * m is not rounded to bfloat16, which JAX's dtype rules and eager execution do: 99 % of
# the new first moments differ), so jit and eager optax disagree; we model JAX's semantics.
EAGER = {"adam-mu-bf16"}
# our state name -> the optax state field (first leaf with that field in the chain state)
FIELDS = {"exp_avg": "mu", "exp_avg_sq": "nu", "max_exp_avg_sq": "nu_max",
          "square_avg": "nu", "grad_avg": "mu", "momentum_buffer": "trace"}


def inputs(dtype):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(N)
    scales = 10.0 ** rng.integers(-3, 1, size=(STEPS, 1))
    grads = rng.standard_normal((STEPS, N)) * scales
    return p0.astype(dtype), grads.astype(dtype)


def fields(state):
    """{field name: array} of the first leaves named mu/nu/nu_max/trace in an optax state."""
    out = {}

    def visit(node):
        if hasattr(node, "_fields"):
            for name in node._fields:
                value = getattr(node, name)
                if name in ("mu", "nu", "nu_max", "trace") and name not in out \
                        and hasattr(value, "shape"):
                    out[name] = np.asarray(value)
                else:
                    visit(value)
        elif isinstance(node, (tuple, list)):
            for item in node:
                visit(item)
    visit(state)
    return out


@pytest.fixture(scope="module")
def optax_runs():
    """optax's parameter and state after every step, one jitted update per case and dtype."""
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    runs = {}
    for name, make, _, _ in CASES:
        tx = make()

        def update(p, state, g, tx=tx):
            u, state = tx.update(g, state, p)
            return optax.apply_updates(p, u), state

        if name not in EAGER:
            update = jax.jit(update)

        for dtype in DTYPES:
            p0, grads = inputs(dtype)
            p = jnp.asarray(p0)
            state = tx.init(p)
            history = {"param": []}
            for k in range(STEPS):
                p, state = update(p, state, jnp.asarray(grads[k]))
                history["param"].append(np.asarray(p))
                for field, value in fields(state).items():
                    history.setdefault(field, []).append(value)
            runs[name, dtype] = {key: np.stack(v) for key, v in history.items()}
    return runs



def ours(c):
    _, _, cls, kw = CASES[c]
    return cls(convention="optax", **kw)


IDS = [name for name, *_ in CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", range(len(CASES)), ids=IDS)
def test_each_step_matches_optax(optax_runs, c, dtype):
    theirs = optax_runs[CASES[c][0], dtype]
    p0, grads = inputs(dtype)
    opt = ours(c)
    param = p0.copy()
    worst = 0.0
    for k in range(STEPS):
        before = p0 if k == 0 else theirs["param"][k - 1]
        if k > 0:                                   # start our step from optax's state
            np.copyto(param, before)
            live = opt.state_of(param)
            for name, arr in live.items():
                if name in FIELDS and FIELDS[name] in theirs:
                    np.copyto(arr, theirs[FIELDS[name]][k - 1].astype(arr.dtype))
        opt.step(param, grads[k])
        worst = max(worst, float(ulps_apart(param, theirs["param"][k], before).max()))
    assert worst <= STEP_ULPS[dtype], worst


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", range(len(CASES)), ids=IDS)
def test_trajectory_stays_close_to_optax(optax_runs, c, dtype):
    theirs = optax_runs[CASES[c][0], dtype]["param"]
    p0, grads = inputs(dtype)
    opt = ours(c)
    param = p0.copy()
    scale = np.abs(param).astype(np.float64)
    for k in range(STEPS):
        opt.step(param, grads[k])
        scale = np.maximum(scale, np.abs(theirs[k]))
        apart = ulps_apart(param, theirs[k], scale).max()
        assert apart <= STEP_ULPS[dtype] * (k + 1), (k, apart)


def test_mu_dtype_state_is_optax_bfloat16_moment(optax_runs):
    """With mu_dtype="bfloat16" optax stores its first moment in bfloat16: ours holds the same
    bfloat16 values (in the float32 state array)."""
    theirs = optax_runs["adam-mu-bf16", "float32"]
    assert theirs["mu"].dtype.name == "bfloat16"
    p0, grads = inputs("float32")
    opt = ours([name for name, *_ in CASES].index("adam-mu-bf16"))
    param = p0.copy()
    opt.step(param, grads[0])
    mine = opt.state_of(param)["exp_avg"]
    assert np.array_equal(mine, theirs["mu"][0].astype(np.float32))
