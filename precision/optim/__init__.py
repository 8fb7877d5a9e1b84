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
has its own step counter t (1 at its first step).  An array that shares memory with the
optimizer's state (another parameter's moment buffer) is refused as ``param``.  Pickling or
``copy.deepcopy`` of the optimizer *together with its parameters* (one object graph) keeps each
parameter bound to its state, and the trajectory continues bit for bit (:class:`Optimizer`).

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

from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .base import CONVENTIONS, UPDATE_RULES, Optimizer
from .rmsprop import RMSprop
from .scalars import bias_correction
from .sgd import SGD

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
