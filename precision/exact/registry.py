"""Which emulated twin judges which kernel: one table, read by the tests (bottleneck's slow/).

    from precision.exact import registry
    for pairing in registry.pairings("rows"):
        fast = pairing.fast()                    # precision.losses.softmax, ...
        twin = pairing.twin("float32")           # emulate("float32").losses().softmax, ...
        assert same_bits(fast(x, accum="float32"), twin(x))

Every public kernel of the library is paired here, by name, with its twin in
``precision.exact`` (the fast function's own algorithm replayed op by op through
:func:`precision.exact.emulate`).  The tests compare each pairing on the inputs of its
*signature*, the calling shape that fast function and twin share, so a new kernel with an
existing signature is tested against its twin by being registered (:func:`register`), and a test
fails for a public kernel without a pairing.  Signatures (``A``: the emulated arithmetic):

* ``"rows"``: ``fast(x, accum=A)`` and ``twin(x)`` -- logsumexp, softmax, log_softmax;
* ``"cross_entropy"``: ``fast(logits, targets, reduction=, label_smoothing=, return_grad=,
  accum=A)`` and ``twin(logits, targets, reduction=, label_smoothing=, return_grad=)``
  (rows the kernel refines are judged against the exact gradient instead: see
  :mod:`precision.exact.losses`);
* ``"distributions"``: ``fast(targets, logits, reduction=, accum=A)`` / ``twin(targets, logits,
  reduction=)`` -- kl_divergence;
* ``"probabilities"``: ``fast(probs, reduction=, accum=A)`` / ``twin(probs, reduction=)`` --
  entropy;
* ``"logit_pairs"``: ``fast(logits_p, logits_q, reduction=, accum=A)`` / ``twin(logits_p,
  logits_q, reduction=)`` -- rl.categorical_kl (its twin calls the kernels' own transcendentals);
* ``"optimizer"``: ``fast`` is an optimizer class; ``twin(opt)`` builds the
  :class:`~precision.exact.optim.EmulatedOptimizer` of an instance ``opt`` with state format A,
  and both step their own copy of a parameter.

Every pairing promises bit-identity (any NaN equal to any NaN), with the loss twins run with
``transcendentals="kernel"`` where A is float32 or float64 (``twin(A, transcendentals=...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from .emulate import emulate

__all__ = ["Pairing", "SIGNATURES", "PAIRINGS", "register", "pairings", "pairing"]

SIGNATURES = ("rows", "cross_entropy", "distributions", "probabilities", "optimizer",
              "logit_pairs")


@dataclass(frozen=True)
class Pairing:
    """A kernel and its twin.  ``fast``: the dotted path of the fast callable; ``twin``: the
    dotted path of the twin from ``emulate(A)``, where ``losses`` (the loss twins' factory)
    takes the options of :meth:`twin`; ``signature``: one of ``SIGNATURES``."""

    name: str
    fast_path: str
    twin_path: str
    signature: str

    def fast(self):
        """The fast callable (imported on first use: the tables need no compiled module)."""
        module, _, attr = self.fast_path.rpartition(".")
        return getattr(import_module(module), attr)

    def twin(self, arith, **options):
        """The twin in arithmetic ``arith``; ``options`` go to the factory of its family
        (``transcendentals=`` for the loss twins)."""
        parts = self.twin_path.split(".")
        if len(parts) == 1 and options:
            raise TypeError(f"the twin of {self.name} takes no options, got {sorted(options)}")
        target = emulate(arith)
        for k, part in enumerate(parts):
            target = getattr(target, part)
            if k < len(parts) - 1:
                target = target(**options)
        return target


PAIRINGS: dict[str, Pairing] = {}


def register(name: str, fast: str, twin: str, signature: str) -> Pairing:
    """Pair the kernel ``fast`` (a dotted path) with ``twin`` (a path from ``emulate(A)``);
    the tests of ``signature`` then compare them.  A name is registered once."""
    if signature not in SIGNATURES:
        raise ValueError(f"signature must be one of {SIGNATURES}, got {signature!r}")
    if name in PAIRINGS:
        raise ValueError(f"{name!r} is already paired with {PAIRINGS[name].twin_path!r}")
    PAIRINGS[name] = Pairing(name, fast, twin, signature)
    return PAIRINGS[name]


def pairings(signature: str | None = None) -> list[Pairing]:
    """The registered pairings (of one signature), in registration order."""
    if signature is not None and signature not in SIGNATURES:
        raise ValueError(f"signature must be one of {SIGNATURES}, got {signature!r}")
    return [p for p in PAIRINGS.values() if signature is None or p.signature == signature]


def pairing(name: str) -> Pairing:
    """The pairing of a kernel, by name (KeyError if it has no twin)."""
    return PAIRINGS[name]


for _name in ("logsumexp", "softmax", "log_softmax"):
    register(_name, f"precision.losses.{_name}", f"losses.{_name}", "rows")
register("softmax_cross_entropy", "precision.losses.softmax_cross_entropy",
         "losses.softmax_cross_entropy", "cross_entropy")
register("kl_divergence", "precision.losses.kl_divergence", "losses.kl_divergence",
         "distributions")
register("entropy", "precision.losses.entropy", "losses.entropy", "probabilities")
register("rl.categorical_kl", "precision.rl.categorical_kl", "categorical_kl", "logit_pairs")
for _name in ("SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW"):
    register(f"optim.{_name}", f"precision.optim.{_name}", "optimizer", "optimizer")
del _name
