"""torch's benchmark rows (used by timed.py, in the fresh process of a torch row only: the
numpy and precision rows never import this module, so torch never shares a process with them).
torch itself is imported inside each setup, so even importing this module loads no torch."""
from tests.bench.timed import _adam_data, _loss_data


def setup_loss_torch(n, c, fmt, threads):
    import torch

    torch.set_num_threads(threads)
    x64, t64 = _loss_data(n, c)
    xt, tt = torch.from_numpy(x64.astype(fmt)), torch.from_numpy(t64.astype(fmt))

    def call():
        leaf = xt.detach().requires_grad_(True)
        torch.nn.functional.cross_entropy(leaf, tt).backward()
    return call


def setup_adam_torch(fmt, threads):
    import torch

    torch.set_num_threads(threads)
    p, g = (a.astype(fmt) for a in _adam_data(fmt))
    pt = torch.from_numpy(p)
    pt.grad = torch.from_numpy(g)
    opt = torch.optim.Adam([pt], lr=1e-3, fused=True)
    return opt.step
