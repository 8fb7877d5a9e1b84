"""Adadelta."""
from __future__ import annotations

from fractions import Fraction

from .base import _REQUIRED, Optimizer


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012): steps scaled by RMS[update] / RMS[gradient].

    ======== ======== ====== ======= ============
    conv.    lr       rho    eps     weight_decay
    ======== ======== ====== ======= ============
    torch    1.0      0.9    1e-6    0
    keras    1e-3     0.95   1e-7    0
    optax    required 0.9    1e-6    0
    ======== ======== ====== ======= ============

    **torch** (``torch.optim.Adadelta``)::

        g <- g + wd * theta
        v <- rho * v + ((1 - rho) * g) * g
        D <- (sqrt(a + eps) / sqrt(v + eps)) * g
        a <- rho * a + ((1 - rho) * D) * D
        theta <- theta - lr * D

    **keras** (``keras.optimizers.Adadelta``; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr
        v <- rho * v + (1 - rho) * (g * g)
        D <- -((sqrt(a + eps) * g) / sqrt(v + eps))
        a <- rho * a + (1 - rho) * (D * D)
        theta <- theta + lr * D

    **optax** (``optax.adadelta``)::

        g <- g + wd * theta
        v <- (1 - rho) * (g * g) + rho * v
        D <- (sqrt(a + eps) / sqrt(v + eps)) * g
        a <- (1 - rho) * (D * D) + rho * a
        theta <- theta + (-lr) * D

    The three compute the same recurrence with differently ordered (differently rounded)
    operations; they differ in the defaults.  State: ``square_avg`` (v), ``acc_delta`` (a).
    """

    _DEFAULTS = {
        "torch": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
        "keras": {"lr": 1e-3, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.0},
        "optax": {"lr": _REQUIRED, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
    }
    _FLAGS = ("maximize",)

    def __init__(self, lr=None, rho=None, eps=None, weight_decay=None, *, maximize=False,
                 convention="torch", state_format=None, master_weights=False, update="nearest",
                 seed=0, num_threads=None):
        super().__init__(dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay),
                         dict(maximize=maximize), convention=convention,
                         state_format=state_format, master_weights=master_weights, update=update,
                         seed=seed, num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "eps", "weight_decay")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho!r}")

    def _kernel(self):
        return f"adadelta_{self.convention}"

    def _state_names(self):
        return ("square_avg", "acc_delta")

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps"),
             "rho": self._round_decay(self.rho, A, "rho"),
             "one_minus_rho": self._round(1 - Fraction(self.rho), A, "1 - rho")}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        return h
