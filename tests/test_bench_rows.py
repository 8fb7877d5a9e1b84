"""make bench's rows (tests/bench/timed.py) run each library in a process of its own."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_row(spec: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.bench.timed", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("setup", ["loss_numpy", "loss_precision"])
def test_a_row_imports_only_the_library_it_times(setup):
    done = run_row(dict(setup=setup, n=8, c=5, fmt="float32", threads=1, calls=2, warmup=1))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0


def test_a_torch_row_runs_from_its_own_module():
    """torch's rows live in tests/bench/timed_torch.py, which only a torch row's process imports."""
    pytest.importorskip("torch")
    done = run_row(dict(setup="loss_torch", n=8, c=5, fmt="float32", threads=1, calls=2, warmup=1))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0


def test_a_row_that_imported_a_peer_it_does_not_time_is_refused():
    code = ("import sys, torch; sys.argv[1:] = []; from tests.bench import timed; "
            "timed.main(dict(setup='loss_numpy', n=8, c=5, fmt='float32', calls=1, warmup=0))")
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "imported torch" in done.stderr
