"""Twins of :func:`precision.parallel.allreduce`: the exact value and the emulated algorithm.

* :func:`allreduce_exact`: the mathematical sum or mean of the stored inputs, Σ g_i (/ k), exact
  (rational arithmetic), returned as mpmath ``mpf`` with ``dps`` digits; it does not depend on the
  algorithm, the divide mode or the formats.
* :func:`allreduce_emulated`: the kernel's algorithm op by op through
  ``precision.exact.emulate`` (each + and / rounded once into A, then into the wire format W,
  the result into S), element by element.  The kernel must be bit-identical to it.

The orders (:func:`reduction_order`) are written here once as plain Python over a list of
contributions and an ``add``; the kernel (kernels/parallel.pyx.tp) implements the same ones.
"""
from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np

from precision import formats as _formats
from precision.parallel import (
    ALGORITHMS,
    DIRECTIONS,
    SCALINGS,
    _wire_format,
    gloo_ring_chunk_size,
    ring_chunk_size,
    scale_factors,
)

from .emulate import emulate, pairwise_sum
from .mp import DEFAULT_DPS

__all__ = ["allreduce_exact", "allreduce_emulated", "reduction_order", "ring_order"]


def ring_order(c: int, k: int, direction: str = "ascending") -> list:
    """The workers whose contributions chunk c's partial sum takes up, in order: ascending (NCCL)
    c+1, c+2, ..., c; descending (gloo) c−1, c−2, ..., c (mod k).  Step i computes
    s = b_{order[i]} ⊕ s; the owner c adds last."""
    step = 1 if direction == "ascending" else -1
    return [(c + step * (i + 1)) % k for i in range(k)]


def _fold(values, add):
    """MPICH's prelude: b_{2i+1} = b_{2i} ⊕ b_{2i+1} for i < r = k − p; the p participants."""
    k = len(values)
    p = 1
    while p * 2 <= k:
        p *= 2
    r = k - p
    return [add(values[2 * i + 1], values[2 * i]) for i in range(r)] + list(values[2 * r:])


def reduction_order(values, add, algorithm: str, *, chunk: int = 0, direction: str = "ascending"):
    """Σ values (one per worker) with ``add`` in the named algorithm's order (see
    :func:`precision.parallel.allreduce`); ``chunk``: the ring chunk the element lies in."""
    values = list(values)
    k = len(values)
    if algorithm == "sequential":
        s = values[0]
        for v in values[1:]:
            s = add(s, v)
        return s
    if algorithm == "ring":
        order = ring_order(chunk, k, direction)
        s = values[order[0]]
        for r in order[1:]:
            s = add(s, values[r])
        return s
    if algorithm == "tree":
        q = _fold(values, add)
        d = 1
        while d < len(q):
            for j in range(0, len(q), 2 * d):
                q[j] = add(q[j], q[j + d])
            d *= 2
        return q[0]
    if algorithm == "halving_doubling":
        q = _fold(values, add)
        d = len(q) // 2
        while d >= 1:
            for j in range(d):
                q[j] = add(q[j], q[j + d])
            d //= 2
        return q[0]
    if algorithm == "pairwise":
        return pairwise_sum(values, add, 0.0)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def _as_float64_rows(grads) -> tuple:
    g = np.asarray(grads)
    fmt = _formats.of(g)
    if g.ndim < 1 or g.shape[0] < 1 or g[0].size < 1:
        raise ValueError(f"grads must have shape (k, ...) with k >= 1 and elements, got {g.shape}")
    with np.errstate(invalid="ignore"):
        rows = g.reshape(g.shape[0], -1).astype(np.float64)
    return fmt, rows


def allreduce_emulated(grads, op: str = "mean", *, algorithm: str = "ring",
                       direction: str = "ascending", chunk_size=None, divide=None,
                       factor=None, scaling: str = "div", wire_format=None, accum=None):
    """The result of :func:`precision.parallel.allreduce` (one worker's, shape grads.shape[1:], dtype
    of grads) computed op by op with correctly rounded emulated arithmetic."""
    S, rows = _as_float64_rows(grads)
    k, n = rows.shape
    A = _formats.arithmetic_format(accum, S)
    W = A if wire_format is None else _wire_format(wire_format, A)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if direction not in DIRECTIONS or scaling not in SCALINGS:
        raise ValueError("bad direction or scaling")
    if chunk_size is None:
        chunk = ring_chunk_size(n, k)
    elif chunk_size == "gloo":
        chunk = gloo_ring_chunk_size(n, k, W.bits // 8)
    else:
        chunk = int(chunk_size)
    EA, EW, ES = emulate(A), emulate(W), emulate(S)
    f_pre, f_post = scale_factors(k, op, divide, factor)

    def scaler(f):
        if f == 1:
            return None
        if scaling == "div":
            fa = EA.round(f)
            return lambda x: EW.round(EA.div(x, fa))
        ca = EA.round(1 / f)
        return lambda x: EW.round(EA.mul(x, ca))

    pre, post = scaler(f_pre), scaler(f_post)

    def add(a, b):
        return EW.round(EA.add(a, b))

    result = np.empty(n, dtype=np.float64)
    for j in range(n):
        b = [EW.round(float(v)) for v in rows[:, j]]
        if pre is not None:
            b = [pre(v) for v in b]
        t = reduction_order(b, add, algorithm, chunk=j // chunk, direction=direction)
        if post is not None:
            t = post(t)
        result[j] = ES.round(t)
    return S.round(result).reshape(np.shape(grads)[1:])


def allreduce_exact(grads, op: str = "mean", *, dps: int = DEFAULT_DPS):
    """Σ_i g_i (op="sum") or Σ_i g_i / k (op="mean") of the stored values, exactly (rationals),
    as an object array of mpmath ``mpf`` with ``dps`` significant digits, shape grads.shape[1:].
    Non-finite inputs: NaN if any NaN or +inf and −inf meet, else the infinity."""
    _, rows = _as_float64_rows(grads)
    k, n = rows.shape
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    out = np.empty(n, dtype=object)
    with mpmath.workdps(dps):
        for j in range(n):
            col = rows[:, j]
            if not np.all(np.isfinite(col)):
                with np.errstate(invalid="ignore"):
                    out[j] = mpmath.mpf(float(np.sum(col)))
                continue
            s = sum((Fraction(v) for v in col.tolist()), Fraction(0))
            if op == "mean":
                s /= k
            out[j] = mpmath.mpf(s.numerator) / s.denominator
    return out.reshape(np.shape(grads)[1:])
