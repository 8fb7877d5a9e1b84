"""The study's model: a one-hidden-layer ReLU network on a synthetic classification task, trained by
k simulated data-parallel workers with this project's kernels.

Data (:func:`make_data`): x ∈ {j/64 : |j| ≤ 256}^d (exact in every format, bfloat16 included:
|j| ≤ 256 needs 8 significant bits), labels from a random teacher network with Gumbel noise
(so the Bayes accuracy is below 100 %); a training set and a held-out test set.

Model, with x̃ = [x, 1] and h̃ = [relu(x̃ W1), 1] (the biases are rows of W1 and W2, summed by
matmul in its fixed pairwise order)::

    z = h̃ W2,   loss = softmax_cross_entropy(z, y, reduction="mean")

One worker's gradient on its shard (b rows), in storage format S with arithmetic A, every op rounded:

    G    = ∂loss/∂z                      (precision.softmax_cross_entropy, return_grad: (p − onehot)/b)
    ∇W2  = matmul(h̃ᵀ, G)
    δ    = [matmul(G, W2[:h]ᵀ)]·1{x̃ W1 > 0}      (the ReLU mask is exact)
    ∇W1  = matmul(x̃ᵀ, δ)

matmul computes each output element from one row of its left factor, so the forward pass and δ of
k workers are computed for the whole global batch at once (bit-identical to per-worker calls); the
per-worker parts are G (its 1/b) and the two sums over the shard's rows.  The k gradients are
flattened, stacked (k, P) and reduced by :func:`precision.parallel.allreduce`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import precision as pr
from precision import formats as _formats
from precision import parallel
from precision.linalg import matmul

INPUTS = 16
HIDDEN = 32
CLASSES = 4
TEACHER_HIDDEN = 24
LABEL_NOISE = 1.0        # Gumbel scale on the teacher's logits (standardised): Bayes accuracy < 1


@dataclass(frozen=True)
class Data:
    x: np.ndarray          # (N, d) float64, exact in every format
    y: np.ndarray          # (N,) int64 labels
    x_test: np.ndarray
    y_test: np.ndarray


def make_data(n_train: int, n_test: int, seed: int) -> Data:
    """A synthetic classification task: inputs on the 1/64 grid in [-4, 4], teacher-labelled."""
    rng = np.random.default_rng([seed, 13])
    n = n_train + n_test
    x = np.clip(np.round(rng.normal(size=(n, INPUTS)) * 64), -256, 256) / 64
    w1 = rng.normal(size=(INPUTS, TEACHER_HIDDEN)) / math.sqrt(INPUTS)
    w2 = rng.normal(size=(TEACHER_HIDDEN, CLASSES)) / math.sqrt(TEACHER_HIDDEN)
    z = np.tanh(x @ w1) @ w2
    z = (z - z.mean()) / z.std() * 3.0
    y = np.argmax(z + LABEL_NOISE * rng.gumbel(size=z.shape), axis=1).astype(np.int64)
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def init_params(seed: int) -> dict:
    """He-style initial weights in float64 (rounded to a format by :func:`as_format`)."""
    rng = np.random.default_rng([seed, 7])
    w1 = np.vstack([rng.normal(size=(INPUTS, HIDDEN)) * math.sqrt(2.0 / INPUTS), np.zeros((1, HIDDEN))])
    w2 = np.vstack([rng.normal(size=(HIDDEN, CLASSES)) * math.sqrt(1.0 / HIDDEN), np.zeros((1, CLASSES))])
    return {"w1": w1, "w2": w2}


def as_format(params: dict, fmt) -> dict:
    fmt = _formats.format(fmt)
    return {name: np.ascontiguousarray(fmt.round(value)) for name, value in params.items()}


def augment(x: np.ndarray, fmt) -> np.ndarray:
    """x̃ = [x, 1] in format fmt (exact: the data are on a 1/64 grid)."""
    fmt = _formats.format(fmt)
    return np.ascontiguousarray(fmt.round(np.hstack([x, np.ones((x.shape[0], 1))])))


PARAM_NAMES = ("w1", "w2")


def flatten(grads: dict) -> np.ndarray:
    return np.concatenate([grads[name].reshape(-1) for name in PARAM_NAMES])


def unflatten(vector: np.ndarray, like: dict) -> dict:
    out, start = {}, 0
    for name in PARAM_NAMES:
        size = like[name].size
        out[name] = np.ascontiguousarray(vector[start:start + size].reshape(like[name].shape))
        start += size
    return out


def worker_gradients(params: dict, xa: np.ndarray, y: np.ndarray, k: int, *, accum=None,
                     grad_scale: float = 1.0):
    """The k workers' gradients on k equal consecutive shards of (xa, y): ((k, P) array, (k,) losses).

    grad_scale (a power of two, so exact): G is multiplied by it before back-propagation -- a loss
    scale that moves every gradient by the same factor.
    """
    n = xa.shape[0]
    if n % k:
        raise ValueError(f"{n} rows do not split into {k} equal shards")
    b = n // k
    w1, w2 = params["w1"], params["w2"]
    dtype = w1.dtype
    zero = np.zeros((), dtype=dtype)
    one = np.ones((n, 1), dtype=dtype)
    pre = matmul(xa, w1, accum=accum)                          # row-wise: the same bits per worker
    hidden = np.ascontiguousarray(np.concatenate([np.where(pre > 0, pre, zero), one], axis=1))
    z = matmul(hidden, w2, accum=accum)
    g = np.empty_like(z)
    losses = np.empty(k, dtype=np.float64)
    for w in range(k):
        rows = slice(w * b, (w + 1) * b)
        loss, g[rows] = pr.softmax_cross_entropy(z[rows], y[rows], return_grad=True, accum=accum)
        losses[w] = float(loss)
    if grad_scale != 1.0:
        g = (g * np.asarray(grad_scale, dtype=dtype)).astype(dtype)
    delta = np.where(pre > 0, matmul(g, np.ascontiguousarray(w2[:-1].T), accum=accum), zero)
    out = np.empty((k, w1.size + w2.size), dtype=dtype)
    for w in range(k):
        rows = slice(w * b, (w + 1) * b)
        g1 = matmul(xa[rows].T, np.ascontiguousarray(delta[rows]), accum=accum)
        g2 = matmul(hidden[rows].T, np.ascontiguousarray(g[rows]), accum=accum)
        out[w, :w1.size] = g1.reshape(-1)
        out[w, w1.size:] = g2.reshape(-1)
    return out, losses


def gradient64(params: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mean-loss gradient over all rows of (x, y) at params (any format), in float64 (the
    reference against which a format's rounding is measured; its own error is ~1e-16 relative)."""
    w1, w2 = (np.asarray(params[name], dtype=np.float64) for name in PARAM_NAMES)
    xa = np.hstack([x, np.ones((x.shape[0], 1))])
    pre = xa @ w1
    hidden = np.hstack([np.maximum(pre, 0.0), np.ones((x.shape[0], 1))])
    z = hidden @ w2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(x.shape[0]), y] -= 1.0
    g = p / x.shape[0]
    delta = (g @ w2[:-1].T) * (pre > 0)
    return np.concatenate([(xa.T @ delta).reshape(-1), (hidden.T @ g).reshape(-1)])


def evaluate64(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model's parameters (any format) on (x, y), in float64."""
    w1, w2 = (np.asarray(params[name], dtype=np.float64) for name in PARAM_NAMES)
    if not (np.all(np.isfinite(w1)) and np.all(np.isfinite(w2))):
        return math.nan, math.nan
    xa = np.hstack([x, np.ones((x.shape[0], 1))])
    hidden = np.hstack([np.maximum(xa @ w1, 0.0), np.ones((x.shape[0], 1))])
    z = hidden @ w2
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    loss = float(np.mean(lse - z[np.arange(x.shape[0]), y]))
    accuracy = float(np.mean(np.argmax(z, axis=1) == y))
    return loss, accuracy


def allreduce_mean(grads: np.ndarray, **options) -> np.ndarray:
    """Worker 0's copy of the all-reduced gradient (every worker holds the same bits)."""
    return parallel.allreduce(grads, **options)[0]


def ulps_apart(a: np.ndarray, b: np.ndarray, reference: np.ndarray, fmt) -> np.ndarray:
    """|a − b| in units of the format's ulp at the reference value (float64 arrays out)."""
    fmt = _formats.format(fmt)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    spacing = np.asarray(fmt.ulp(fmt.round(np.abs(reference.astype(np.float64)))), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(a64 - b64) / spacing
