"""precision.optim (convention="keras") against real Keras 3 optimizers (JAX backend, CPU).

Keras runs eagerly (``optimizer.apply`` op by op, as a Keras user's custom loop does without
``jit_compile``), from the same start and gradients as ours (257 elements, 100 steps, float32 and
float64).  Several variables are stepped by one ``apply`` per step, and we step them with
:meth:`precision.optim.Optimizer.step_all`, so Keras's shared ``iterations`` counter is checked
too: the second variable joins at the 3rd call (its first Adam step uses t = 3) and gets no
gradient every 7th call (skipped, while the count goes on).

Where we differ from Keras, and the bound: Keras computes its per-step scalars in the variable's
dtype: Adam's ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` with ``beta**t`` from a
float32 ``pow`` and a cancelling ``1 - beta**t`` (hundreds of ulps of the scalar at small t in
float32), where we round the exact value once.  The elementwise operations are the same
(measured: SGD, RMSprop, Adagrad and Adadelta agree bit for bit); Adam and AdamW agree within
``ADAM_ULPS`` ulps of the operands per step.  Keras keeps ``learning_rate`` in a float32
variable also for float64 variables: our float64 runs take that float32 value as lr.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
jax = pytest.importorskip("jax")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":
    pytest.skip("these tests need Keras on the JAX backend", allow_module_level=True)

from precision import optim  # noqa: E402
from tests.helpers import ulps_apart

pytestmark = [pytest.mark.peers,
              pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning"),
              pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")]

STEPS = 100
N = 257
DTYPES = ("float32", "float64")
# ulps per step taken, at the operands' magnitude: Adam's alpha_t in float32 (measured: 70)
ADAM_ULPS = 96

CASES = [
    ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.9, nesterov=True), 0),
    ("SGD", dict(learning_rate=0.05, weight_decay=0.1), dict(lr=0.05, weight_decay=0.1), 0),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.9, centered=True), dict(lr=0.01, momentum=0.9, centered=True), 0),
    ("Adagrad", dict(learning_rate=0.1), dict(lr=0.1), 0),
    ("Adadelta", dict(learning_rate=1.0), dict(lr=1.0), 0),
    ("Adam", dict(learning_rate=0.01), dict(lr=0.01), "adam"),
    ("Adam", dict(learning_rate=0.01, amsgrad=True, beta_1=0.8), dict(lr=0.01, amsgrad=True, betas=(0.8, 0.999)), "adam"),
    ("AdamW", dict(learning_rate=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1), "adam"),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def inputs(dtype):
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((2, N))
    scales = 10.0 ** rng.integers(-3, 1, size=(STEPS, 1, 1))
    grads = rng.standard_normal((STEPS, 2, N)) * scales
    return p0.astype(dtype), grads.astype(dtype)


def active(k):
    """Which of the two variables get a gradient at call k (0-based)."""
    return [0] + ([1] if k >= 2 and k % 7 != 6 else [])


def run_keras(name, kw, dtype):
    jax.config.update("jax_enable_x64", True)
    p0, grads = inputs(dtype)
    variables = [keras.Variable(p0[i], dtype=dtype) for i in range(2)]
    opt = getattr(keras.optimizers, name)(**kw)
    opt.build(variables)
    out = []
    for k in range(STEPS):
        on = active(k)
        opt.apply([keras.ops.convert_to_tensor(grads[k, i]) if i in on else None
                   for i in range(2)], variables)
        out.append(np.stack([np.asarray(v.value) for v in variables]))
    return np.stack(out), int(opt.iterations.value)



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", range(len(CASES)), ids=IDS)
def test_trajectory_matches_keras(c, dtype):
    name, keras_kw, our_kw, kind = CASES[c]
    theirs, iterations = run_keras(name, keras_kw, dtype)
    p0, grads = inputs(dtype)
    # Keras keeps learning_rate in a float32 variable, also for float64 variables
    our_kw = {**our_kw, "lr": float(np.float32(our_kw["lr"]))}
    opt = getattr(optim, name)(convention="keras", **our_kw)
    params = [p0[i].copy() for i in range(2)]
    scale = np.abs(p0).astype(np.float64)
    worst = 0.0
    for k in range(STEPS):
        on = active(k)
        opt.step_all([(params[i], grads[k, i] if i in on else None) for i in range(2)
                      if i in on or k >= 2])
        mine = np.stack(params)
        scale = np.maximum(scale, np.abs(theirs[k]))
        worst = max(worst, ulps_apart(mine, theirs[k], scale).max() / (k + 1))
    assert worst <= (ADAM_ULPS if kind == "adam" else 0), worst
    assert opt.iterations == iterations == STEPS
