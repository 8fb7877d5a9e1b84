"""A real all-reduce as the peer: torch.distributed with gloo on localhost, world sizes 2 and 4.

The test starts the ranks itself (``python -m tests.gloo_worker``, MASTER_ADDR=127.0.0.1, a free
port), waits with a timeout (a hang fails, it does not hang CI) and kills whatever is left.  Each
rank all-reduces (SUM) float32, float16 and bfloat16 tensors whose values span 2^-12 .. 2^13 with
both signs -- different summation orders give different bits there -- and runs DDP on a tiny
model without a hook and with fp16_compress_hook / bf16_compress_hook.

What gloo computes (found from the bits, and it is what gloo/allreduce.cc does): its ring, data
flowing to rank - 1, chunk c owned by rank c, the partial sum of chunk c starting at rank c-1 and
rank c adding last (``direction="descending"``), chunks of 2·ceil(n/2k) elements
(``chunk_size="gloo"``); float16 and bfloat16 additions each rounded to the format (not
accumulated wider).  With k = 2 every order gives the same bits (one commutative addition), so
only k = 4 tells orders apart.  DDP's bucket is the parameters in registration order (one bucket
here) divided by k before the sum; its fp16/bf16 hooks cast, divide in the 16-bit format,
all-reduce, cast back.
"""
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from precision import parallel  # noqa: E402
from tests.gloo_worker import N_VALUES, inputs  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
WORLDS = (2, 4)
TIMEOUT = 180.0
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory):
    """{world: [rank 0's results, rank 1's, ...]} from one launch per world size (in parallel)."""
    tmp = tmp_path_factory.mktemp("gloo")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    procs, outs = [], {}
    try:
        for world in WORLDS:
            port = str(_free_port())
            outs[world] = tmp / f"world{world}.pkl"
            for rank in range(world):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.gloo_worker", str(rank), str(world), port,
                     str(outs[world])],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        deadline = time.monotonic() + TIMEOUT
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"gloo ranks did not finish within {TIMEOUT} s")
        failed = [p for p in procs if p.returncode != 0]
        if failed:
            pytest.fail("a gloo rank failed:\n" + failed[0].stderr.read().decode()[-3000:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()
    return {world: pickle.loads(outs[world].read_bytes()) for world in WORLDS}


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", DTYPES)
def test_gloo_sum_is_our_descending_ring_bit_for_bit(gloo_results, world, name):
    results = gloo_results[world]
    for n in N_VALUES:
        got = results[0]["allreduce"][(name, n)]
        for other in results[1:]:          # every rank holds the same bits
            np.testing.assert_array_equal(other["allreduce"][(name, n)], got)
        g = _stored(world, n, name)
        ours = parallel.allreduce(g, "sum", **parallel.GLOO_RING)
        assert np.all(ours == ours[0])
        np.testing.assert_array_equal(ours[0].astype(np.float64), got, err_msg=f"n={n}")


def _stored(world, n, name):
    """The values rank r held: the float64 inputs cast by torch, as a numpy array of the format."""
    g = torch.tensor(inputs(world, n, seed=n)).to(getattr(torch, name)).to(torch.float64).numpy()
    return g.astype(DTYPES[name])       # exact: g already holds values of the format


OTHER_ORDERS = {
    "ring ascending (NCCL)": {"algorithm": "ring"},
    "tree": {"algorithm": "tree"},
    "halving_doubling": {"algorithm": "halving_doubling"},
    "sequential": {"algorithm": "sequential"},
    "pairwise": {"algorithm": "pairwise"},
    "descending ring, ceil(n/k) chunks": {"algorithm": "ring", "direction": "descending"},
    "descending ring, float32 accumulation": dict(parallel.GLOO_RING, accum="float32"),
}


def test_orders_are_told_apart_at_four_ranks(gloo_results):
    """The inputs discriminate: at k = 4 every other order (or chunking, or a wider accumulator
    for the 16-bit formats) misses gloo's bits for some dtype and size."""
    missed = {label: False for label in OTHER_ORDERS}
    for name in DTYPES:
        for n in N_VALUES:
            g = _stored(4, n, name)
            got = gloo_results[4][0]["allreduce"][(name, n)]
            for label, kw in OTHER_ORDERS.items():
                if name == "float32" and "accum" in kw:
                    continue
                r = parallel.allreduce(g, "sum", **kw)[0].astype(np.float64)
                missed[label] |= not np.array_equal(r, got)
    assert all(missed.values()), missed


def test_gloo_has_no_avg(gloo_results):
    """ReduceOp.AVG is not supported by gloo (recorded, not required): DDP divides itself."""
    errors = gloo_results[2][0]["avg_error"]
    for name, error in errors.items():
        if error is not None:
            assert "AVG" in error or "avg" in error.lower() or "not supported" in error.lower()


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("hook", [None, "fp16", "bf16"])
def test_ddp_gradients_are_our_allreduce(gloo_results, world, hook):
    """DDP's averaged gradient = allreduce of the flattened bucket (parameters in registration
    order): pre-division by k, gloo's ring; with a hook, wire format float16/bfloat16."""
    d = gloo_results[world][0]["ddp"][hook]
    local, averaged = d["local"], d["averaged"]
    flat = np.stack([np.concatenate([p.ravel() for p in local[r]]) for r in range(world)])
    wire = {None: None, "fp16": "float16", "bf16": "bfloat16"}[hook]
    ours = parallel.allreduce(flat.astype(np.float32), **parallel.GLOO_RING, wire_format=wire)[0]
    np.testing.assert_array_equal(ours, np.concatenate([p.ravel() for p in averaged]))
    for rank in range(1, world):   # every replica got the same gradient
        for a, b in zip(gloo_results[world][rank]["ddp"][hook]["averaged"], averaged):
            np.testing.assert_array_equal(a, b)


def test_bf16_hook_refused_by_name_on_cpu(gloo_results):
    """torch refuses to register bf16_compress_hook without CUDA/NCCL >= 2.10 or XPU; the test
    runs the same function under another name (it works: gloo sums bfloat16)."""
    refused = gloo_results[2][0].get("bf16_hook_refused")
    assert refused is None or "BF16" in refused
