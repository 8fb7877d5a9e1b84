"""SGD: plain, with momentum, Nesterov momentum, dampening and weight decay."""
from __future__ import annotations

from fractions import Fraction

from .base import _REQUIRED, Optimizer


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum, dampening, Nesterov momentum, weight decay.

    Every operation is rounded to A; g is the gradient (negated when ``maximize``), theta the
    parameter, t the step (1 at the first).  Defaults per convention:

    ======== ======== ============ ============ ============ =========
    conv.    lr       momentum     dampening    weight_decay nesterov
    ======== ======== ============ ============ ============ =========
    torch    1e-3     0            0            0            False
    keras    0.01     0            (none)       0            False
    optax    required 0            (none)       0            False
    ======== ======== ============ ============ ============ =========

    **torch** (``torch.optim.SGD``)::

        g  <- g + wd * theta                                   (if weight_decay != 0)
        b  <- g                                   if t = 1     (if momentum != 0)
        b  <- mu * b + (1 - dampening) * g        otherwise
        d  <- g + mu * b   if nesterov   else   b              (d = g without momentum)
        theta <- theta - lr * d

    **keras** (``keras.optimizers.SGD``; lr inside the buffer; decoupled weight decay)::

        theta <- theta - (theta * wd) * lr                      (if weight_decay != 0)
        b  <- mu * b - lr * g
        theta <- theta + (mu * b - lr * g)   if nesterov   else   theta + b
        theta <- theta - lr * g                                 (without momentum)

    **optax** (``optax.sgd``; ``weight_decay`` = ``optax.add_decayed_weights`` chained before)::

        g  <- g + wd * theta
        b  <- g + mu * b;   d <- g + mu * b  if nesterov  else  b;   theta <- theta - lr * d

    The conventions differ in where lr sits (inside Keras's buffer: identical while lr is
    constant, different once it changes), in dampening (torch only) and torch's first step
    (b = g, not (1 - dampening) g), and in weight decay (coupled L2 vs decoupled).
    State: ``momentum_buffer`` (when momentum != 0).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
        "keras": {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
        "optax": {"lr": _REQUIRED, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    }
    _FLAGS = ("nesterov", "maximize")

    def __init__(self, lr=None, momentum=None, dampening=None, weight_decay=None, nesterov=False,
                 *, maximize=False, convention="torch", state_format=None, master_weights=False,
                 update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay),
            dict(nesterov=nesterov, maximize=maximize), convention=convention,
            state_format=state_format, master_weights=master_weights, update=update, seed=seed,
            num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "momentum", "weight_decay")
        self._only_in("torch", dampening=0.0)
        if self.convention == "keras" and self.momentum > 1:
            raise ValueError(f"momentum must be in [0, 1] (keras), got {self.momentum!r}")
        if self.convention == "torch" and self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")

    def _kernel(self):
        return f"sgd_{self.convention}_m{int(self.momentum != 0)}"

    def _state_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _constants(self, A):
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "nesterov": int(self.nesterov)}
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
        if self.momentum != 0:
            h["mu"] = self._round_decay(self.momentum, A, "momentum")
            if self.convention == "torch":
                h["buf_g"] = self._round(1 - Fraction(self.dampening), A, "1 - dampening")
                h.update(nest_g=1.0, dir_scale=-lr)
            elif self.convention == "keras":
                h.update(buf_g=-lr, nest_g=-lr, dir_scale=1.0)
            else:
                h.update(buf_g=1.0, nest_g=1.0, dir_scale=-lr)
        return h

    def _per_step(self, A, t):
        return {"first_step": int(self.convention == "torch" and t == 1)}
