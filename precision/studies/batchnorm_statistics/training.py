"""Part 6 of the batch-norm statistics study: a small network with batch norm, trained at
batch sizes 2 ... 256, evaluated with batch, running and exact population statistics.

The task: 16 input features with very different offsets and scales (so normalisation matters),
labelled by a random two-layer tanh teacher into 4 classes.  The network: Linear(16, 32) ->
BatchNorm -> ReLU -> Linear(32, 32) -> BatchNorm -> ReLU -> Linear(32, 4), float32 throughout:
products through ``precision.linalg.matmul``, the layers through ``precision.batchnorm``
(``batch_norm`` / ``batch_norm_backward``, PyTorch's convention: momentum 0.1, unbiased running
variance, eps 1e-5), the loss through ``precision.softmax_cross_entropy``.  SGD with momentum 0.9
(PyTorch's form v = 0.9 v + g, w -= lr v), lr = 0.05 B / 32 (linear scaling, as Wu & He 2018 and
Goyal et al. 2017), the same number of epochs at every batch size.
"""
from __future__ import annotations

import numpy as np

from precision import batchnorm as _bn
from precision import formats as _formats
from precision import stats as _stats
from precision.linalg import matmul
from precision.losses import softmax_cross_entropy
from .exact import column_moments

BATCH_SIZES = [2, 4, 8, 16, 32, 64, 256]
IN, HIDDEN, CLASSES = 16, 32, 4
BASE_LR, BASE_BATCH, MOMENTUM = 0.05, 32, 0.9


def make_task(seed, n_train, n_test):
    rng = np.random.default_rng([seed, 6, 0])
    n = n_train + n_test
    z = rng.standard_normal((n, IN))
    teacher1 = rng.standard_normal((IN, 24)) / np.sqrt(IN)
    teacher2 = rng.standard_normal((24, CLASSES)) * 2.0
    labels = np.argmax(np.tanh(z @ teacher1 * 2.0) @ teacher2, axis=1)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(20.0), IN))
    offsets = rng.uniform(-10.0, 10.0, IN)
    x = (z * scales + offsets).astype(np.float32)
    return (x[:n_train], labels[:n_train].astype(np.int64), x[n_train:],
            labels[n_train:].astype(np.int64))


class Net:
    def __init__(self, seed):
        rng = np.random.default_rng([seed, 6, 1])
        f32 = np.float32
        self.params = {
            "w1": (rng.standard_normal((IN, HIDDEN)) * np.sqrt(2.0 / IN)).astype(f32),
            "g1": np.ones(HIDDEN, f32), "b1": np.zeros(HIDDEN, f32),
            "w2": (rng.standard_normal((HIDDEN, HIDDEN)) * np.sqrt(2.0 / HIDDEN)).astype(f32),
            "g2": np.ones(HIDDEN, f32), "b2": np.zeros(HIDDEN, f32),
            "w3": (rng.standard_normal((HIDDEN, CLASSES)) * np.sqrt(1.0 / HIDDEN)).astype(f32),
            "c3": np.zeros(CLASSES, f32)}
        self.velocity = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running = [_bn.RunningStats(HIDDEN, convention="torch"),
                        _bn.RunningStats(HIDDEN, convention="torch")]

    def forward(self, x, mode, stats=None, update=True):
        """mode "train" (batch statistics; the running ones updated when ``update``), "batch"
        (batch statistics, nothing updated), or "fixed" (``stats``: two RunningStats to normalise
        with).  Returns logits and the cache for backward."""
        p = self.params
        cache = {"x": x}
        a = x
        for i, (w, g, b) in enumerate((("w1", "g1", "b1"), ("w2", "g2", "b2"))):
            h = matmul(np.ascontiguousarray(a), p[w])
            if mode == "fixed":
                y = _bn.batch_norm(h, p[g], p[b], running=stats[i], training=False)
                saved = None
            else:
                rs = self.running[i] if (mode == "train" and update) else None
                y, mean, invstd = _bn.batch_norm(h, p[g], p[b], running=rs, return_saved=True)
                saved = (mean, invstd)
            cache[f"h{i}"], cache[f"y{i}"], cache[f"s{i}"], cache[f"a{i}"] = h, y, saved, a
            a = np.maximum(y, np.float32(0))
        cache["a2"] = a
        logits = matmul(a, p["w3"]) + p["c3"]
        return logits, cache

    def step(self, x, labels, lr):
        p = self.params
        logits, cache = self.forward(x, "train")
        loss, g = softmax_cross_entropy(logits, labels, return_grad=True)
        grads = {"w3": matmul(np.ascontiguousarray(cache["a2"].T), g),
                 "c3": _stats.sum(g, axis=0)}
        da = matmul(g, np.ascontiguousarray(p["w3"].T))
        for i, (w, gg, b) in reversed(list(enumerate((("w1", "g1", "b1"), ("w2", "g2", "b2"))))):
            dy = np.where(cache[f"y{i}"] > 0, da, np.float32(0))
            mean, invstd = cache[f"s{i}"]
            dh, grads[gg], grads[b] = _bn.batch_norm_backward(dy, cache[f"h{i}"], p[gg],
                                                              mean=mean, invstd=invstd)
            grads[w] = matmul(np.ascontiguousarray(cache[f"a{i}"].T), dh)
            if i:
                da = matmul(dh, np.ascontiguousarray(p[w].T))
        lr32, mom32 = np.float32(lr), np.float32(MOMENTUM)
        for k in p:
            self.velocity[k] = mom32 * self.velocity[k] + grads[k]
            p[k] -= lr32 * self.velocity[k]
        return float(loss), cache

    def population(self, x):
        """The exact population statistics of both layers over x under the current weights,
        layer by layer (layer 2's inputs normalised with layer 1's population statistics)."""
        stats = []
        a = x
        p = self.params
        for i, (w, g, b) in enumerate((("w1", "g1", "b1"), ("w2", "g2", "b2"))):
            h = matmul(np.ascontiguousarray(a), p[w])
            m, v = column_moments(h)
            rs = _bn.RunningStats(HIDDEN, convention="keras")       # holds biased statistics
            rs.mean[...] = _formats.float32.round(m)
            rs.var[...] = _formats.float32.round(v)
            stats.append(rs)
            y = _bn.batch_norm(h, p[g], p[b], running=rs, training=False)
            a = np.maximum(y, np.float32(0))
        return stats


def _accuracy(net, x, labels, mode, batch=None, stats=None):
    if mode == "batch":
        correct = 0
        for start in range(0, len(x) - batch + 1, batch):
            logits, _ = net.forward(x[start:start + batch], "batch")
            correct += int(np.sum(np.argmax(logits, axis=1) == labels[start:start + batch]))
        return correct / (len(x) // batch * batch)
    logits, _ = net.forward(x, "fixed", stats=stats)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def train(batch, seed, size, *, epochs=None, n_train=None):
    """One cell: train at ``batch`` and evaluate four ways (epochs, n_train: the size's defaults)."""
    n_train = n_train or {"smoke": 256, "quick": 2048, "full": 4096}[size]
    n_test = 4096 if size != "smoke" else 512
    epochs = epochs or {"smoke": 2, "quick": 8, "full": 30}[size]
    x, y, xt, yt = make_task(seed, n_train, n_test)
    net = Net(seed)
    rng = np.random.default_rng([seed, 6, 2, batch])
    lr = BASE_LR * batch / BASE_BATCH
    losses = []
    cumulative = None
    steps = 0
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        last = epoch == epochs - 1
        if last:   # torch's momentum=None over the last epoch: Ioffe & Szegedy's Algorithm 2
            cumulative = [_bn.RunningStats(HIDDEN, convention="torch", momentum=None)
                          for _ in range(2)]
        total = 0.0
        for start in range(0, n_train - batch + 1, batch):
            rows = order[start:start + batch]
            loss, cache = net.step(x[rows], y[rows], lr)
            steps += 1
            total += loss
            if last:
                for i in range(2):
                    m, v = _stats.moments(cache[f"h{i}"], axis=0)
                    cumulative[i].update(m, v, batch)
            if not np.isfinite(loss):
                break
        losses.append(total / (n_train // batch))
        if not np.isfinite(losses[-1]):
            break
    population = net.population(x)
    out = {"batch": batch, "lr": lr, "epochs": epochs, "steps": steps, "n_train": n_train,
           "n_test": n_test, "train_loss": np.array(losses)}
    evals = {"running": {"stats": net.running}, "population": {"stats": population},
             "last-epoch cumulative": {"stats": cumulative}}
    out["test_acc_batch"] = _accuracy(net, xt, yt, "batch", batch=batch)
    out["train_acc_batch"] = _accuracy(net, x, y, "batch", batch=batch)
    for name, spec in evals.items():
        key = name.replace(" ", "_").replace("-", "_")
        out[f"test_acc_{key}"] = _accuracy(net, xt, yt, "fixed", stats=spec["stats"])
        out[f"train_acc_{key}"] = _accuracy(net, x, y, "fixed", stats=spec["stats"])
    # the cost of exact population statistics: one forward pass over the training set, against
    # epochs x (forward + backward ~ 3 forward passes) of training
    out["population_cost_fraction"] = 1.0 / (3.0 * epochs)
    return out
