"""RMSprop, centered or not, with momentum."""
from __future__ import annotations

from fractions import Fraction

from .base import _REQUIRED, Optimizer


class RMSprop(Optimizer):
    r"""RMSprop (Hinton 2012; centered: Graves 2013), with momentum.

    ======== ======== ===== ====== ======== ============ ========
    conv.    lr       alpha eps    momentum weight_decay centered
    ======== ======== ===== ====== ======== ============ ========
    torch    1e-2     0.99  1e-8   0        0            False
    keras    1e-3     0.9   1e-7   0        0            False
    optax    required 0.9   1e-8   0        0            False
    ======== ======== ===== ====== ======== ============ ========

    (``alpha`` is Keras's ``rho`` and optax's ``decay``.)

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

    **optax** (``optax.rmsprop``, its default ``eps_in_sqrt=True``; momentum is a trace of the
    lr-scaled update)::

        g <- g + wd * theta
        v <- (1 - alpha) * (g * g) + alpha * v
        centered:  gbar <- (1 - alpha) * g + alpha * gbar;   k <- 1 / sqrt((v - gbar * gbar) + eps)
        else:      k <- 1 / sqrt(v + eps)
        d <- (-lr) * (k * g)
        momentum:  b <- d + mu * b;   theta <- theta + b
        else:      theta <- theta + d

    ``lerp(a, b, w)`` is torch's (vectorised CPU kernel): ``a + w (b - a)`` when |w| < 1/2, else
    ``b + (w - 1)(b - a)``.
    optax's ``rsqrt`` is modelled as 1 / sqrt (two roundings); optax's ``nesterov``,
    ``initial_scale``, ``eps_in_sqrt=False`` and ``bias_correction`` are not modelled.
    State: ``square_avg`` (v), ``grad_avg`` (gbar, centered), ``momentum_buffer`` (b).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "weight_decay": 0.0, "momentum": 0.0},
        "optax": {"lr": _REQUIRED, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.0,
                  "momentum": 0.0},
    }
    _FLAGS = ("centered", "maximize")

    def __init__(self, lr=None, alpha=None, eps=None, weight_decay=None, momentum=None,
                 centered=False, *, maximize=False, convention="torch", state_format=None,
                 master_weights=False, update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum),
            dict(centered=centered, maximize=maximize), convention=convention,
            state_format=state_format, master_weights=master_weights, update=update, seed=seed,
            num_threads=num_threads)

    def _check(self):
        self._nonneg("lr", "eps", "weight_decay", "momentum", "alpha")
        if self.convention != "torch" and self.alpha > 1:
            raise ValueError(f"alpha (rho) must be in [0, 1], got {self.alpha!r}")

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
        return h
