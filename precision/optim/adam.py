"""Adam, AMSGrad and AdamW."""
from __future__ import annotations

from fractions import Fraction

import gmpy2

from .. import formats as _formats
from .base import _REQUIRED, Optimizer
from .scalars import _WIDE, _check_real, _one_minus_pow


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015), AMSGrad (Reddi et al. 2018), with L2 or decoupled weight decay.

    ======== ======== ============= ====== ============ ======== ========
    conv.    lr       betas         eps    weight_decay eps_root amsgrad
    ======== ======== ============= ====== ============ ======== ========
    torch    1e-3     (0.9, 0.999)  1e-8   0            (none)   False
    keras    1e-3     (0.9, 0.999)  1e-7   0            (none)   False
    optax    required (0.9, 0.999)  1e-8   0            0        False
    ======== ======== ============= ====== ============ ======== ========

    With ``bc1 = 1 - beta1^t`` and ``bc2 = 1 - beta2^t`` (computed accurately, see
    :func:`bias_correction`; each derived scalar below is rounded once into A):

    **torch** (``torch.optim.Adam``; ``AdamW`` / ``decoupled_weight_decay=True`` decays theta)::

        g <- g + wd * theta                                  (L2, Adam)
        theta <- theta * (1 - lr * wd)                       (decoupled, AdamW)
        m <- lerp(m, g, 1 - beta1)
        v <- beta2 * v + ((1 - beta2) * g) * g
        vmax <- max(vmax, v), v' = vmax    (amsgrad)   else   v' = v
        theta <- theta + ((-lr / bc1) * m) / (sqrt(v') / sqrt(bc2) + eps)

    **keras** (``keras.optimizers.Adam``/``AdamW``; eps is "epsilon hat", added to the
    *uncorrected* sqrt(v); weight decay decoupled)::

        theta <- theta - (theta * wd) * lr
        m <- m + (g - m) * (1 - beta1);   v <- v + (g * g - v) * (1 - beta2)
        vmax <- max(vmax, v), v' = vmax    (amsgrad, of the raw v)
        theta <- theta - (m * alpha_t) / (sqrt(v') + eps),   alpha_t = lr sqrt(bc2) / bc1

    **optax** (``optax.adam``/``adamw``/``amsgrad``/``nadam``/``nadamw``: ``scale_by_adam`` and
    ``scale_by_amsgrad`` in ``optax/_src/transform.py``; ``weight_decay`` in Adam is
    ``add_decayed_weights`` chained before it, an L2 term)::

        g <- g + wd * theta                                  (L2, Adam)
        m <- (1 - beta1) * g + R_M(beta1 * m);   v <- (1 - beta2) * (g * g) + beta2 * v
        mh <- m / bc1                                        (Adam)
        mh <- beta1 * (m / bc1') + (1 - beta1) * (g / bc1)   (nesterov: NAdam, bc1' = 1 - beta1^(t+1))
        vh <- v / bc2;   vmax <- max(vmax, vh), vh = vmax   (amsgrad)
        d <- mh / (sqrt(vh + eps_root) + eps)
        d <- d + wd * theta                                  (AdamW)
        theta <- theta + (-lr) * d
        m is stored as R_M(m)

    ``nesterov=True`` is optax's NAdam (Dozat 2016, without the extra beta2 factor of its
    Algorithm 2, as optax notes): the bias-corrected momentum looks one step ahead.  It exists in
    the optax convention only (torch's ``NAdam`` and Keras's ``Nadam`` use a momentum schedule,
    a different algorithm), and not with ``amsgrad`` (optax's ``scale_by_amsgrad`` has none).
    ``mu_dtype`` (optax only; None or a format name) is the format M of the first moment: optax
    computes ``beta1 * m`` with m in M and the weakly typed beta1 rounded into M (an M
    product), adds it to ``(1 - beta1) g`` in A, uses that A value for this step, and stores m
    cast to M.  R_M is that rounding (the identity without ``mu_dtype``).  M must be A itself or
    narrower than A (float16 or bfloat16 under float32 arithmetic; float32, float16 or bfloat16
    under float64).  The state array ``exp_avg`` then holds values of M in A's dtype: the
    values, hence the trajectory, are optax's; the memory saving is not modelled.

    Keras's form equals torch's with eps_torch = eps / sqrt(bc2) (31.6 eps at t = 1 for
    beta2 = 0.999).  ``lerp`` as in :class:`RMSprop`; max propagates NaN.  In float16 the
    default eps = 1e-8 rounds to 0: a zero gradient then gives 0/0 = NaN (a PrecisionWarning
    says so); ``state_format="float32"`` or eps >= 6e-8 avoid it.
    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (vmax, amsgrad).
    """

    _DEFAULTS = {
        "torch": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "eps_root": 0.0},
        "keras": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0,
                  "eps_root": 0.0},
        "optax": {"lr": _REQUIRED, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "eps_root": 0.0},
    }
    for _d in _DEFAULTS.values():
        _d["mu_dtype"] = None
    del _d
    _FLAGS = ("amsgrad", "maximize", "decoupled_weight_decay", "nesterov")
    _CONVENTION_ONLY = {**Optimizer._CONVENTION_ONLY, "nesterov": "optax"}

    def __init__(self, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, eps_root=None, nesterov=False,
                 mu_dtype=None, convention="torch", state_format=None, master_weights=False,
                 update="nearest", seed=0, num_threads=None):
        super().__init__(
            dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, eps_root=eps_root,
                 mu_dtype=mu_dtype),
            dict(amsgrad=amsgrad, maximize=maximize,
                 decoupled_weight_decay=decoupled_weight_decay, nesterov=nesterov),
            convention=convention, state_format=state_format, master_weights=master_weights,
            update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        b1, b2 = (_check_real("beta1", betas[0]), _check_real("beta2", betas[1]))
        for name, b in (("beta1", b1), ("beta2", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        object.__setattr__(self, "betas", (b1, b2))
        self._nonneg("lr", "eps", "weight_decay", "eps_root")
        self._only_in("optax", eps_root=0.0, nesterov=False, mu_dtype=None)
        if self.nesterov and self.amsgrad:
            raise ValueError("nesterov (NAdam) and amsgrad cannot be combined (optax's "
                             "scale_by_amsgrad has no Nesterov form)")
        if self.mu_dtype is not None:
            try:
                fmt = _formats.format(self.mu_dtype)
            except (TypeError, ValueError) as err:
                raise ValueError(f"mu_dtype must be None or a format name, got "
                                 f"{self.mu_dtype!r} ({err})") from None
            object.__setattr__(self, "mu_dtype", fmt.name)

    # codes of round_mu_f / round_mu_d (kernels/optim_lanes.h); M must be narrower than A
    _MU_CODES = {"float32": {"float16": 1, "bfloat16": 2},
                 "float64": {"float16": 1, "bfloat16": 2, "float32": 3}}

    def _mu_code(self, A):
        if self.mu_dtype is None or self.mu_dtype == A.name:
            return 0
        code = self._MU_CODES.get(A.name, {}).get(self.mu_dtype)
        if code is None:
            raise ValueError(
                f"mu_dtype={self.mu_dtype!r} is not narrower than the arithmetic format "
                f"{A.name}: the first moment must be kept in {A.name} or a narrower format")
        return code

    def _decoupled(self):
        return self.convention == "keras" or self.decoupled_weight_decay

    def _kernel(self):
        decay = "decoupled" if self._decoupled() else "coupled"
        return f"adam_{self.convention}_a{int(self.amsgrad)}_{decay}"

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if self.amsgrad else None)

    def _constants(self, A):
        b1, b2 = self.betas
        lr = self._round(self.lr, A, "lr")
        h = {"lr": lr, "neg_lr": -lr, "eps": self._round(self.eps, A, "eps"),
             "eps_root": self._round(self.eps_root, A, "eps_root"),
             "one_minus_beta": self._round(1 - Fraction(b1), A, "1 - beta1"),
             "one_minus_rho": self._round(1 - Fraction(b2), A, "1 - beta2")}
        if self.convention != "keras":
            h["rho"] = self._round_decay(b2, A, "beta2")
        if self.convention == "optax":
            h["beta"] = self._round_decay(b1, A, "beta1")
            h["mu_code"] = code = self._mu_code(A)
            h["beta_mu"] = h["beta"] if code == 0 else self._round_decay(
                b1, _formats.format(self.mu_dtype), "beta1 (in mu_dtype)")
            h["nesterov"] = int(self.nesterov)
        if self.convention == "torch":
            w = h["one_minus_beta"]
            small = abs(w) < 0.5
            h["lerp_from_old"] = int(small)
            h["lerp_coef"] = w if small else self._round(Fraction(w) - 1, A, "(1 - beta1) - 1")
        if self.weight_decay != 0:
            h["wd"] = self._round(self.weight_decay, A, "weight_decay")
            if self.convention == "torch" and self._decoupled():
                h["decay"] = self._round(1 - Fraction(self.lr) * Fraction(self.weight_decay), A,
                                         "1 - lr * weight_decay")
        return h

    def _per_step(self, A, t):
        b1, b2 = self.betas
        bc1 = _one_minus_pow(b1, t)
        bc2 = _one_minus_pow(b2, t)
        with gmpy2.context(_WIDE):
            lr = gmpy2.mpfr(self.lr)
            if self.convention == "torch":
                return {"neg_step": -self._round(lr / bc1, A, "lr / (1 - beta1^t)"),
                        "bc2_sqrt": self._round(gmpy2.sqrt(bc2), A, "sqrt(1 - beta2^t)")}
            if self.convention == "keras":
                return {"alpha_t": self._round(lr * gmpy2.sqrt(bc2) / bc1, A,
                                               "lr * sqrt(1 - beta2^t) / (1 - beta1^t)")}
        out = {"bc1": self._round(bc1, A, "1 - beta1^t"), "bc2": self._round(bc2, A, "1 - beta2^t"),
               "bc1_next": 1.0}
        if self.nesterov:
            out["bc1_next"] = self._round(_one_minus_pow(b1, t + 1), A, "1 - beta1^(t+1)")
        return out


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019): :class:`Adam` with
    ``decoupled_weight_decay=True`` and each convention's AdamW defaults for ``weight_decay``:
    1e-2 (torch), 4e-3 (keras), 1e-4 (optax).  The decay (see :class:`Adam`)::

        torch:  theta <- theta * (1 - lr * wd)              then the Adam step
        keras:  theta <- theta - (theta * wd) * lr          then the Adam step
        optax:  d <- d + wd * theta on the Adam direction d, then theta <- theta + (-lr) * d

    (``optax.nadamw`` is ``AdamW(..., nesterov=True, convention="optax")``.)
    """

    _DEFAULTS = {
        conv: {**d, "weight_decay": {"torch": 1e-2, "keras": 4e-3, "optax": 1e-4}[conv]}
        for conv, d in Adam._DEFAULTS.items()
    }

    def __init__(self, lr=None, betas=None, eps=None, weight_decay=None, amsgrad=False, *,
                 maximize=False, eps_root=None, nesterov=False, mu_dtype=None,
                 convention="torch", state_format=None, master_weights=False, update="nearest",
                 seed=0, num_threads=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, eps_root=eps_root, nesterov=nesterov,
                         mu_dtype=mu_dtype, convention=convention,
                         state_format=state_format, master_weights=master_weights,
                         update=update, seed=seed, num_threads=num_threads)

    def _check(self):
        super()._check()
        if not self.decoupled_weight_decay:
            raise ValueError("AdamW's weight decay is decoupled (use Adam for L2)")
