"""One rank of the gloo peer test (tests/test_parallel_gloo.py): all-reduces and DDP steps on
inputs every rank derives from the same seed; rank 0 writes the results to a file.

Run as ``python -m tests.gloo_worker RANK WORLD PORT OUTFILE`` (the test starts and stops the
processes); kept out of the test module so a child process imports only torch and numpy.
"""
import os
import pickle
import sys


# 10 and 9: gloo's ring chunk 2·ceil(n/2k) differs from ceil(n/k) at k = 4
N_VALUES = (1, 9, 10, 37, 1000)


def inputs(world: int, n: int, seed: int):
    """(world, n) float64 values of very different magnitudes and both signs, so that different
    summation orders round differently: m·2^e, m uniform in [1, 2), e in [-12, 12], random signs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mant = rng.uniform(1, 2, (world, n))
    exp = rng.integers(-12, 13, (world, n))
    sign = rng.choice([-1.0, 1.0], (world, n))
    return sign * mant * np.exp2(exp)


def ddp_batch(rank: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed + rank)
    x = rng.standard_normal((4, 6)) * 10.0 ** (rank - 1)
    y = rng.standard_normal((4, 3))
    return x, y


def main():
    rank, world, port, outfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE=str(world), RANK=str(rank))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import datetime

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    results = {"allreduce": {}, "avg_error": {}, "ddp": {}}
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16),
                        ("bfloat16", torch.bfloat16)):
        for n in N_VALUES:
            data = inputs(world, n, seed=n)
            t = torch.tensor(data[rank]).to(dtype)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            results["allreduce"][(name, n)] = t.to(torch.float64).numpy()
        try:
            t = torch.ones(3, dtype=dtype)
            dist.all_reduce(t, op=dist.ReduceOp.AVG)
            results["avg_error"][name] = None
        except Exception as error:  # noqa: BLE001 - the message is the finding
            results["avg_error"][name] = f"{type(error).__name__}: {error}"

    for hook in (None, "fp16", "bf16"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
        x, y = (torch.tensor(a, dtype=torch.float32) for a in ddp_batch(rank, seed=7))
        # the local gradient, without DDP
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        local = [p.grad.detach().clone().numpy() for p in model.parameters()]
        model.zero_grad()
        ddp = DDP(model)
        if hook == "fp16":
            ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        elif hook == "bf16":
            # DDP refuses bf16_compress_hook by name unless CUDA+NCCL>=2.10 (or XPU); the same
            # function under another name runs on gloo, which sums bfloat16 on CPU.
            try:
                ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
                results["bf16_hook_refused"] = None
            except TypeError as error:
                results["bf16_hook_refused"] = str(error)
                ddp.register_comm_hook(
                    None, lambda state, bucket: default_hooks.bf16_compress_hook(state, bucket))
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        averaged = [p.grad.detach().clone().numpy() for p in model.parameters()]
        gathered = [None] * world
        dist.all_gather_object(gathered, local)
        results["ddp"][hook] = {"local": gathered, "averaged": averaged}

    everyone = [None] * world
    dist.all_gather_object(everyone, results)
    if rank == 0:
        with open(outfile, "wb") as f:
            pickle.dump(everyone, f)
    dist.barrier()
    dist.destroy_process_group()
    del np


if __name__ == "__main__":
    main()
