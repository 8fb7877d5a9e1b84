"""Closed forms and exact recurrences the optimizer-behaviour study puts beside its measurements.

Nothing here calls an optimizer: these are the predictions the runs are checked against.

* **Response time** of a momentum buffer b ← μb + g after the gradient flips from +g to −g at steady
  state (b = g/(1 − μ)): after k flipped steps b_k = g/(1 − μ) · (2μ^k − 1), so the classical-momentum
  update (∝ b) flips at the first k with μ^k < ½, k = ⌈ln 2 / −ln μ⌉ (7 for μ = 0.9, 69 for 0.99);
  PyTorch's Nesterov update g + μb_k = g/(1 − μ)·(2μ^(k+1) − 1) flips one step earlier.  Distance
  still travelled the old way after the flip, in units of one plain step lr·|g|:
  Σ_{k < K} |2μ^k − 1|/(1 − μ) (classical), with μ^(k+1) for Nesterov.
* **Adagrad's stall**: G ← G ⊕ (g ⊗ g) in a format stops growing once g² is at most half an ulp of G
  (ties to even).  :func:`adagrad_stall` finds the step exactly by running the recurrence in the
  format, jumping across each binade in one move: inside a binade G ⊕ g² = G + δ with the constant
  δ = g² rounded to a multiple of ulp(G), so k steps add exactly kδ while the sum stays in the binade.
* **First steps without bias correction** (zero-initialised averages, ``v = (1 − ρ) g²``): RMSprop
  (eps outside the root) lr·|g|/(√(1 − ρ)|g| + ε) ≈ lr/√(1 − ρ); Adadelta lr·√ε·|g|/√((1 − ρ)g² + ε)
  ≈ lr·√ε/√(1 − ρ); Adam, bias-corrected, lr.
* **Window** of an average E ← ρE + (1 − ρ)x: the last N = 1/(1 − ρ) inputs hold 1 − ρ^N of the weight
  (65.1 % for ρ = 0.9, 63.4 % for ρ = 0.99).
"""
from __future__ import annotations

import math
from fractions import Fraction

from precision import formats as _formats
from precision.exact import emulate

__all__ = ["flip_step", "overshoot", "adagrad_stall", "rmsprop_first_step", "adadelta_first_step",
           "window_weight", "window_steps"]


def flip_step(mu: float, nesterov: bool = False) -> int:
    """First step after the flip whose update points the new way (exact arithmetic, this μ)."""
    mu = Fraction(mu)
    if mu == 0:
        return 1
    k, power = 0, Fraction(1)
    shift = 1 if nesterov else 0
    while True:
        k += 1
        power *= mu
        if 2 * power * (mu if shift else 1) < 1:
            return k


def overshoot(mu: float, nesterov: bool = False) -> float:
    """Distance travelled the old way after the flip, in plain steps lr·|g| (exact arithmetic)."""
    mu = float(mu)
    if mu == 0:
        return 0.0
    total, k = 0.0, 1
    while True:
        value = (2 * mu ** (k + (1 if nesterov else 0)) - 1) / (1 - mu)
        if value < 0:
            return total
        total += value
        k += 1


def adagrad_stall(g: float, fmt, initial: float = 0.0) -> dict:
    """Where G ← G ⊕ (g ⊗ g), every operation rounded to ``fmt``, stops growing.

    Returns ``{"last_growing_step": n, "accumulator": G_n, "increment": g ⊗ g}``: step n is the last
    whose addition changed G (from step n + 1 on, G ⊕ g² = G).  g is first rounded to the format.
    Exact: runs the recurrence in the format (``precision.exact.emulate``), crossing a binade at a
    time (module docstring), so float64's ~1e16 steps take a few hundred operations.
    """
    F = _formats.format(fmt)
    e = emulate(F)
    g = e.round(g)
    g2 = e.mul(g, g)
    G = e.round(initial)
    n = 0
    if g2 == 0:
        return {"last_growing_step": 0, "accumulator": G, "increment": g2}
    while True:
        nxt = e.add(G, g2)
        if nxt == G:
            return {"last_growing_step": n, "accumulator": G, "increment": g2}
        G, n = nxt, n + 1
        if G < F.tiny or math.isinf(G):      # subnormal or overflowed: single steps
            continue
        ulp = Fraction(float(F.ulp(G)))
        ratio = Fraction(g2) / ulp
        multiple = math.floor(ratio + Fraction(1, 2))
        if ratio - math.floor(ratio) == Fraction(1, 2) or multiple == 0:
            continue            # a tie (parity-dependent) or the stall itself: single steps
        delta = multiple * ulp
        top = Fraction(2) ** (math.floor(math.log2(G)) + 1)
        k = int((top - Fraction(G)) / delta) - 1
        if k > 0:
            G = float(Fraction(G) + k * delta)
            n += k


def rmsprop_first_step(alpha: float, g: float = 1.0, eps: float = 0.0) -> float:
    """|first update| / lr of RMSprop (eps outside the root, no bias correction), exact arithmetic."""
    return abs(g) / (math.sqrt(1 - alpha) * abs(g) + eps)


def adadelta_first_step(rho: float, eps: float, g: float = 1.0) -> float:
    """|first update| / lr of Adadelta from zero state (torch/Zeiler form), exact arithmetic."""
    return math.sqrt(eps) * abs(g) / math.sqrt((1 - rho) * g * g + eps)


def window_steps(rho: float) -> int:
    """N = round(1/(1 − ρ)): the 'effective window' of an exponential average."""
    return max(1, round(1.0 / (1.0 - rho))) if rho < 1 else 0


def window_weight(rho: float) -> float:
    """Weight the last 1/(1 − ρ) inputs hold in E ← ρE + (1 − ρ)x: 1 − ρ^N."""
    if rho >= 1:
        return 0.0
    return 1.0 - rho ** window_steps(rho)
