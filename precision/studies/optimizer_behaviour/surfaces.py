"""The test surfaces and the small classifier of the optimizer-behaviour study.

Every surface is a function of two parameters with a known minimum value f*, so the excess
f(θ) − f* is known exactly enough (float64 evaluation at the format's values: the terms cancel at
most to ~1e-16 relative, far below every excess the study reports).  Gradients are computed in
float64 at the parameters the run holds and rounded once into the format (``gradient_in``): the study
measures what the *optimizer* does in each format, not the error of a gradient computed in it.

* ``quadratic``: ill-conditioned, κ = 50, rotated by 30°, minimum at c = (1, 1):
  f = ½ (θ − c)ᵀ Rᵀ diag(0.2, 10) R (θ − c).
* ``rosenbrock``: the long curved valley f = (1 − x)² + 100 (y − x²)², minimum (1, 1), f* = 0.
* ``saddle``: f = ½ x² + ¼ y⁴ − ½ y², a saddle at the origin, minima (0, ±1), f* = −¼; the run
  starts beside the saddle (y = 1e-3) and must escape it.
* ``flip``: a pseudo-Huber bowl whose gradient keeps its magnitude and flips direction when the
  path crosses the minimum (width δ = 0.05): f = √(δ² + (x − 1)²) + ½ √(δ² + (y − 1)²) − 3δ/2.

The classifier: softmax regression (3 classes, 4 features and a bias) on 240 points of three
overlapping Gaussian blobs, loss = mean cross-entropy through ``precision.softmax_cross_entropy`` in
the format (logits X̃W computed in float64 and rounded once; its gradient with respect to the logits
in the format; ∇W = X̃ᵀ G in float64, rounded once).  f* comes from Newton's method in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from precision import formats as _formats

__all__ = ["Surface", "SURFACES", "surface", "Classifier", "classifier", "PROBLEMS", "gradient_in"]


@dataclass(frozen=True)
class Surface:
    name: str
    formula: str
    f: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    start: tuple
    minimum: tuple          # one minimiser (for the plots)
    f_star: float
    xlim: tuple
    ylim: tuple

    def excess(self, theta) -> float:
        return float(self.f(np.asarray(theta, dtype=np.float64))) - self.f_star


# ----------------------------------------------------------------------------------- quadratic
_ANGLE = math.pi / 6
_R = np.array([[math.cos(_ANGLE), math.sin(_ANGLE)], [-math.sin(_ANGLE), math.cos(_ANGLE)]])
QUADRATIC_EIGENVALUES = (0.2, 10.0)
_H = _R.T @ np.diag(QUADRATIC_EIGENVALUES) @ _R
_C = np.array([1.0, 1.0])


def _quadratic_f(t):
    d = t - _C
    return 0.5 * float(d @ _H @ d)


def _quadratic_grad(t):
    return _H @ (t - _C)


# ---------------------------------------------------------------------------------- rosenbrock
def _rosenbrock_f(t):
    x, y = t
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def _rosenbrock_grad(t):
    x, y = t
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


# ------------------------------------------------------------------------------------- saddle
def _saddle_f(t):
    x, y = t
    return 0.5 * x * x + 0.25 * y ** 4 - 0.5 * y * y


def _saddle_grad(t):
    x, y = t
    return np.array([x, y ** 3 - y])


# --------------------------------------------------------------------------------------- flip
FLIP_WIDTH = 0.05


def _flip_f(t):
    dx, dy = t[0] - 1.0, t[1] - 1.0
    d2 = FLIP_WIDTH * FLIP_WIDTH
    return math.sqrt(d2 + dx * dx) + 0.5 * math.sqrt(d2 + dy * dy) - 1.5 * FLIP_WIDTH


def _flip_grad(t):
    dx, dy = t[0] - 1.0, t[1] - 1.0
    d2 = FLIP_WIDTH * FLIP_WIDTH
    return np.array([dx / math.sqrt(d2 + dx * dx), 0.5 * dy / math.sqrt(d2 + dy * dy)])


SURFACES = {
    "quadratic": Surface("quadratic", "½(θ−c)ᵀH(θ−c), eigenvalues 0.2 and 10 (κ = 50), rotated 30°, c = (1, 1)",
                         _quadratic_f, _quadratic_grad, (-2.0, 2.5), (1.0, 1.0), 0.0,
                         (-2.6, 2.6), (-1.0, 3.0)),
    "rosenbrock": Surface("rosenbrock", "(1 − x)² + 100 (y − x²)²", _rosenbrock_f, _rosenbrock_grad,
                          (-1.2, 1.0), (1.0, 1.0), 0.0, (-1.6, 1.6), (-0.6, 1.8)),
    "saddle": Surface("saddle", "½x² + ¼y⁴ − ½y² (saddle at 0, minima (0, ±1))", _saddle_f, _saddle_grad,
                      (1.5, 1e-3), (0.0, 1.0), -0.25, (-1.8, 1.8), (-0.6, 1.6)),
    "flip": Surface("flip", "√(δ² + (x−1)²) + ½√(δ² + (y−1)²) − 3δ/2, δ = 0.05", _flip_f, _flip_grad,
                    (-1.5, -0.5), (1.0, 1.0), 0.0, (-1.8, 2.2), (-0.8, 1.8)),
}


def surface(name: str) -> Surface:
    return SURFACES[name]


def gradient_in(grad64: np.ndarray, fmt) -> np.ndarray:
    """A float64 gradient rounded once into the format (an array of the format's dtype)."""
    fmt = _formats.format(fmt)
    return np.ascontiguousarray(fmt.round(np.asarray(grad64, dtype=np.float64)).astype(fmt.dtype))


# ---------------------------------------------------------------------------------- classifier
class Classifier:
    """Softmax regression on fixed synthetic data (see the module docstring)."""

    name = "classifier"
    n_points = 240
    n_features = 4
    n_classes = 3

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(1000 + seed)
        centers = rng.normal(0.0, 1.0, size=(self.n_classes, self.n_features))
        labels = np.arange(self.n_points) % self.n_classes
        x = centers[labels] + rng.normal(0.0, 1.0, size=(self.n_points, self.n_features))
        self.X = np.hstack([x, np.ones((self.n_points, 1))])       # bias column
        self.y = labels.astype(np.int64)
        self.shape = (self.n_features + 1, self.n_classes)
        self.start = np.zeros(self.shape)
        self.f_star = self._newton_minimum()

    def loss64(self, W) -> float:
        z = self.X @ np.asarray(W, dtype=np.float64)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(self.n_points), self.y]))

    def _grad64(self, W):
        z = self.X @ W
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(self.n_points), self.y] -= 1.0
        return self.X.T @ p / self.n_points

    def _newton_minimum(self) -> float:
        # the loss is invariant to adding a constant per row of W across classes: fix the last
        # class's column at 0 and run Newton on the rest (strictly convex: the blobs overlap)
        k, c = self.shape[0], self.n_classes - 1
        W = np.zeros(self.shape)
        for _ in range(50):
            z = self.X @ W
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            g = self._grad64(W)[:, :c].T.reshape(-1)
            H = np.zeros((c * k, c * k))
            for a in range(c):
                for b in range(c):
                    w = p[:, a] * ((a == b) - p[:, b])
                    H[a * k:(a + 1) * k, b * k:(b + 1) * k] = (self.X.T * w) @ self.X / self.n_points
            step = np.linalg.solve(H, g)
            W[:, :c] -= step.reshape(c, k).T
            if np.max(np.abs(step)) < 1e-15:
                break
        return self.loss64(W)

    def excess(self, W) -> float:
        return self.loss64(W) - self.f_star

    def gradient(self, W, fmt) -> np.ndarray:
        """∇W in the format: logits rounded once, the loss kernel's gradient, X̃ᵀG rounded once."""
        from precision import softmax_cross_entropy

        fmt = _formats.format(fmt)
        logits = fmt.round(self.X @ np.asarray(W, dtype=np.float64)).astype(fmt.dtype)
        _, g = softmax_cross_entropy(logits, self.y, return_grad=True)
        return gradient_in(self.X.T @ np.asarray(g, dtype=np.float64), fmt)


_CLASSIFIERS: dict = {}


def classifier(seed: int = 0) -> Classifier:
    if seed not in _CLASSIFIERS:
        _CLASSIFIERS[seed] = Classifier(seed)
    return _CLASSIFIERS[seed]


PROBLEMS = tuple(SURFACES) + ("classifier",)
