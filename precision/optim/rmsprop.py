"""RMSprop, centered or not, with momentum."""
from __future__ import annotations

from fractions import Fraction

from .. import formats as _formats
from .base import _REQUIRED, Optimizer
from .scalars import _one_minus_pow

# where eps sits in each convention's denominator (optax: its eps_in_sqrt=True by default)
_EPS_IN_SQRT = {"torch": False, "keras": True, "optax": True}


class RMSprop(Optimizer):
    r"""RMSprop (Hinton 2012; centered: Graves 2013), with momentum.

    ======== ======== ===== ====== ======== ============ ======== =========== =============
    conv.    lr       alpha eps    momentum weight_decay centered eps_in_sqrt initial_scale
    ======== ======== ===== ====== ======== ============ ======== =========== =============
    torch    1e-2     0.99  1e-8   0        0            False    (False)     (none)
    keras    1e-3     0.9   1e-7   0        0            False    (True)      (none)
    optax    required 0.9   1e-8   0        0            False    True        0
    ======== ======== ===== ====== ======== ============ ======== =========== =============

    (``alpha`` is Keras's ``rho`` and optax's ``decay``.)  ``eps_in_sqrt``, ``initial_scale``,
    ``bias_correction`` (default False) and ``nesterov`` (default False) are optax's options
    (``optax.rmsprop``, ``optax/_src/alias.py``; ``scale_by_rms`` / ``scale_by_stddev`` and
    ``trace`` in ``transform.py`` and ``transforms/_accumulation.py``): the other conventions
    have eps where their framework puts it (``eps_in_sqrt`` reports it) and no such options.

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

    **optax** (``optax.rmsprop``: ``scale_by_rms``, or ``scale_by_stddev`` when centered, then
    ``scale_by_learning_rate``, then ``trace(momentum, nesterov)`` when momentum is set; the
    momentum is a trace of the lr-scaled update)::

        g <- g + wd * theta                              (add_decayed_weights chained before)
        v <- (1 - alpha) * (g * g) + alpha * v           (v starts at initial_scale)
        bias_correction:  c <- 1 - alpha^t,  else c = 1
        centered:  gbar <- (1 - alpha) * g + alpha * gbar;   s <- v / c - (gbar / c) * (gbar / c)
        else:      s <- v / c
        k <- 1 / sqrt(s + eps)        (eps_in_sqrt, optax's default)
        k <- 1 / (sqrt(s) + eps)      (eps_in_sqrt=False: eps outside, as torch)
        d <- (-lr) * (k * g)
        momentum:  b <- d + mu * b;   theta <- theta + (d + mu * b  if nesterov  else  b)
        else:      theta <- theta + d

    ``lerp(a, b, w)`` is torch's (vectorised CPU kernel): ``a + w (b - a)`` when |w| < 1/2, else
    ``b + (w - 1)(b - a)``.  optax's ``rsqrt`` is modelled as 1 / sqrt (two roundings; XLA's
    CPU rsqrt is a correctly rounded sqrt and a division, see the peer tests).  optax's
    bias correction ``1 - alpha^t`` uses its own step count (``count`` in the state), which is
    the parameter's t here, or the optimizer's shared count under :meth:`step_all`; it is
    computed accurately and rounded once into A (optax evaluates ``1 - decay**count`` in the
    default float type, which cancels: the peer tests quantify it).  ``initial_scale`` is
    rounded into A (PyTorch starts v at 0, TF1 at 1).  ``nesterov`` needs ``momentum > 0``
    (optax ignores it without momentum).
    State: ``square_avg`` (v), ``grad_avg`` (gbar, centered), ``momentum_buffer`` (b).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "weight_decay": 0.0, "momentum": 0.0},
        "optax": {"lr": _REQUIRED, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.0,
                  "momentum": 0.0},
    }
    for _d in _DEFAULTS.values():
        _d["initial_scale"] = 0.0
    del _d
    _FLAGS = ("centered", "maximize", "eps_in_sqrt", "bias_correction", "nesterov")
    _CONVENTION_ONLY = {**Optimizer._CONVENTION_ONLY, "nesterov": "optax"}

    def __init__(self, lr=None, alpha=None, eps=None, weight_decay=None, momentum=None,
                 centered=False, *, maximize=False, initial_scale=None, eps_in_sqrt=None,
                 bias_correction=False, nesterov=False, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        if eps_in_sqrt is None and convention in _EPS_IN_SQRT:
            eps_in_sqrt = _EPS_IN_SQRT[convention]
        super().__init__(
            dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                 initial_scale=initial_scale),
            dict(centered=centered, maximize=maximize, eps_in_sqrt=eps_in_sqrt,
                 bias_correction=bias_correction, nesterov=nesterov),
            convention=convention, state_format=state_format, master_weights=master_weights,
            update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "eps", "weight_decay", "momentum", "alpha", "initial_scale")
        if self.convention != "torch" and self.alpha > 1:
            raise ValueError(f"alpha (rho) must be in [0, 1], got {self.alpha!r}")
        self._only_in("optax", initial_scale=0.0, bias_correction=False, nesterov=False)
        if self.convention != "optax" and self.eps_in_sqrt != _EPS_IN_SQRT[self.convention]:
            where = "inside" if _EPS_IN_SQRT[self.convention] else "outside"
            raise ValueError(
                f"the {self.convention} convention's RMSprop has eps {where} the square root; "
                f"eps_in_sqrt is an optax option (convention='optax')")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        if self.bias_correction and self.alpha >= 1:
            raise ValueError(f"bias_correction needs alpha < 1 (1 - alpha^t is 0), "
                             f"got {self.alpha!r}")

    def _initial_state(self, name, A):
        if name != "square_avg":
            return 0.0
        return _formats.round_scalar(self.initial_scale, A, "initial_scale",
                                     stacklevel=self._STATE_DEPTH)

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
        h.update(eps_in_sqrt=int(self.eps_in_sqrt), nesterov=int(self.nesterov), bc2=1.0)
        return h

    def _per_step(self, A, t):
        if not self.bias_correction:
            return {}
        return {"bc2": self._round(_one_minus_pow(self.alpha, t), A, "1 - alpha^t")}
