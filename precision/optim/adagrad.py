"""Adagrad."""
from __future__ import annotations

from fractions import Fraction

from .. import formats as _formats
from .base import _REQUIRED, Optimizer


class Adagrad(Optimizer):
    r"""Adagrad: per-coordinate steps scaled by the root of the sum of squared gradients.

    ======== ======== ======== ========================= ======== ============
    conv.    lr       lr_decay initial_accumulator_value eps      weight_decay
    ======== ======== ======== ========================= ======== ============
    torch    1e-2     0        0                         1e-10    0
    keras    1e-3     (none)   0.1                       1e-7     0
    optax    required (none)   0.1                       1e-7     0
    ======== ======== ======== ========================= ======== ============

    **torch** (``torch.optim.Adagrad``; eps outside the square root)::

        g <- g + wd * theta                 (if weight_decay != 0)
        s <- s + g * g
        theta <- theta + ((-clr) * g) / (sqrt(s) + eps),   clr = lr / (1 + (t - 1) lr_decay)

    **keras** (``keras.optimizers.Adagrad``; eps inside; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr
        s <- s + g * g
        theta <- theta - (lr * g) / sqrt(s + eps)

    **optax** (``optax.adagrad``; eps inside; a zero accumulator gives a zero step)::

        g <- g + wd * theta
        s <- g * g + s
        k <- 1 / sqrt(s + eps)  if s > 0  else  0
        theta <- theta + (-lr) * (k * g)

    ``clr`` is computed exactly and rounded once.  State: ``sum`` (starts at
    ``initial_accumulator_value`` rounded into A).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-2, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.0, "eps": 1e-10},
        "keras": {"lr": 1e-3, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.1, "eps": 1e-7},
        "optax": {"lr": _REQUIRED, "lr_decay": 0.0, "weight_decay": 0.0,
                  "initial_accumulator_value": 0.1, "eps": 1e-7},
    }
    _FLAGS = ("maximize",)

    def __init__(self, lr=None, lr_decay=None, weight_decay=None, initial_accumulator_value=None,
                 eps=None, *, maximize=False, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                 initial_accumulator_value=initial_accumulator_value, eps=eps),
            dict(maximize=maximize), convention=convention, state_format=state_format,
            master_weights=master_weights, update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
        self._only_in("torch", lr_decay=0.0)

    def _kernel(self):
        return f"adagrad_{self.convention}"

    def _state_names(self):
        return ("sum",)

    def _initial_state(self, name, A):
        return _formats.round_scalar(self.initial_accumulator_value, A,
                                     "initial_accumulator_value", stacklevel=self._STATE_DEPTH)

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps")}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        return h

    def _per_step(self, A, t):
        if self.convention != "torch":
            return {}
        clr = Fraction(self.lr) / (1 + (t - 1) * Fraction(self.lr_decay))
        return {"neg_step": -self._round(clr, A, "lr / (1 + (t - 1) * lr_decay)")}
