"""The shared argument checks (precision._checks): thread counts, fork safety, out= overlap,
scalars; and the package surface (issue #17 items 1, 2 and 7, issue #10 part 3)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import precision as pr
from precision import _checks, losses
from precision.linalg import matmul

ROOT = Path(__file__).resolve().parents[1]
X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
T = np.full((3, 4), 0.25, np.float32)

THREADED = {
    "logsumexp": lambda n: losses.logsumexp(X, num_threads=n),
    "softmax": lambda n: losses.softmax(X, num_threads=n),
    "log_softmax": lambda n: losses.log_softmax(X, num_threads=n),
    "softmax_cross_entropy": lambda n: losses.softmax_cross_entropy(X, T, num_threads=n),
    "cross_entropy with out": lambda n: losses.softmax_cross_entropy(
        X, T, num_threads=n, out=np.empty((), np.float32)),
    "kl_divergence": lambda n: losses.kl_divergence(T, X, num_threads=n),
    "entropy": lambda n: losses.entropy(T, num_threads=n),
    "matmul": lambda n: matmul(X, X.T.copy(), num_threads=n),
}


def run_python(code: str, timeout: float = 120):
    """Run code in a fresh interpreter on this checkout; a hang is a failure, not a hung suite."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the subprocess did not finish within {timeout} s")


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("name", sorted(THREADED))
@pytest.mark.parametrize("bad", [0, -1, _checks.MAX_THREADS + 1, 65536, 2 ** 31, 10 ** 30])
def test_thread_counts_outside_1_to_256_are_refused_before_openmp(name, bad):
    """65536 threads segfaulted in OpenMP, 2**31 leaked OverflowError from Cython."""
    with pytest.raises(ValueError, match=r"num_threads must be >= 1 and <= 256"):
        THREADED[name](bad)


@pytest.mark.parametrize("name", sorted(THREADED))
@pytest.mark.parametrize("bad", [1.5, "2", True, np.float64(2)])
def test_thread_counts_that_are_not_integers_are_refused(name, bad):
    with pytest.raises(TypeError, match="num_threads must be an int or None"):
        THREADED[name](bad)


@pytest.mark.parametrize("name", sorted(THREADED))
def test_results_do_not_depend_on_the_thread_count(name):
    one = np.asarray(THREADED[name](1))
    for n in (2, 3, np.int64(5), None):
        assert np.array_equal(np.asarray(THREADED[name](n)), one)


def test_the_default_is_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _checks.available_cpus() == min(allowed, _checks.MAX_THREADS)
    assert _checks.threads(None, work=10, parallel_min_work=100) == 1
    assert _checks.threads(None, work=1000, parallel_min_work=100) == _checks.available_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _checks.available_cpus() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    assert _checks.available_cpus() == min(allowed, _checks.MAX_THREADS)


def test_scalars_beyond_float64_are_value_errors_not_overflow_errors():
    with pytest.raises(ValueError, match="beyond float64"):
        _checks.check_real("lr", 10 ** 400)
    with pytest.raises(ValueError, match="finite"):
        _checks.check_real("lr", float("inf"))
    with pytest.raises(TypeError, match="real number"):
        _checks.check_real("lr", "1e-3")
    assert _checks.check_real("lr", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match="label_smoothing.*beyond float64"):
        losses.softmax_cross_entropy(X, T, label_smoothing=10 ** 400)


# ------------------------------------------------------------------------------ fork
def test_a_forked_child_does_not_hang_and_gets_the_same_bits():
    """libgomp's thread pool does not survive fork(): the child's first parallel region waited
    forever.  In a forked child every kernel now runs on one thread (same bits)."""
    result = run_python("""
        import os, sys, time, signal
        import numpy as np
        import precision as pr
        from precision.linalg import matmul
        rng = np.random.default_rng(0)
        x = rng.standard_normal((512, 300)).astype(np.float32)
        t = np.full_like(x, 1 / 300)
        p0 = rng.standard_normal(1 << 17).astype(np.float32)
        g = rng.standard_normal(1 << 17).astype(np.float32)
        w = rng.standard_normal((8, 1 << 15)).astype(np.float32)

        def every_kernel():
            p = p0.copy()
            pr.optim.Adam(num_threads=2).step(p, g)
            return (pr.softmax(x, num_threads=2), pr.softmax_cross_entropy(x, t, num_threads=2),
                    matmul(x[:200], x[:200].T.copy(), num_threads=2), p,
                    pr.stats.moments(x, axis=0, num_threads=2)[1],
                    pr.parallel.allreduce(w, num_threads=2))

        ref = every_kernel()
        pid = os.fork()
        if pid == 0:
            from precision import _checks
            got = every_kernel()
            same = all(np.array_equal(a, b) for a, b in zip(got, ref))
            os._exit(0 if same and _checks.in_forked_child() else 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                sys.exit(os.waitstatus_to_exitcode(status))
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("the forked child hung")
        sys.exit(3)
    """)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parent_keeps_its_threads():
    assert not _checks.in_forked_child()
    assert _checks.threads(3, work=1, parallel_min_work=100) == 3


# ------------------------------------------------------------------------------ out=
def test_overlap_is_exact_not_a_bounds_guess():
    """Interleaved columns of one buffer do not overlap: matmul (which takes any strides)
    writes one while reading the other; a real overlap is refused."""
    buf = np.zeros((3, 8))
    buf[:, 1::2] = np.arange(12).reshape(3, 4)
    a = buf[:, 1::2]
    out = buf[:3, 0:6:2]
    b = np.eye(4)[:, :3].copy()
    assert matmul(a, b, out=out) is out
    assert np.array_equal(out, np.arange(12).reshape(3, 4)[:, :3])
    with pytest.raises(ValueError, match="out overlaps a"):
        matmul(a, b, out=buf[:, 1:7:2])
    assert not _checks.overlaps(a, out) and _checks.overlaps(a, buf)



def test_every_out_argument_goes_through_the_one_check():
    """stats, batch norm and all-reduce use _checks.check_out: a partial overlap is refused
    everywhere (in place is allowed for the all-reduce only, whose kernel is elementwise),
    stats accepts any strides (numpy assigns its results), batch norm needs C order."""
    from precision import batchnorm, parallel, stats

    g = np.arange(24, dtype=np.float32).reshape(4, 6)
    want = parallel.allreduce(g)
    h = g.copy()
    assert parallel.allreduce(h, out=h) is h and np.array_equal(h, want)
    buf = np.zeros(30, dtype=np.float32)
    buf[:24] = g.ravel()
    shifted = buf[1:25].reshape(4, 6)
    before = buf.copy()
    with pytest.raises(ValueError, match="out overlaps grads without being it"):
        parallel.allreduce(buf[:24].reshape(4, 6), out=shifted)
    assert np.array_equal(buf, before)                    # nothing written

    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    strided = np.zeros(12, dtype=np.float32)[::2]         # every other element
    assert not strided.flags.c_contiguous
    assert stats.mean(x, axis=0, out=strided) is strided
    assert np.array_equal(strided, stats.mean(x, axis=0))
    with pytest.raises(ValueError, match="out overlaps x"):
        stats.sum(x, axis=1, out=x[:, 0])
    with pytest.raises(ValueError, match="C-contiguous"):
        batchnorm.batch_norm(x, out=np.zeros((6, 8), dtype=np.float32).T)
    with pytest.raises(ValueError, match="out overlaps x"):
        batchnorm.batch_norm(x, out=x)


def test_in_place_is_exactly_the_same_elements():
    a = np.zeros(10)
    assert _checks.check_out(a, "out", (10,), a.dtype, [("a", a)], in_place=True) is a
    assert _checks.check_out(a, "out", (10,), a.dtype, [("a", a[:])], in_place=True) is a
    with pytest.raises(ValueError, match="overlaps"):
        _checks.check_out(a[:5], "out", (5,), a.dtype, [("a", a[1:6])],
                          in_place=True)
    with pytest.raises(ValueError, match="overlaps"):      # without in_place, even itself
        _checks.check_out(a, "out", (10,), a.dtype, [("a", a)])


# ------------------------------------------------------------------------------ the package
def test_star_import_works_and_offers_only_modules_that_exist():
    result = run_python("""
        from precision import *
        import precision
        import importlib.util
        for name in precision.__all__:
            assert name in globals(), name
        for name in ("exact", "errors", "linalg", "losses", "optim", "stats", "study"):
            present = importlib.util.find_spec("precision." + name) is not None
            assert (name in precision.__all__) == present, name
        assert linalg.matmul is precision.linalg.matmul
    """)
    assert result.returncode == 0, result.stdout + result.stderr


def test_linalg_is_an_attribute():
    assert pr.linalg.matmul is matmul
    assert "linalg" in dir(pr)


# ------------------------------------------------------------------------------ docs are true
@pytest.mark.parametrize("fmt", pr.FORMATS, ids=lambda f: f.name)
def test_a_single_plus_inf_logit_gives_the_documented_gradient(fmt):
    """Docstring: one +inf logit x_k gives s = 0, D = 1, so g_k = Tk = T - t_k and g_j = -t_j
    (the limit as x_k -> +inf), while p_k, log_softmax_k and the loss (t_k > 0) are NaN."""
    x = fmt.round(np.array([[0.0, np.inf, -1.0, -np.inf]]))
    t = fmt.round(np.array([[0.25, 0.5, 0.25, 0.0]]))
    with np.errstate(all="ignore"):
        loss, grad = losses.softmax_cross_entropy(x, t, reduction="sum", return_grad=True)
        p = losses.softmax(x)
    assert np.array_equal(grad.astype(np.float64), [[-0.25, 0.5, -0.25, 0.0]])
    assert np.isnan(p[0, 1]) and np.isnan(float(loss))
    # t_k = 0: the loss is +inf (another target is positive), the gradient still the limit
    t0 = fmt.round(np.array([[0.5, 0.0, 0.5, 0.0]]))
    with np.errstate(all="ignore"):
        loss, grad = losses.softmax_cross_entropy(x, t0, reduction="sum", return_grad=True)
    assert np.isposinf(float(loss))
    assert np.array_equal(grad.astype(np.float64), [[-0.5, 1.0, -0.5, 0.0]])


# ------------------------------------------------------------------------------ ISA cap
def test_precision_isa_caps_the_build_the_loader_picks():
    """PRECISION_ISA=v3 measures the AVX2 build on an AVX-512 CPU, baseline the SSE2 one; a
    value that names no build is an error at import, not a silent fallback."""
    import importlib.util

    import precision._kernels as k

    # the subprocesses import the package this process imported (the sanitizer's copy under
    # `make sanitize`, which has baseline builds only)
    home = str(Path(k.__file__).resolve().parents[2])
    has_v3 = importlib.util.find_spec("precision._kernels.losses__v3") is not None
    code = "import precision._kernels as k; print(k.load('losses').__name__)"
    for cap, suffix in (("baseline", ""), ("v3", "__v3" if k.uses_v3 and has_v3 else "")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home,
                              env={**os.environ, "PRECISION_ISA": cap, "PYTHONPATH": home}, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"precision._kernels.losses{suffix}"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=home,
                         env={**os.environ, "PRECISION_ISA": "avx9000", "PYTHONPATH": home}, timeout=120)
    assert bad.returncode != 0 and "PRECISION_ISA must be" in bad.stderr


# ------------------------------------------------------------------------------ prange privacy
def test_every_local_a_prange_body_writes_through_a_pointer_is_private():
    """Cython makes a variable private to each OpenMP thread only if the prange body assigns it;
    one written only through its address (``f(row, C, &k)``) stays shared between the threads: a
    data race (the optimised builds hid it, `make sanitize`'s -O1 build showed rows of softmax
    changing from run to run).  Every ``&name`` of a plain local in a prange body of the rendered
    kernels must also be assigned in that body."""
    import re

    offenders = []
    rendered = sorted((ROOT / "kernels").glob("*.pyx"))      # setup.py renders them at build time
    assert rendered, "no rendered kernels/*.pyx: build first"
    for pyx in rendered:
        lines = pyx.read_text().splitlines()
        for i, line in enumerate(lines):
            if "prange(" not in line or not line.lstrip().startswith("for "):
                continue
            indent = len(line) - len(line.lstrip())
            body = []
            for later in lines[i + 1:]:
                if later.strip() and len(later) - len(later.lstrip()) <= indent:
                    break
                body.append(later)
            text = "\n".join(body)
            for name in set(re.findall(r"&([A-Za-z_]\w*)\b(?!\s*[\[(])", text)):
                if not re.search(rf"^\s*{name}\s*=[^=]", text, re.M):
                    offenders.append(f"{pyx.name}:{i + 1}: &{name}")
    assert not offenders, offenders
