"""The study engine: cell identity, faithful storage, atomic files, resume after SIGKILL, determinism
across executors, failures, provenance, progress display and report helpers."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from precision.study import (FuturesExecutor, ProcessExecutor, SerialExecutor, Study, cell_id, grid,
                             load_results, run_study)
from precision.study import store as store_module
from precision.study.engine import git_state
from precision.study.progress import Progress, format_duration

REPOSITORY = Path(__file__).resolve().parents[1]

# The toy study lives in a real module file so that worker processes (spawn) and a killed subprocess
# can import its cell function by name. Each computation appends "<id> <pid>" to $TOY_LOG.
TOY_SOURCE = textwrap.dedent('''
    """Toy study: float16 / float32 summation, sequential vs pairwise, op by op with numpy scalars."""
    import math
    import os
    import time

    import numpy as np

    from precision.study import Study, cell_id


    def summed(values, summation):
        if summation == "sequential":
            total = values[0]
            for value in values[1:]:
                total = total + value  # numpy scalar op: rounded to the format after every addition
            return total
        if len(values) == 1:
            return values[0]
        half = len(values) // 2
        return summed(values[:half], summation) + summed(values[half:], summation)


    def run_cell(params):
        log = os.environ.get("TOY_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{cell_id(params)} {os.getpid()}\\n")
        if params.get("fail") and not os.environ.get("TOY_FIXED"):
            raise ZeroDivisionError("this cell fails on purpose")
        if params.get("crash") and not os.environ.get("TOY_FIXED"):
            os._exit(3)  # a worker dying (as a segfaulting kernel would)
        time.sleep(params.get("sleep", 0.0))
        dtype = np.dtype(params["format"])
        values = np.random.default_rng(params["seed"]).uniform(0, 2, params["n"]).astype(dtype)
        total = summed(list(values), params["summation"])
        exact = math.fsum(float(v) for v in values)
        with np.errstate(over="ignore"):
            overflowed = np.float16(70000.0)
        return {"sum": total, "exact": exact, "relative_error": abs(float(total) - exact) / exact,
                "partial_sums": np.cumsum(values.astype(np.float64)).astype(dtype),
                "overflow": overflowed, "nan": float("nan"), "minus_inf": -math.inf,
                "specials": np.array([1.0, np.inf, -np.inf, np.nan, -0.0, 0.0], dtype=dtype),
                "counts": np.arange(6, dtype=np.int32).reshape(2, 3), "flags": [True, False],
                "nested": {"tuple": (1, 2.5), "none": None}}


    def summarize(params, result):
        return {"relative_error": result["relative_error"], "sum": result["sum"],
                "is_nan": result["nan"]}


    def make(n_seeds=2, sleep=0.0, extra=(), version="1", report=None):
        cells = [{"format": f, "summation": s, "n": 64, "seed": k, "sleep": sleep}
                 for f in ("float16", "float32") for s in ("sequential", "pairwise")
                 for k in range(n_seeds)]
        cells += list(extra)
        return Study(name="toy", cells=cells, run_cell=run_cell, summarize=summarize,
                     report=report, version=version, metadata={"purpose": "tests"})


    def thread_limits(params):
        return {name: os.environ.get(name) for name in params["variables"]}


    def staggered(n_cells):
        # Later cells finish first: completion order is the reverse of grid order.
        cells = [{"format": "float16", "summation": "sequential", "n": 32, "seed": k,
                  "sleep": 0.02 * (n_cells - k)} for k in range(n_cells)]
        return Study(name="toy", cells=cells, run_cell=run_cell, summarize=summarize)
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy_module")
    (directory / "toy_engine_study.py").write_text(TOY_SOURCE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(directory))
        import toy_engine_study

        yield toy_engine_study
    sys.modules.pop("toy_engine_study", None)


@pytest.fixture
def log(tmp_path, monkeypatch):
    path = tmp_path / "computed.log"
    monkeypatch.setenv("TOY_LOG", str(path))
    monkeypatch.delenv("TOY_FIXED", raising=False)

    def computed() -> list[str]:
        return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []

    return computed


def raw_files(out: Path) -> dict[str, bytes]:
    """Every file compared for determinism: cell results, grid, summary."""
    files = {p.name: p.read_bytes() for p in (out / "raw" / "cells").glob("*.json")}
    files["grid.json"] = (out / "raw" / "grid.json").read_bytes()
    files["summary.csv"] = (out / "summary.csv").read_bytes()
    return files


# --------------------------------------------------------------------------------------------------
# identity and encoding

def test_cell_id_depends_only_on_the_parameters():
    a = {"problem": "linear", "format": "float16", "seed": 0, "lr": 0.1}
    b = {"lr": 0.1, "seed": 0, "format": "float16", "problem": "linear"}
    assert cell_id(a) == cell_id(b)
    assert cell_id(a) == cell_id({**a, "seed": np.int64(0), "lr": np.float64(0.1)})
    assert cell_id(a) != cell_id({**a, "seed": 1})
    assert cell_id(a) != cell_id({**a, "lr": 0.1000000001})
    assert cell_id(a).startswith("float16-0.1-linear-0-")
    assert len(cell_id({"x": "y" * 500})) < 80
    # file names never start with '-' (shell-safe); the hash tells the signs apart
    assert cell_id({"lr": -1e-8, "name": "a/b c"}).startswith("1e-08-a_b_c-")
    assert cell_id({"lr": -1e-8, "name": "a/b c"}) != cell_id({"lr": 1e-8, "name": "a/b c"})


@pytest.mark.parametrize("bad, error", [
    ({"lr": float("nan")}, ValueError), ({"lr": math.inf}, ValueError),
    ({"w": np.zeros(2)}, ValueError), ({1: "a"}, TypeError), ([("a", 1)], TypeError),
    ({"z": 1j}, TypeError), ({"__float__": 1}, ValueError),
])
def test_cell_params_must_be_plain_json(bad, error):
    with pytest.raises(error):
        cell_id(bad)


def test_grid_is_the_product_of_its_axes_in_order():
    cells = grid(format=["float16", "float32"], optimizer=["gd", "adam", "lbfgs"], seed=[0])
    assert len(cells) == 6
    assert cells[:2] == [{"format": "float16", "optimizer": "gd", "seed": 0},
                         {"format": "float16", "optimizer": "adam", "seed": 0}]
    assert cells[-1] == {"format": "float32", "optimizer": "lbfgs", "seed": 0}
    for bad in ([], "float16", 3):
        with pytest.raises(ValueError):
            grid(format=bad)


def test_study_validates_its_grid(toy):
    with pytest.raises(ValueError, match="empty grid"):
        Study(name="x", cells=[], run_cell=toy.run_cell)
    with pytest.raises(ValueError, match="same parameters"):
        Study(name="x", cells=[{"a": 1, "b": 2}, {"b": 2, "a": 1}], run_cell=toy.run_cell)
    with pytest.raises(TypeError):
        Study(name="x", cells=[{"a": 1}], run_cell="not a function")
    with pytest.raises(ValueError):
        Study(name=" ", cells=[{"a": 1}], run_cell=toy.run_cell)
    with pytest.raises(TypeError):
        Study(name="x", cells={"a": 1}, run_cell=toy.run_cell)


_float_dtypes = st.sampled_from([np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16),
                                 np.dtype(np.float32), np.dtype(np.float64)])


@st.composite
def float_arrays(draw):
    dtype = draw(_float_dtypes)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
    raw = draw(hnp.arrays(bits, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
    return raw.view(dtype)  # every bit pattern: subnormals, -0.0, inf, NaN


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.kind in "biu":
            assert np.array_equal(a, b)
        else:
            with np.errstate(invalid="ignore"):
                wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
            assert np.array_equal(wide_a, wide_b, equal_nan=True)
            assert np.array_equal(np.signbit(wide_a), np.signbit(wide_b)) or np.isnan(wide_a).any()
            numbers = ~np.isnan(wide_a)
            assert np.array_equal(np.signbit(wide_a[numbers]), np.signbit(wide_b[numbers]))
    elif isinstance(a, float):
        assert isinstance(b, float)
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


@given(array=float_arrays(), scalar=st.floats(allow_nan=True, allow_infinity=True),
       ints=hnp.arrays(np.int64, hnp.array_shapes(max_dims=2, max_side=4)),
       flags=hnp.arrays(np.bool_, hnp.array_shapes(max_dims=1, max_side=4)),
       text=st.text(max_size=8), inline_limit=st.sampled_from([store_module.INLINE_ARRAY_LIMIT, 0]))
def test_results_round_trip_faithfully(array, scalar, ints, flags, text, inline_limit):
    # inline_limit 0 sends every array through the base64 form that long traces use
    result = {"array": array, "scalar": scalar, "ints": ints, "flags": flags, "text": text,
              "nested": [{"x": scalar, "y": array}, None, True, 3]}
    text_form = store_module.dumps(store_module.encode(result, inline_limit=inline_limit))

    def no_constants(token):
        raise AssertionError(f"non-standard JSON token {token}")

    json.loads(text_form, parse_constant=no_constants)  # standard JSON: no NaN/Infinity tokens
    back = store_module.loads(text_form)
    assert_same(result, back)
    if inline_limit == 0:  # bytes are kept exactly, NaN payloads included
        assert back["array"].tobytes() == np.ascontiguousarray(array).tobytes()
    # canonical: re-encoding what was read gives the same bytes
    assert store_module.dumps(store_module.encode(back, inline_limit=inline_limit)) == text_form


def test_long_traces_are_stored_as_exact_bytes():
    trace = np.r_[np.geomspace(1, 1e-30, 3000), np.nan, np.inf, -0.0].astype(np.float32)
    strided = np.arange(2000, dtype=np.float16)[::2]
    big_endian = np.arange(300, dtype=">f8") / 7
    text = store_module.dumps(store_module.encode({"t": trace, "s": strided, "b": big_endian}))
    back = store_module.loads(text)
    assert back["t"].dtype == np.float32 and back["t"].tobytes() == trace.tobytes()
    assert np.array_equal(back["s"], strided) and back["s"].dtype == np.float16
    assert np.array_equal(back["b"], big_endian) and back["b"].dtype == np.float64
    assert len(text) < 4 * trace.nbytes  # base64, not 20 characters per number


def test_numpy_scalars_are_stored_as_python_values():
    result = {"h": np.float16(0.1), "b": ml_dtypes.bfloat16(3.0), "i": np.int8(-3), "t": np.bool_(True),
              "inf16": np.float16(np.inf)}
    back = store_module.loads(store_module.dumps(store_module.encode(result)))
    assert back == {"h": float(np.float16(0.1)), "b": 3.0, "i": -3, "t": True, "inf16": math.inf}
    assert type(back["h"]) is float and type(back["t"]) is bool


@pytest.mark.parametrize("bad", [{"c": 1j}, {"o": object()}, {"a": np.array(["x"])},
                                 {"a": np.zeros(2, complex)}, {3: 1}, {"x": {"__ndarray__": 1}}])
def test_unstorable_results_are_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        store_module.encode(bad)


# --------------------------------------------------------------------------------------------------
# atomic files

def test_write_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "cell.json"
    store_module.write_atomic(target, "old\n")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        store_module.write_atomic(target, "new content that never lands\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"]  # the temp file was removed


def test_leftover_temp_and_truncated_files_are_ignored(toy, log, tmp_path):
    reference = tmp_path / "reference"
    run_study(toy.make(), reference)
    expected = raw_files(reference)

    out = tmp_path / "out"
    run_study(toy.make(), out)
    cells = sorted((out / "raw" / "cells").glob("*.json"))
    truncated = cells[0]
    text = truncated.read_text()
    truncated.write_text(text[: len(text) // 2])  # as if a non-atomic writer had been killed
    temp = cells[1].with_name(f".{cells[1].name}.999.deadbeef.tmp")
    temp.write_text(cells[1].read_text()[:40])  # an interrupted atomic write
    before = len(log())

    with pytest.warns(UserWarning, match="recomputing 1 cell.*unreadable"):
        results = run_study(toy.make(), out)
    assert log()[before:] == [truncated.stem]  # only the truncated cell was recomputed
    assert not temp.exists()
    assert results.ok and len(results.results) == len(results.ids)
    assert raw_files(out) == expected


def test_another_running_study_holds_the_folder(toy, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    with open(out / "raw" / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another run"):
            run_study(toy.make(), out)


# --------------------------------------------------------------------------------------------------
# resume after a real SIGKILL

KILLED_RUN = textwrap.dedent('''
    import sys
    import toy_engine_study
    from precision.study import ProcessExecutor, SerialExecutor, run_study
    if __name__ == "__main__":  # spawned workers import this script: only the parent runs the study
        executor = SerialExecutor() if sys.argv[2] == "serial" else ProcessExecutor(jobs=2)
        run_study(toy_engine_study.make(n_seeds=3, sleep=0.15), sys.argv[1], executor=executor)
''')


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_resume_after_sigkill_recomputes_nothing_finished(toy, log, tmp_path, executor):
    reference = tmp_path / "reference"
    with cf.ThreadPoolExecutor(max_workers=12) as pool:  # uninterrupted run of the same grid
        run_study(toy.make(n_seeds=3, sleep=0.15), reference, executor=pool)
    out = tmp_path / "out"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(toy.__file__).parent),
                                                         str(REPOSITORY)])}
    process = subprocess.Popen([sys.executable, str(script), str(out), executor], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    cells_dir = out / "raw" / "cells"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if cells_dir.is_dir() and len(list(cells_dir.glob("*.json"))) >= 4:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its worker processes, mid-way
        process.wait()
        process.stderr.close()

    finished_before = {p.stem: p.read_bytes() for p in cells_dir.glob("*.json")}
    n_cells = len(toy.make(n_seeds=3, sleep=0.15).cells)
    assert 4 <= len(finished_before) < n_cells
    computed_before = len(log())

    results = run_study(toy.make(n_seeds=3, sleep=0.15), out)
    recomputed = log()[computed_before:]
    assert not set(recomputed) & set(finished_before)  # nothing finished is computed again
    assert sorted(results.reused) == sorted(finished_before)
    assert sorted(results.computed) == sorted(set(results.ids) - set(finished_before))
    assert results.ok and len(results.results) == n_cells
    for cid, content in finished_before.items():
        assert (cells_dir / f"{cid}.json").read_bytes() == content
    assert raw_files(out) == raw_files(reference)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["status"] == "finished"
    assert provenance["earlier_runs"][0]["status"] == "did not finish (killed)"
    assert provenance["cells"]["reused"] == len(finished_before)


# --------------------------------------------------------------------------------------------------
# determinism

def test_identical_files_whatever_the_executor_and_completion_order(toy, tmp_path):
    serial, processes, threads, again = (tmp_path / name for name in ("serial", "processes", "threads",
                                                                        "again"))
    run_study(toy.staggered(6), serial, executor=SerialExecutor())
    run_study(toy.staggered(6), processes, executor=ProcessExecutor(jobs=2))
    with cf.ThreadPoolExecutor(max_workers=6) as pool:
        threaded = run_study(toy.staggered(6), threads, executor=pool)
    run_study(toy.staggered(6), again)
    assert raw_files(serial) == raw_files(processes) == raw_files(threads) == raw_files(again)
    # the threads really finished out of grid order, and the results are in grid order anyway
    assert threaded.computed != threaded.ids and list(threaded.results) == threaded.ids
    summary = (serial / "summary.csv").read_text().splitlines()
    assert [line.split(",")[3] for line in summary[1:]] == [str(k) for k in range(6)]


class EagerFuture:
    """A future type that is not concurrent.futures.Future (as dask's Client.submit returns)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class SubmitOnly:
    def submit(self, fn, item):
        return EagerFuture(fn(item))


class MapOnly:
    def map(self, fn, items):
        return map(fn, items)


@pytest.mark.parametrize("executor", [SubmitOnly(), MapOnly()], ids=["other-futures", "map-only"])
def test_other_executor_shapes_give_the_same_files(toy, tmp_path, executor):
    run_study(toy.staggered(3), tmp_path / "serial")
    run_study(toy.staggered(3), tmp_path / "other", executor=executor)
    assert raw_files(tmp_path / "serial") == raw_files(tmp_path / "other")
    with pytest.raises(TypeError):
        FuturesExecutor(object())


def test_no_resume_recomputes_everything(toy, log, tmp_path):
    run_study(toy.make(), tmp_path)
    first = raw_files(tmp_path)
    n = len(log())
    results = run_study(toy.make(), tmp_path, resume=False)
    assert len(log()) == 2 * n and results.reused == [] and len(results.computed) == n
    assert raw_files(tmp_path) == first


def test_a_new_study_version_invalidates_old_results(toy, log, tmp_path):
    run_study(toy.make(version="1"), tmp_path)
    n = len(log())
    with pytest.warns(UserWarning, match="version"):
        results = run_study(toy.make(version="2"), tmp_path)
    assert len(results.computed) == n and len(log()) == 2 * n


# --------------------------------------------------------------------------------------------------
# failures

def test_a_failing_cell_is_recorded_and_the_others_finish(toy, log, tmp_path, monkeypatch):
    bad = {"format": "float16", "summation": "sequential", "n": 8, "seed": 0, "fail": True}
    study = toy.make(extra=[bad])
    results = run_study(study, tmp_path)
    bad_id = cell_id(bad)
    assert list(results.failures) == [bad_id] and not results.ok
    assert len(results.results) == len(study.cells) - 1
    record = json.loads((tmp_path / "raw" / "failures" / f"{bad_id}.json").read_text())
    assert record["type"] == "ZeroDivisionError" and record["stage"] == "run_cell"
    assert record["params"] == bad and "fails on purpose" in record["traceback"]
    rows = {row["cell_id"]: row for row in results.rows}
    assert rows[bad_id]["status"] == "failed" and "relative_error" not in rows[bad_id]
    assert (tmp_path / "summary.csv").read_text().count(",failed,") == 1

    monkeypatch.setenv("TOY_FIXED", "1")  # the bug is fixed: a resumed run retries only that cell
    n = len(log())
    results = run_study(study, tmp_path)
    assert log()[n:] == [bad_id] and results.ok
    assert not (tmp_path / "raw" / "failures" / f"{bad_id}.json").exists()


def test_a_dying_worker_fails_the_unfinished_cells_and_resume_completes(toy, tmp_path, monkeypatch):
    crash = {"format": "float16", "summation": "sequential", "n": 8, "seed": 0, "crash": True}
    study = toy.make(extra=[crash])
    results = run_study(study, tmp_path, executor=ProcessExecutor(jobs=2))
    assert not results.ok and cell_id(crash) in results.failures
    assert {f["stage"] for f in results.failures.values()} == {"executor"}
    assert len(results.results) + len(results.failures) == len(study.cells)
    monkeypatch.setenv("TOY_FIXED", "1")
    results = run_study(study, tmp_path, executor=ProcessExecutor(jobs=2))
    assert results.ok and len(results.results) == len(study.cells)


def test_worker_processes_start_with_one_thread_each(toy, tmp_path, monkeypatch):
    from precision.study.executors import THREAD_LIMIT_VARIABLES

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    study = Study(name="env", cells=[{"variables": list(THREAD_LIMIT_VARIABLES), "k": k} for k in range(2)],
                  run_cell=toy.thread_limits)
    results = run_study(study, tmp_path, executor=ProcessExecutor(jobs=2))
    assert all(set(r.values()) == {"1"} for _, r in results)
    assert os.environ["OMP_NUM_THREADS"] == "7"  # the parent's environment is left as it was
    with pytest.raises(ValueError, match="never 'fork'"):
        ProcessExecutor(jobs=2, start_method="fork")
    with pytest.raises(ValueError):
        ProcessExecutor(jobs=0)


def test_unpicklable_cell_function_is_a_usage_error(tmp_path):
    study = Study(name="x", cells=[{"a": 1}], run_cell=lambda params: {"a": params["a"]})
    with pytest.raises(TypeError, match="top-level function"):
        run_study(study, tmp_path, executor=ProcessExecutor(jobs=2))
    assert run_study(study, tmp_path / "serial").results  # serially a lambda is fine


def test_summarize_and_report_failures_are_recorded(toy, tmp_path):
    def clashing(params, result):
        return {"seed": 1}

    def broken_report(results, out_dir):
        raise RuntimeError("no plot today")

    study = Study(name="x", cells=[{"format": "float16", "summation": "pairwise", "n": 4, "seed": 0}],
                  run_cell=toy.run_cell, summarize=clashing, report=broken_report)
    results = run_study(study, tmp_path)
    (failure,) = results.failures.values()
    assert failure["stage"] == "summarize" and "seed" in failure["message"]
    assert "no plot today" in results.report_error and not results.ok
    assert len(results.results) == 1  # the raw result is kept


# --------------------------------------------------------------------------------------------------
# results, report hook, provenance

def test_results_come_back_in_grid_order_with_their_types(toy, tmp_path):
    seen = {}

    def report(results, out_dir):
        seen["n"] = len(results)
        (out_dir / "report.md").write_text("# toy\n")

    study = toy.make(report=report)
    results = run_study(study, tmp_path, executor=FuturesExecutor(cf.ThreadPoolExecutor(4)))
    assert seen["n"] == len(study.cells) and (tmp_path / "report.md").exists()
    loaded = load_results(tmp_path)
    assert loaded.ids == list(study.ids) == list(results.results) == list(loaded.results)
    for (p, r), (q, s) in zip(results, loaded):
        assert p == q
        assert_same(r, s)
    _, first = next(iter(loaded))
    assert first["partial_sums"].dtype == np.float16 and first["counts"].shape == (2, 3)
    assert math.isnan(first["nan"]) and first["minus_inf"] == -math.inf and first["overflow"] == math.inf
    assert first["nested"] == {"tuple": [1, 2.5], "none": None}
    chosen = loaded.select(format="float32", summation=["pairwise"])
    assert len(chosen) == 2 and all(p["format"] == "float32" for p, _ in chosen)
    assert [row["seed"] for row in loaded.rows][:2] == ["0", "1"]
    assert "nan" in (tmp_path / "summary.csv").read_text().splitlines()[1].split(",")


def test_provenance_records_where_the_numbers_come_from(toy, tmp_path):
    from precision.study.plots import markdown_provenance

    paragraphs = []
    study = toy.make(report=lambda results, out_dir: paragraphs.append(markdown_provenance(out_dir)))
    run_study(study, tmp_path, command=["precision", "study", "toy"])
    assert "8 cells, formats float16, float32, seeds 0, 1" in paragraphs[0]
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["study"] == "toy" and provenance["grid_size"] == 8
    assert provenance["formats"] == ["float16", "float32"] and provenance["seeds"] == [0, 1]
    assert provenance["metadata"] == {"purpose": "tests"}
    assert provenance["command"] == ["precision", "study", "toy"]
    assert provenance["status"] == "finished" and provenance["started"] <= provenance["finished"]
    assert provenance["cells"] == {**provenance["cells"], "computed": 8, "reused": 0, "failed": 0}
    assert provenance["platform"]["numpy"] == np.__version__
    assert provenance["platform"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert provenance["package_version"]
    head = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--verify", "HEAD"],
                          capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert provenance["git"]["commit"] == expected == git_state()["commit"]
    # no times or machine facts in the files compared for determinism
    cell = json.loads(next((tmp_path / "raw" / "cells").glob("*.json")).read_text())
    assert set(cell) == {"id", "params", "result", "study", "version", "sha256"}


def test_git_state_of_a_checkout(tmp_path, monkeypatch):
    from precision.study import engine

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    monkeypatch.setattr(engine, "_REPOSITORY", tmp_path)
    git("init", "-q")
    assert git_state() == {"commit": "unknown", "dirty": None, "changed": []}  # no commit yet
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.csv").write_text("a\n")
    git("add", "code.py", "results/summary.csv")
    git("commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "untracked.py").write_text("")
    assert git_state() == {"commit": head, "dirty": False, "changed": []}
    (tmp_path / "results" / "summary.csv").write_text("b\n")  # a rerun rewrote committed results
    assert git_state(exclude=tmp_path / "results")["dirty"] is False
    assert git_state()["changed"] == ["results/summary.csv"]
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(exclude=tmp_path / "results") == {"commit": head, "dirty": True,
                                                        "changed": ["code.py"]}


# --------------------------------------------------------------------------------------------------
# progress display

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_with_eta():
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress("toy", stream, clock=clock, interval=1e9)
    progress.start(total=20, reused=10)
    for _ in range(6):
        clock.now += 2.0
        progress.advance(ok=True)
    lines = stream.getvalue().splitlines()
    # one line at the start, then one per tenth of the grid (every 2 cells here)
    assert len(lines) == 4
    assert lines[0] == "[toy] 10/20 cells (10 from an earlier run), 0:00:00 elapsed"
    assert lines[-1] == "[toy] 16/20 cells (10 from an earlier run), 0:00:12 elapsed, ETA 0:00:08"
    clock.now += 1.0
    progress.advance(ok=False)
    assert "1 failed" in progress.line()


def test_progress_on_a_terminal_rewrites_one_line():
    stream, clock = FakeTerminal(), FakeClock()
    progress = Progress("toy", stream, clock=clock, refresh=0)
    progress.start(total=2)
    clock.now = 3.0
    progress.advance(ok=True)
    progress.advance(ok=True)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("elapsed\x1b[K\n")


def test_progress_on_a_terminal_ticks_during_long_cells():
    stream = FakeTerminal()
    progress = Progress("toy", stream, refresh=0.005)
    progress.start(total=3)
    time.sleep(0.1)
    progress.advance(ok=True)
    progress.finish()
    written = stream.getvalue()
    assert written.count("\r") >= 4 and written.endswith("\n")  # refreshed while no cell finished
    time.sleep(0.02)
    assert stream.getvalue() == written  # nothing after finish()


def test_progress_disabled_writes_nothing():
    stream = io.StringIO()
    progress = Progress("toy", stream, enabled=False)
    progress.start(total=1)
    progress.advance(ok=True)
    progress.finish()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(0, "0:00:00"), (59.6, "0:01:00"), (3723, "1:02:03"),
                                           (-5, "0:00:00")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --------------------------------------------------------------------------------------------------
# report helpers

def test_plots_and_tables(tmp_path):
    from precision.study.plots import format_number, markdown_table, plot_comparison, plot_panels, \
        text_table

    excess = np.maximum(0.5 ** np.arange(60), 1e-9)
    excess[50:] = 0.0
    panels = {"float16": {"gd": excess, "adam": np.r_[excess[:10], np.full(50, np.nan)]},
              "float32": {"gd": (np.arange(60) + 1, excess + 1e-12)}}
    path = plot_panels(tmp_path / "a" / "excess.png", panels, ylabel="excess",
                       reference_lines={"float16": {"u^2": 2.0 ** -22}})
    again = plot_panels(tmp_path / "again.png", panels, ylabel="excess",
                        reference_lines={"float16": {"u^2": 2.0 ** -22}})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == again.read_bytes()
    plot_comparison(tmp_path / "ratio.png", {"gd": [(1e-8, 2e-8), (1e-6, 0.0)]})
    assert (tmp_path / "ratio.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_panels(tmp_path / "none.png", {})
    shared = plot_panels(tmp_path / "shared.png", panels, title="t", legend_location="figure")
    assert shared.stat().st_size > 1000

    rows = [{"format": "float16", "floor": 1.234567e-8, "n": 12, "note": None},
            {"format": "bfloat16", "floor": float("nan"), "n": 3, "note": "a|b"}]
    assert markdown_table(rows).splitlines() == [
        "| format | floor | n | note |", "|---|---:|---:|---|",
        "| float16 | 1.23e-08 | 12 |  |", "| bfloat16 | nan | 3 | a\\|b |"]
    assert text_table(rows, ["format", "n"]).splitlines() == [
        "format     n", "--------  --", "float16   12", "bfloat16   3"]
    assert [format_number(v) for v in (0.0, -math.inf, "2.50", "x", True, 7)] == \
        ["0", "-inf", "2.5", "x", "True", "7"]


def test_log_axis_ticks_are_labelled_plainly():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from precision.study.plots import _log_axis, _log_power_label

    assert [_log_power_label(v) for v in (1e-8, 1.0, 1e3, 2e-8, 0.0, -1.0, float("inf"))] == \
        ["1e-8", "1e0", "1e3", "", "", "", ""]
    figure = Figure()
    FigureCanvasAgg(figure)
    wide, narrow = figure.subplots(1, 2)
    wide.plot([0, 1], [1e-30, 1.0])
    narrow.plot([0, 1], [2.0, 200.0])
    _log_axis(wide, "y")
    _log_axis(narrow, "y")
    figure.canvas.draw()
    wide_labels = [t.get_text() for t in wide.get_yticklabels() if t.get_text()]
    narrow_labels = [t.get_text() for t in narrow.get_yticklabels() if t.get_text()]
    assert wide_labels and all(label.startswith("1e") for label in wide_labels)
    assert 3 <= len(wide_labels) <= 10                      # thinned over 30 decades
    assert {"2", "5", "10", "20", "50", "100", "200"} <= set(narrow_labels)
    assert not wide.yaxis.get_minor_locator()()            # no minor ticks
