"""precision.batchnorm against torch.nn.functional.batch_norm (float32 and float64): outputs,
input/weight/bias gradients and running buffers.

Not bit-identical, by design: PyTorch's CPU kernel normalises as x * alpha + beta with
alpha = invstd * weight, beta = bias - mean * alpha (and may vectorise its sums in another
order), where precision rounds R(R(R(x - mean) * invstd) * weight) + bias, and its running
variance is M2 / (n - 1) where precision's is R(var * n / (n - 1)).  Each side's error against
the exact value is a few roundings of the largest term, so the comparison bound is

    |ours - torch| <= 16 u (|y| + |bias| + |x - mean| * invstd * |weight|)     outputs
    |ours - torch| <= 64 u * max|dy| * max|weight| * max invstd               input gradients
    |ours - torch| <= 16 u * sum|terms|                                       weight/bias grads
    |ours - torch| <= 8 u |buffer|                                            running buffers

(u the unit roundoff of the format): version-independent, since it only assumes each
implementation is a stable evaluation of the same formulas.
"""
import numpy as np
import pytest

from precision import batchnorm as bn

torch = pytest.importorskip("torch")
F = torch.nn.functional

U = {np.float32: 2.0 ** -24, np.float64: 2.0 ** -53}


def _case(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    return x, dy, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 4), (8, 3, 5, 5), (2, 6, 3, 3)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_forward_backward_and_buffers_match_torch(dtype, shape, momentum):
    u = U[dtype]
    for seed in range(3):
        x, dy, w, b = _case(dtype, shape, seed)
        c = shape[1]
        # torch: the module keeps num_batches_tracked, which momentum=None needs
        layer = torch.nn.BatchNorm1d(c, momentum=momentum, eps=1e-5) if len(shape) == 2 else \
            torch.nn.BatchNorm2d(c, momentum=momentum, eps=1e-5)
        layer = layer.to(torch.float64 if dtype == np.float64 else torch.float32)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
        rs = bn.RunningStats(c, convention="torch", momentum=momentum,
                             state_format=np.dtype(dtype).name)
        for _step in range(3):
            xt = torch.from_numpy(x).requires_grad_(True)
            yt = layer(xt)
            yt.backward(torch.from_numpy(dy))
            y, mean, invstd = bn.batch_norm(x, w, b, running=rs, return_saved=True)
            dx, dw, db = bn.batch_norm_backward(dy, x, w, mean=mean, invstd=invstd)

            axes = (0,) + tuple(range(2, len(shape)))
            bshape = (1, c) + (1,) * (len(shape) - 2)
            xhat = np.abs(x - mean.reshape(bshape)) * invstd.reshape(bshape)
            scale = np.abs(y) + np.abs(b).reshape(bshape) + xhat * np.abs(w).reshape(bshape)
            assert np.all(np.abs(y - yt.detach().numpy()) <= 16 * u * scale)
            big = np.abs(dy).max() * np.abs(w).max() * invstd.max()
            assert np.all(np.abs(dx - xt.grad.numpy()) <= 64 * u * big)
            assert np.all(np.abs(db - layer.bias.grad.numpy())
                          <= 16 * u * np.abs(dy).sum(axis=axes))
            assert np.all(np.abs(dw - layer.weight.grad.numpy())
                          <= 16 * u * (np.abs(dy) * xhat).sum(axis=axes) + 16 * u)
            rm = layer.running_mean.numpy()
            rv = layer.running_var.numpy()
            assert np.all(np.abs(rs.mean - rm) <= 8 * u * (np.abs(rm) + np.abs(x).max()))
            assert np.all(np.abs(rs.var - rv) <= 8 * u * np.abs(rv) + 8 * u)
            assert rs.num_batches_tracked == int(layer.num_batches_tracked)
            layer.zero_grad()
            x = (x * 1.1 + 0.3).astype(dtype)     # the next batch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_forward_and_backward_match_torch(dtype):
    u = U[dtype]
    x, dy, w, b = _case(dtype, (6, 3, 4, 4), 11)
    rng = np.random.default_rng(12)
    rm = rng.standard_normal(3).astype(dtype)
    rv = (rng.random(3) + 0.5).astype(dtype)
    rs = bn.RunningStats(3, state_format=np.dtype(dtype).name)
    rs.mean[...] = rm
    rs.var[...] = rv
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    yt = F.batch_norm(xt, torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy()), wt, bt,
                      training=False, eps=1e-5)
    yt.backward(torch.from_numpy(dy))
    y, mean, invstd = bn.batch_norm(x, w, b, running=rs, training=False, return_saved=True)
    dx, dw, db = bn.batch_norm_backward(dy, x, w, mean=mean, invstd=invstd, training=False)
    bshape = (1, 3, 1, 1)
    xhat = np.abs(x - rm.reshape(bshape)) * invstd.reshape(bshape)
    scale = np.abs(y) + np.abs(b).reshape(bshape) + xhat * np.abs(w).reshape(bshape)
    assert np.all(np.abs(y - yt.detach().numpy()) <= 16 * u * scale)
    assert np.all(np.abs(dx - xt.grad.numpy()) <= 8 * u * np.abs(xt.grad.numpy()) + 1e-300)
    assert np.all(np.abs(db - bt.grad.numpy()) <= 16 * u * np.abs(dy).sum(axis=(0, 2, 3)))
    assert np.all(np.abs(dw - wt.grad.numpy())
                  <= 16 * u * (np.abs(dy) * xhat).sum(axis=(0, 2, 3)) + 16 * u)
    assert np.all(rs.mean == rm) and np.all(rs.var == rv)     # inference leaves them alone
